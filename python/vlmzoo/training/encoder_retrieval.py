"""Image-text retrieval recall@1 of a multiway encoder (BEiT-3) on a built-in task's held-out pairs: the
split's images against their template captions (vlmzoo.training.pretraining.held_out_captions), both ways.

Embeddings: the retrieval head's `.image_embeds` / `.text_embeds` where the model has one (BEiT-3's
BEiT3ForRetrieval); otherwise the class token (first position of `.last_hidden_state`) of a vision-only and
of a text-only pass, L2-normalised. Similarity is their cosine. Images whose captions are equal are
positives of each other (a caption cannot tell them apart), so chance is not 1/N: CHANCE_NOTE says what it is."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from vlmzoo.data import Example, images_to_tensor
from vlmzoo.families.beit3.processor import BEIT3_MEAN, BEIT3_STD
from vlmzoo.training.pretraining import held_out_captions, recall_at_k, text_batch

# The per-seed row's columns (study.report shows them in percent, "n/a" for rows without them).
IMAGE_TO_TEXT, TEXT_TO_IMAGE, CHANCE = "recall@1_image_to_text", "recall@1_text_to_image", "recall@1_chance"
COLUMNS = (IMAGE_TO_TEXT, TEXT_TO_IMAGE, CHANCE)
CHANCE_NOTE = ("chance is the mean share of the pairs whose caption equals the query's (a random pick's hit rate, "
               "the same both ways)")


def _embeddings(model: Any, batches: Sequence[dict[str, torch.Tensor]], name: str) -> torch.Tensor:
    rows = []
    for batch in batches:
        out = model(**batch)
        embeds = getattr(out, name, None)
        rows.append(embeds if embeds is not None else out.last_hidden_state[:, 0])
    return F.normalize(torch.cat(rows).float(), dim=-1)


@torch.no_grad()
def pair_recall(model: Any, pairs: Sequence[Example], tokenizer: Any, image_size: int,
                batch_size: int = 64) -> dict[str, float]:
    """{IMAGE_TO_TEXT, TEXT_TO_IMAGE, CHANCE} on (image, caption) pairs (Example.image, Example.answer).
    Texts are <bos> caption <eos>, padded on the right, images normalised as BEiT-3's fine-tuning."""
    if not pairs:
        raise ValueError("pair_recall: no (image, caption) pairs to retrieve among")
    was_training = model.training
    model.eval()
    spans = [pairs[s : s + batch_size] for s in range(0, len(pairs), batch_size)]
    images = [{"pixel_values": images_to_tensor([e.image for e in span], image_size, BEIT3_MEAN, BEIT3_STD)}
              for span in spans]
    texts = []
    for span in spans:
        ids, mask = text_batch([e.answer for e in span], tokenizer, left_pad=False)
        texts.append({"input_ids": ids, "attention_mask": mask})
    image_embeds = _embeddings(model, images, "image_embeds")
    text_embeds = _embeddings(model, texts, "text_embeds")
    model.train(was_training)
    captions = [e.answer for e in pairs]
    positives = torch.tensor([[a == b for b in captions] for a in captions])
    similarity = text_embeds @ image_embeds.t()  # [texts, images]
    return {IMAGE_TO_TEXT: recall_at_k(similarity.t(), positives.t(), ks=(1,))[1],
            TEXT_TO_IMAGE: recall_at_k(similarity, positives, ks=(1,))[1],
            CHANCE: positives.float().mean().item()}


def retrieval_recall(model: Any, task: Any, batch_size: int = 64) -> dict[str, float]:
    """pair_recall on the task's test images and their template captions, at the model's image size."""
    return pair_recall(model, held_out_captions(task), task.tokenizer, model.config["vision"]["image_size"],
                       batch_size)
