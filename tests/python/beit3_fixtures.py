"""Tiny random torchscale BEiT-3 checkpoints (torchscale 0.3.0, installed with --no-deps) in the
released layout: a folder with one .pth holding {"model": state_dict} (backbone under `beit3.`, the
unilm task head beside it) and a config.json of EncoderConfig fields. Nothing is downloaded."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

TINY_ENCODER = dict(encoder_embed_dim=64, encoder_attention_heads=4, encoder_ffn_embed_dim=128, encoder_layers=2,
                    vocab_size=512, multiway=True, img_size=32, patch_size=8, max_source_positions=66,
                    no_output_layer=True)


def import_torchscale():
    """torchscale's BEiT3 and EncoderConfig. torchscale imports timm (drop path) and fairscale
    (activation checkpointing, FSDP wrap) for features BEiT-3 inference does not use; where they are
    not installed (timm needs torchvision, which has no wheel beside our torch) tiny stand-ins serve
    the import and are removed again, so no other test sees them."""
    pytest.importorskip("torchscale")
    added = []
    try:
        import timm.models.layers  # noqa: F401
    except ImportError:
        def drop_path(x, drop_prob=0.0, training=False):
            assert drop_prob == 0.0, "the stand-in drop_path only serves drop_path_rate 0"
            return x
        for name in ("timm", "timm.models", "timm.models.layers"):
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        sys.modules["timm.models.layers"].drop_path = drop_path
    try:
        import fairscale.nn  # noqa: F401
    except ImportError:
        for name in ("fairscale", "fairscale.nn"):
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                added.append(name)
        sys.modules["fairscale.nn"].checkpoint_wrapper = lambda module: module
        sys.modules["fairscale.nn"].wrap = lambda module: module
    try:
        from torchscale.architecture.config import EncoderConfig
        from torchscale.model.BEiT3 import BEiT3
    finally:
        for name in added:
            del sys.modules[name]
    return BEiT3, EncoderConfig


class Beit3Task(nn.Module):
    """torchscale's BEiT3 with unilm's task heads under their names (BEiT3ForRetrieval,
    BEiT3ForVisualQuestionAnswering, BEiT3ForImageClassification), as the reference computes them."""

    def __init__(self, head: str | None, classes: int = 10, **encoder):
        super().__init__()
        BEiT3, EncoderConfig = import_torchscale()
        self.encoder_kwargs = dict(TINY_ENCODER, **encoder)
        self.beit3 = BEiT3(EncoderConfig(**self.encoder_kwargs))
        self.head_kind = head
        d = self.encoder_kwargs["encoder_embed_dim"]
        if head == "retrieval":
            self.language_head = nn.Linear(d, d, bias=False)
            self.vision_head = nn.Linear(d, d, bias=False)
            self.logit_scale = nn.Parameter(torch.ones([]) * torch.log(torch.tensor(1 / 0.07)))
        elif head == "vqa":
            self.pooler = nn.Module()
            self.pooler.norm = nn.LayerNorm(d, eps=1e-6)
            self.pooler.dense = nn.Linear(d, d)
            self.head = nn.Sequential(nn.Linear(d, 2 * d), nn.LayerNorm(2 * d, eps=1e-6), nn.GELU(),
                                      nn.Linear(2 * d, classes))
        elif head == "image_classification":
            self.fc_norm = nn.LayerNorm(d, eps=1e-6)
            self.head = nn.Linear(d, classes)
        with torch.no_grad():  # every parameter away from its init, so the test sees each one
            for p in self.parameters():
                p.add_(torch.randn_like(p) * 0.05)

    def hidden(self, input_ids=None, pixel_values=None, attention_mask=None):
        padding = None if attention_mask is None else attention_mask == 0
        return self.beit3(textual_tokens=input_ids, visual_tokens=pixel_values,
                          text_padding_position=padding)["encoder_out"]

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None) -> dict[str, torch.Tensor]:
        if self.head_kind == "retrieval":
            image = nn.functional.normalize(self.vision_head(self.hidden(pixel_values=pixel_values)[:, 0]), dim=-1)
            text = nn.functional.normalize(
                self.language_head(self.hidden(input_ids, attention_mask=attention_mask)[:, 0]), dim=-1)
            logits = text @ image.t() * self.logit_scale.exp()
            return {"image_embeds": image, "text_embeds": text, "logits_per_text": logits}
        x = self.hidden(input_ids, pixel_values, attention_mask)
        if self.head_kind == "vqa":
            pooled = torch.tanh(self.pooler.dense(self.pooler.norm(x[:, 0])))
            return {"last_hidden_state": x, "logits": self.head(pooled)}
        if self.head_kind == "image_classification":
            return {"last_hidden_state": x, "logits": self.head(self.fc_norm(x[:, 1:].mean(1)))}
        return {"last_hidden_state": x}

    def save(self, folder: Path, name: str = "beit3_tiny_patch8_32.pth") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": self.state_dict()}, folder / name)
        (folder / "config.json").write_text(json.dumps(self.encoder_kwargs))
        return folder


def make_beit3(folder: Path, head: str | None = "vqa", seed: int = 0, **encoder) -> Beit3Task:
    torch.manual_seed(seed)
    model = Beit3Task(head, **encoder).eval()
    model.save(folder)
    return model


def beit3_batch(seed: int = 1, batch: int = 3, tokens: int = 7, vocab: int = 512, image_size: int = 32):
    """Right-padded texts (row 1 has three pads, row 2 one; BEiT-3's tokenizer pads on the right) and images."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, tokens), generator=g)
    ids[:, 0] = 0  # <s>
    mask = torch.ones_like(ids)
    mask[1, -3:] = 0
    mask[min(2, batch - 1), -1:] = 0
    ids[mask == 0] = 1  # <pad>
    return ids, mask, torch.randn(batch, 3, image_size, image_size, generator=g)
