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


# ---- tokenizers and processors saved as transformers saves them (for processor and CLI tests)
SPECIAL_IDS = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
WORDS = ("a the cat dog what is in image picture describe this user assistant : ? . , please photo of red blue "
         "green and there two three one on left right colour how many shapes circle square triangle yes no "
         "question answer briefly").split()
LLAVA_CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_hf_tokenizer(image_token_id: int = IMAGE_TOKEN, vocab_size: int = VOCAB):
    """A word-level transformers tokenizer whose ids fit `vocab_size`: <s> first, <image> a special
    token at `image_token_id`, every word of WORDS below it."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = dict(SPECIAL_IDS)
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    assert len(vocab) < image_token_id < vocab_size
    vocab["<image>"] = image_token_id
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                             special_tokens=[("<s>", 1)])
    tokenizer.add_special_tokens([AddedToken("<image>", normalized=False, special=True)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def clip_image_processor(shortest_edge: int = 32, crop: tuple[int, int] = (32, 32), **kwargs):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": shortest_edge},
                                 crop_size={"height": crop[0], "width": crop[1]}, **kwargs)


def save_hf_llava_processor(folder: Path, *, image_size: int = 32, patch_size: int = 8, select: str = "default",
                            chat_template: str | None = LLAVA_CHAT_TEMPLATE, image_processor=None):
    """The LlavaProcessor a tiny LLaVA (make_hf_llava) needs: CLIP preprocessing, CLS counted."""
    from transformers import LlavaProcessor

    processor = LlavaProcessor(
        image_processor=image_processor or clip_image_processor(image_size, (image_size, image_size)),
        tokenizer=make_hf_tokenizer(), patch_size=patch_size, vision_feature_select_strategy=select,
        num_additional_image_tokens=1, chat_template=chat_template,
    )
    processor.save_pretrained(folder)
    return processor


def save_hf_blip2_processor(folder: Path, *, image_size: int = 40, num_query_tokens: int = 6, instruct: bool = False):
    from transformers import Blip2Processor, InstructBlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    if instruct:
        processor = InstructBlipProcessor(image_processor=image_processor, tokenizer=make_hf_tokenizer(),
                                          qformer_tokenizer=make_hf_tokenizer(image_token_id=110),
                                          num_query_tokens=num_query_tokens)
    else:
        processor = Blip2Processor(image_processor=image_processor, tokenizer=make_hf_tokenizer(),
                                   num_query_tokens=num_query_tokens)
    processor.save_pretrained(folder)
    return processor
