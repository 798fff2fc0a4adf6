"""Tiny random Hugging Face OPT, BLIP-2 and InstructBLIP checkpoints the tests save and load (nothing
is downloaded), and batches laid out as transformers' processors lay them out."""
from __future__ import annotations

from pathlib import Path

import torch

OPT_VOCAB = 96
OPT_PAD, OPT_BOS = 1, 2  # OPTConfig's defaults


def perturb_norms(model: torch.nn.Module) -> None:
    """Random init leaves norms at 1/0; perturb them so the tests see every parameter."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)


def make_hf_opt(folder: Path, *, seed: int = 0, word_embed_proj_dim: int | None = None, tie: bool = True,
                enable_bias: bool = True):
    """A tiny OPTForCausalLM saved with save_pretrained; word_embed_proj_dim adds project_in/out."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=OPT_VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=96, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=word_embed_proj_dim, tie_word_embeddings=tie,
                       enable_bias=enable_bias)
    model = OPTForCausalLM(config).eval()
    perturb_norms(model)
    with torch.no_grad():  # OPT's init zeroes biases and the padding row; give them values too
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    return model


def text_batch(lengths=(9, 5), seed: int = 1, vocab: int = OPT_VOCAB, pad: int = OPT_PAD, bos: int = OPT_BOS):
    """Left-padded prompts of the given lengths (BOS first, as OPT's tokenizer does): (input_ids, attention_mask)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad, dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = torch.cat([torch.tensor([bos]), torch.randint(4, vocab, (n - 1,), generator=g)])
        mask[row, width - n:] = 1
    return ids, mask


# BLIP-2 / InstructBLIP: 32 px images in 8 px patches (16 patches + CLS), 6 queries, a 3-layer Q-Former
# (cross-attention in layers 0 and 2), a 2-layer language model.
QUERIES = 6
IMAGE_TOKEN = OPT_VOCAB - 1  # the <image> token a processor appends to the tokenizer: the last id
QFORMER_VOCAB = 40
LLAMA_PAD, LLAMA_BOS = 0, 1


def _blip2_sub_configs(text: str, tie: bool, instruct: bool):
    from transformers import LlamaConfig, OPTConfig

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    qformer = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
                   cross_attention_frequency=2, vocab_size=QFORMER_VOCAB, max_position_embeddings=32)
    if text == "opt":
        text_config = OPTConfig(vocab_size=OPT_VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=96,
                                num_attention_heads=4, max_position_embeddings=128, tie_word_embeddings=tie)
    else:
        text_config = LlamaConfig(vocab_size=OPT_VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                  tie_word_embeddings=tie, pad_token_id=LLAMA_PAD, bos_token_id=LLAMA_BOS,
                                  eos_token_id=2)
    return vision, qformer, text_config


def make_hf_blip2(folder: Path, *, text: str = "opt", seed: int = 0, tie: bool | None = None,
                  instruct: bool = False):
    """A tiny Blip2ForConditionalGeneration (or InstructBlipForConditionalGeneration) with an OPT or
    Llama language model, saved with save_pretrained. tie: the language model's tie_word_embeddings
    (default: its config class's, true for OPT, false for Llama)."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration
    from transformers import InstructBlipConfig, InstructBlipForConditionalGeneration

    torch.manual_seed(seed)
    vision, qformer, text_config = _blip2_sub_configs(text, text == "opt" if tie is None else tie, instruct)
    config_class, model_class = ((InstructBlipConfig, InstructBlipForConditionalGeneration) if instruct
                                 else (Blip2Config, Blip2ForConditionalGeneration))
    config = config_class(vision_config=vision, qformer_config=qformer, text_config=text_config.to_dict(),
                          num_query_tokens=QUERIES, image_token_index=IMAGE_TOKEN)
    model = model_class(config).eval()
    perturb_norms(model)
    with torch.no_grad():  # zero-initialised biases and queries, and the ViT's tiny init, get real values
        for name, p in model.named_parameters():
            if name.endswith("bias") or name == "query_tokens":
                p.add_(torch.randn_like(p) * 0.05)
            elif name.startswith("vision_model.") and "norm" not in name:
                p.copy_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    return model


def blip2_batch(text: str = "opt", lengths=(7, 4), seed: int = 1, images: int | None = None):
    """Two prompts as Blip2Processor lays them out (transformers 5.24): the queries' image tokens first,
    then the tokenizer's left-padded output (padding, BOS, text); the mask is 1 on the image tokens.
    Returns (input_ids, attention_mask, pixel_values [2, 3, 32, 32])."""
    g = torch.Generator().manual_seed(seed)
    pad, bos = (OPT_PAD, OPT_BOS) if text == "opt" else (LLAMA_PAD, LLAMA_BOS)
    ids, mask = text_batch(lengths, seed=seed, vocab=IMAGE_TOKEN, pad=pad, bos=bos)
    image = torch.full((ids.shape[0], QUERIES), IMAGE_TOKEN, dtype=torch.long)
    input_ids = torch.cat([image, ids], 1)
    attention_mask = torch.cat([torch.ones_like(image), mask], 1)
    pixel_values = torch.randn(ids.shape[0] if images is None else images, 3, 32, 32, generator=g)
    return input_ids, attention_mask, pixel_values


def qformer_batch(lengths=(5, 3), seed: int = 2):
    """The instruction as InstructBlipProcessor's BERT tokenizer gives it: [CLS] words [SEP], right-padded
    with 0. Returns (qformer_input_ids, qformer_attention_mask)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.cat([torch.tensor([3]), torch.randint(5, QFORMER_VOCAB, (n - 2,), generator=g),
                                  torch.tensor([4])])
        mask[row, :n] = 1
    return ids, mask
