"""The BLIP-2 presets: the full ones have exactly the parameters of transformers' models built from the
published checkpoints' config.json (on the meta device: nothing is allocated or downloaded); the tiny
ones build, fit the built-in tasks' tokenizer and run."""
from __future__ import annotations

import pytest
import torch

import vlmzoo

transformers = pytest.importorskip("transformers")

# Salesforce/blip2-opt-2.7b config.json (the revision with image_token_index, saved by transformers 4.47;
# values as a public model-notes repository printed the published file):
# vision_config and qformer_config carry no sizes there, so transformers' Blip2VisionConfig /
# Blip2QFormerConfig defaults apply (they are this checkpoint's: 1408 x 39 layers ViT, 768 x 12
# layers Q-Former); num_query_tokens 32 and image_token_index 50265 are written out. Its text_config
# (written out there) is OPT-2.7b with the embeddings resized to 50304 rows for the <image> token;
# the remaining OPTConfig fields (max_position_embeddings 2048, tie_word_embeddings true, bos 2,
# pad 1) are OPTConfig's defaults, which opt-2.7b shares.
BLIP2_OPT_2_7B = dict(
    num_query_tokens=32, image_token_index=50265, vision_config={}, qformer_config={},
    text_config=dict(model_type="opt", vocab_size=50304, hidden_size=2560, ffn_dim=10240, num_hidden_layers=32,
                     num_attention_heads=32, word_embed_proj_dim=2560, eos_token_id=50118),
)
# Salesforce/instructblip-vicuna-7b config.json (not downloadable here; its values as a public audit of the
# InstructBLIP family recorded them from the published file): vision_config carries no sizes, so the
# InstructBlipVisionConfig defaults apply (the same EVA ViT-g as BLIP-2); qformer_config.vocab_size 30523
# (BERT's 30522 plus the [DEC] token) with the other InstructBlipQFormerConfig defaults; num_query_tokens
# 32, image_token_index 32001; text_config Vicuna-7B (Llama): vocab_size 32064 (32000 + [PAD] + <image>,
# padded to a multiple of 64), hidden 4096, 32 layers and heads, intermediate 11008, 2048 positions,
# untied head. rms_norm_eps and the special ids (Vicuna's) do not change the count.
INSTRUCTBLIP_VICUNA_7B = dict(
    num_query_tokens=32, image_token_index=32001, vision_config={}, qformer_config=dict(vocab_size=30523),
    text_config=dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                     num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                     max_position_embeddings=2048, rms_norm_eps=1e-6, tie_word_embeddings=False,
                     bos_token_id=1, eos_token_id=2, pad_token_id=0),
)


def key_bias_third(config) -> int:
    """transformers 5.x holds the ViT's attention bias as one fused qkv.bias [3 x hidden] whose key third
    is a constant zero (softmax ignores a key bias); vision kind eva_vit holds the q and v biases only,
    as the original checkpoints and transformers 4.x (q_bias, v_bias parameters) do. The counts below
    are therefore 5.x's minus that third: transformers 4.x's count exactly."""
    return config.vision_config.num_hidden_layers * config.vision_config.hidden_size


def transformers_parameters(model_class, config_class, fields) -> int:
    with torch.device("meta"):
        model = model_class(config_class(**fields))
    return sum(p.numel() for p in model.parameters()) - key_bias_third(model.config)


def test_blip2_opt_2_7b_preset_has_transformers_parameter_count():
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    expected = transformers_parameters(Blip2ForConditionalGeneration, Blip2Config, BLIP2_OPT_2_7B)
    model = vlmzoo.Model("blip2-opt-2.7b", device="meta")
    assert model.num_parameters() == expected == 3_744_761_856 - 39 * 1408
    assert model.visual_tokens_per_image == 32
    assert model.config["llm"]["kind"] == "opt" and model.image_token_id == 50265


def test_instructblip_vicuna_7b_preset_has_transformers_parameter_count():
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    expected = transformers_parameters(InstructBlipForConditionalGeneration, InstructBlipConfig,
                                       INSTRUCTBLIP_VICUNA_7B)
    model = vlmzoo.Model("instructblip-vicuna-7b", device="meta")
    assert model.num_parameters() == expected == 7_913_726_720 - 39 * 1408
    assert model.config["abstractor"]["instruction"] and model.image_token_id == 32001


def test_full_presets_match_slot_by_slot():
    # Per slot, so a mismatch says where: vision = vision_model, abstractor = query_tokens + qformer
    # + language_projection, llm = language_model.
    from transformers import Blip2Config, Blip2ForConditionalGeneration

    with torch.device("meta"):
        reference = Blip2ForConditionalGeneration(Blip2Config(**BLIP2_OPT_2_7B))
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    expected = {"vision": count(reference.vision_model) - key_bias_third(reference.config),
                "abstractor": reference.query_tokens.numel() + count(reference.qformer)
                + count(reference.language_projection),
                "llm": count(reference.language_model)}
    model = vlmzoo.Model("blip2-opt-2.7b", device="meta")
    assert {slot: model.num_parameters(slot) for slot in expected} == expected


@pytest.mark.parametrize("name", ["blip2-opt-tiny", "instructblip-tiny"])
def test_tiny_presets_speak_the_task_tokenizer_and_run(name):
    from vlmzoo.data import WordTokenizer

    config = vlmzoo.resolve_config(name)
    tokenizer = WordTokenizer([])
    assert config["fusion"]["image_token_id"] == tokenizer.image_id
    assert (config["llm"]["bos_token_id"], config["llm"]["eos_token_id"], config["llm"]["pad_token_id"]) == (
        tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id)
    model = vlmzoo.build(name)
    assert model.num_parameters() < 10_000_000
    tokens = model.visual_tokens_per_image
    input_ids = torch.tensor([[tokenizer.image_id] * tokens + [tokenizer.bos_id, 7, 8, 9]])
    pixels = torch.randn(1, 3, config["vision"]["image_size"], config["vision"]["image_size"])
    logits = model(input_ids=input_ids, pixel_values=pixels).logits
    assert logits.shape == (1, tokens + 4, config["llm"]["vocab"]) and torch.isfinite(logits).all()
