"""Tiny random Hugging Face LLaVA checkpoints the tests save and load (nothing is downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch

IMAGE_TOKEN = 100
VOCAB = 128


def make_hf_llava(folder: Path, *, feature_layer=-2, select="default", seed=0, tie=False, vision_kind="clip"):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers import SiglipVisionConfig

    torch.manual_seed(seed)
    vision_config = CLIPVisionConfig if vision_kind == "clip" else SiglipVisionConfig
    vision = vision_config(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                           image_size=32, patch_size=8)
    text = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                       tie_word_embeddings=tie, pad_token_id=0)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN,
                         vision_feature_layer=feature_layer, vision_feature_select_strategy=select,
                         tie_word_embeddings=tie)
    model = LlavaForConditionalGeneration(config).eval()
    # Random init leaves norms at 1/0; perturb them so the test sees every parameter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    return model


def llava_batch(tokens_per_image: int, seed: int = 1):
    """Two left-padded prompts: row 0 has two images, row 1 one image and two pads."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(5, IMAGE_TOKEN, (n,), generator=g).tolist()  # noqa: E731
    img = [IMAGE_TOKEN] * tokens_per_image
    row0 = [1] + text(3) + img + text(2) + img + text(4)
    row1 = [1] + text(2) + img + text(5)
    length = max(len(row0), len(row1))
    rows, masks = [], []
    for row in (row0, row1):
        pad = length - len(row)
        rows.append([0] * pad + row)
        masks.append([0] * pad + [1] * len(row))
    pixel_values = torch.randn(3, 3, 32, 32, generator=g)
    return torch.tensor(rows), torch.tensor(masks), pixel_values
