"""Tiny random Hugging Face IDEFICS (v1) checkpoints and interleaved batches (nothing is downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 120  # base vocabulary; the two additional rows are <fake_token_around_image> and <image>
FAKE_TOKEN = VOCAB
IMAGE_TOKEN = VOCAB + 1
IMAGE_SIZE = 32


def make_hf_idefics(folder: Path | None, *, resampler: bool = True, seed: int = 0, alpha_type: str = "float",
                    qk_norms: bool = True, interval: int = 2):
    """IdeficsForVisionText2Text with random weights, gates and norms perturbed so every parameter counts."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text

    torch.manual_seed(seed)
    config = IdeficsConfig(
        vocab_size=VOCAB, additional_vocab_size=2, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=256, cross_layer_interval=interval, qk_layer_norms=qk_norms,
        alpha_type=alpha_type, use_resampler=resampler, freeze_text_layers=False, freeze_vision_layers=False,
        vision_config=dict(embed_dim=32, image_size=IMAGE_SIZE, intermediate_size=64, patch_size=8,
                           num_hidden_layers=2, num_attention_heads=4, hidden_act="gelu"),
        perceiver_config=dict(use_resampler=resampler, resampler_n_latents=4, resampler_depth=2, resampler_n_heads=2,
                              resampler_head_dim=16, qk_layer_norms_perceiver=qk_norms),
        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = IdeficsForVisionText2Text(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "alpha" in name or name.endswith(".ln.weight"):
                p.add_(torch.randn_like(p) * 0.5 if "alpha" in name else torch.randn_like(p) * 0.1)
            if "latents" in name:
                p.copy_(torch.randn_like(p))
    if folder is not None:
        model.save_pretrained(folder)
    return model


def idefics_mask(input_ids: torch.Tensor, images: int) -> torch.Tensor:
    """image_attention_mask as IdeficsProcessor builds it: each token reads the latest <image> at or before it."""
    latest = (input_ids == IMAGE_TOKEN).long().cumsum(1) - 1  # -1 before the first image
    mask = torch.nn.functional.one_hot(latest.clamp_min(0), images)
    return mask * (latest >= 0).unsqueeze(-1)


def interleaved_batch(seed: int = 1):
    """Two left-padded rows: row 0 text, image, text, image, text; row 1 text, image, text (its second image
    slot zeros, as the processor pads). pixel_values [2, 2, 3, H, W]."""
    g = torch.Generator().manual_seed(seed)
    text = lambda n: torch.randint(5, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    img = [FAKE_TOKEN, IMAGE_TOKEN, FAKE_TOKEN]
    row0 = [1] + text(3) + img + text(4) + img + text(3)
    row1 = [1] + text(2) + img + text(5)
    length = max(len(row0), len(row1))
    rows, masks = [], []
    for row in (row0, row1):
        pad = length - len(row)
        rows.append([0] * pad + row)
        masks.append([0] * pad + [1] * len(row))
    input_ids = torch.tensor(rows)
    pixel_values = torch.randn(2, 2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    pixel_values[1, 1] = 0
    return input_ids, torch.tensor(masks), pixel_values, idefics_mask(input_ids, 2)


def make_idefics_tokenizer():
    """A word-level transformers tokenizer with IDEFICS's two extra tokens right after the base vocabulary
    (<fake_token_around_image> = VOCAB, <image> = VOCAB + 1), left padding as IDEFICS pads."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hf_fixtures import SPECIAL_IDS, WORDS

    vocab = dict(SPECIAL_IDS)
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    for filler in range(len(vocab), VOCAB):
        vocab[f"w{filler}"] = filler
    vocab["<fake_token_around_image>"], vocab["<image>"] = FAKE_TOKEN, IMAGE_TOKEN
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                  for t in ("<s>", "</s>", "<fake_token_around_image>", "<image>")])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", padding_side="left")


def save_hf_idefics_processor(folder: Path, image_size: int = IMAGE_SIZE):
    from transformers import IdeficsProcessor
    from transformers.models.idefics.image_processing_pil_idefics import IdeficsImageProcessorPil

    processor = IdeficsProcessor(image_processor=IdeficsImageProcessorPil(image_size=image_size),
                                 tokenizer=make_idefics_tokenizer())
    processor.save_pretrained(folder)
    return processor
