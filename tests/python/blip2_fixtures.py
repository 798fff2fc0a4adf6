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


def make_hf_opt(folder: Path, *, seed: int = 0, word_embed_proj_dim: int | None = None, tie: bool = True):
    """A tiny OPTForCausalLM saved with save_pretrained; word_embed_proj_dim adds project_in/out."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=OPT_VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=96, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=word_embed_proj_dim, tie_word_embeddings=tie)
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
