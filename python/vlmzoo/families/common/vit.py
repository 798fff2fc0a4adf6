"""The weight names of transformers' CLIP / SigLIP vision tower (CLIPVisionTransformer, SiglipVisionTransformer,
relative to `vision_model.`) <-> vlmzoo's vision kind "vit", both ways. Shared by LLaVA and the dual encoders
(whose text towers are the same encoder layers)."""
from __future__ import annotations

from vlmzoo.families.common.keys import KeyTable

VIT_EMBEDDING_KEYS = KeyTable([
    ("embeddings.class_embedding", "class_embed"),
    ("embeddings.patch_embedding.{wb}", "patch_embed.{wb}"),
    ("embeddings.position_embedding.weight", "position_embed.weight"),
    ("pre_layrnorm.{wb}", "pre_norm.{wb}"),
    ("post_layernorm.{wb}", "post_norm.{wb}"),
])
# CLIPEncoderLayer / SiglipEncoderLayer: the vision tower's and the text tower's.
ENCODER_LAYER_KEYS = KeyTable([
    ("encoder.layers.{i}.layer_norm{n}.{wb}", "layers.{i}.norm{n}.{wb}"),
    ("encoder.layers.{i}.self_attn.{qkv}_proj.{wb}", "layers.{i}.attn.{qkv}_proj.{wb}"),
    ("encoder.layers.{i}.self_attn.out_proj.{wb}", "layers.{i}.attn.o_proj.{wb}"),
    ("encoder.layers.{i}.mlp.{fc}.{wb}", "layers.{i}.mlp.{fc}.{wb}"),
])
VIT_KEYS = VIT_EMBEDDING_KEYS + ENCODER_LAYER_KEYS
VIT_RULES = VIT_KEYS  # the name the converters used before the tables were two-way
