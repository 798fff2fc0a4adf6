"""A tiny random Hugging Face Fuyu checkpoint and batches laid out as FuyuProcessor lays them out
(nothing is downloaded)."""
from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 128
IMAGE_TOKEN = 100  # |SPEAKER|: one per patch
NEWLINE_TOKEN = 101  # |NEWLINE|: closes each row of patches, keeps its word embedding
BOA_TOKEN = 102  # <0x04>, the beginning of the answer
PATCH = 8


def make_hf_fuyu(folder: Path | None = None, *, seed: int = 0, qk_norm: bool = True, tie: bool = False,
                 image_token_id: int = IMAGE_TOKEN, patch_size: int = PATCH):
    from transformers import FuyuConfig, FuyuForCausalLM

    torch.manual_seed(seed)
    text = dict(model_type="persimmon", vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=256, qk_layernorm=qk_norm, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 25000.0, "partial_rotary_factor": 0.5},
                tie_word_embeddings=tie)
    config = FuyuConfig(text_config=text, patch_size=patch_size, image_size=32, image_token_id=image_token_id,
                        tie_word_embeddings=tie)
    model = FuyuForCausalLM(config).eval()
    with torch.no_grad():  # random init leaves norms at 1/0 and biases at 0: perturb them so every one is seen
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    if folder is not None:
        model.save_pretrained(folder)
    return model


def image_tokens(rows: int, cols: int) -> list[int]:
    """FuyuProcessor's layout of one image: each row of patches, then a newline."""
    return ([IMAGE_TOKEN] * cols + [NEWLINE_TOKEN]) * rows


def fuyu_batch(sizes=((16, 24), (24, 32)), text_lengths=(3, 6), seed: int = 1):
    """Rows laid out as FuyuProcessor does: image rows + newlines, <s>, text, <boa>; left-padded.

    Returns input_ids, attention_mask, images [(3, h, w)], patches per row [(P, 192)] and
    image_patches_indices (the older processor's per-row patch index, -1 elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    rows, images, patches = [], [], []
    for (h, w), n in zip(sizes, text_lengths):
        image = torch.randn(3, h, w, generator=g)
        grid = image.view(3, h // PATCH, PATCH, w // PATCH, PATCH).permute(1, 3, 2, 4, 0)
        patches.append(grid.reshape(-1, PATCH * PATCH * 3))
        images.append(image)
        text = torch.randint(3, IMAGE_TOKEN, (n,), generator=g).tolist()
        rows.append(image_tokens(h // PATCH, w // PATCH) + [1] + text + [BOA_TOKEN])
    length = max(len(r) for r in rows)
    input_ids = torch.tensor([[0] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    indices = torch.full_like(input_ids, -1)
    for b in range(len(rows)):
        where = (input_ids[b] == IMAGE_TOKEN).nonzero().squeeze(1)
        indices[b, where] = torch.arange(where.numel())
    return input_ids, mask, images, patches, indices


# ---- a tokenizer and processor saved as transformers saves them
WORDS = "what is in the image ? describe a cat dog red blue caption".split()
PROCESSOR_SPECIALS = ("<unk>", "<s>", "</s>", "▁", "|SPEAKER|", "|NEWLINE|", "<0x04>")


def make_fuyu_tokenizer():
    """A word-level tokenizer with Fuyu's special tokens. Fuyu's own (sentencepiece) tokenizer puts a "▁"
    piece before text that starts with |SPEAKER|, which FuyuProcessor drops; this one is given the same
    habit (FuyuTestTokenizer) so transformers' processor reads it as it reads the real one."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    class FuyuTestTokenizer(PreTrainedTokenizerFast):
        def __call__(self, text=None, *args, **kwargs):
            if isinstance(text, str) and text.startswith("|SPEAKER|"):
                text = "▁" + text
            return super().__call__(text, *args, **kwargs)

    vocab = {token: i for i, token in enumerate(PROCESSOR_SPECIALS)}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in PROCESSOR_SPECIALS if t != "▁"])
    return FuyuTestTokenizer(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                             pad_token="<unk>")


def make_hf_fuyu_processor(folder: Path, **image_options):
    """transformers' FuyuProcessor over the PIL image processor (torchvision does not import here). That
    processor's patchify_image is numpy code which FuyuProcessor calls on torch tensors; it is wrapped to
    take them, so the patch layout compared is the one the installed source defines."""
    from transformers import FuyuProcessor
    from transformers.models.fuyu.image_processing_pil_fuyu import FuyuImageProcessorPil

    image_processor = FuyuImageProcessorPil(**image_options)
    processor = FuyuProcessor(image_processor=image_processor, tokenizer=make_fuyu_tokenizer())
    processor.save_pretrained(folder)
    numpy_patchify = image_processor.patchify_image
    image_processor.patchify_image = lambda image, patch_size=None: torch.from_numpy(
        numpy_patchify(image.numpy() if isinstance(image, torch.Tensor) else image, patch_size))
    return processor
