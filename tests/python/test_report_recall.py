"""Retrieval recall@1 of a joint encoder (BEiT-3) in the study: the measurement on (image, caption) pairs, its
columns in summary.csv and report.md ("n/a" for the rows without embeddings), and the BEiT-3 row of compare."""
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from rich.console import Console

import vlmzoo
from vlmzoo.data import Example, images_to_tensor, make_task
from vlmzoo.families.beit3.processor import BEIT3_MEAN, BEIT3_STD
from vlmzoo.study.compare import print_comparison
from vlmzoo.study.report import RECALL_NOTE, summarize, write_report
from vlmzoo.training.encoder_retrieval import CHANCE, IMAGE_TO_TEXT, TEXT_TO_IMAGE, pair_recall, retrieval_recall
from vlmzoo.training.pretraining import held_out_captions
from vlmzoo.training.vqa import task_overrides


@pytest.fixture(scope="module")
def shapes():
    return make_task("shapes", image_size=32, n_train=16, n_val=0, n_test=12)


class LookupEncoder(torch.nn.Module):
    """Embeds an image as the one-hot of its pair's caption (found by its pixels) and a text as the one-hot of
    its caption (or of `shift` captions on, to be wrong): a perfect or a perfectly wrong retriever."""

    def __init__(self, pairs, tokenizer, image_size, shift=0):
        super().__init__()
        self.captions = sorted({e.answer for e in pairs})
        self.pixels = images_to_tensor([e.image for e in pairs], image_size, BEIT3_MEAN, BEIT3_STD)
        self.of_image = [self.captions.index(e.answer) for e in pairs]
        self.tokenizer, self.shift = tokenizer, shift

    def _one_hot(self, indices):
        return torch.nn.functional.one_hot(torch.tensor(indices), len(self.captions)).float()

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None):
        if pixel_values is not None:
            found = [int((self.pixels == p).flatten(1).all(1).nonzero()[0]) for p in pixel_values]
            return SimpleNamespace(image_embeds=self._one_hot([self.of_image[i] for i in found]))
        words = [[t for t, m in zip(row.tolist()[1:], mask.tolist()[1:]) if m][:-1]  # drop <bos>, <eos>, padding
                 for row, mask in zip(input_ids, attention_mask)]
        index = [(self.captions.index(self.tokenizer.decode(w)) + self.shift) % len(self.captions) for w in words]
        return SimpleNamespace(text_embeds=self._one_hot(index), image_embeds=None)


def test_recall_counts_images_with_equal_captions_as_positives_and_states_chance(shapes):
    pairs = [Example(e.image, "", c, "caption") for e, c in
             zip(shapes.test[:5], ["a red circle", "a blue square", "a red circle", "a green triangle", "a blue square"])]
    perfect = pair_recall(LookupEncoder(pairs, shapes.tokenizer, 32), pairs, shapes.tokenizer, 32, batch_size=2)
    assert perfect[IMAGE_TO_TEXT] == perfect[TEXT_TO_IMAGE] == 1.0
    # positives per query: 2, 2, 2, 1, 2 of 5 -> chance 9/25, the hit rate of a random pick
    assert perfect[CHANCE] == pytest.approx(9 / 25)
    wrong = pair_recall(LookupEncoder(pairs, shapes.tokenizer, 32, shift=1), pairs, shapes.tokenizer, 32)
    assert wrong[IMAGE_TO_TEXT] == wrong[TEXT_TO_IMAGE] == 0.0
    with pytest.raises(ValueError, match="no \\(image, caption\\) pairs"):
        pair_recall(LookupEncoder(pairs, shapes.tokenizer, 32), [], shapes.tokenizer, 32)


def test_a_vqa_beit3_is_scored_by_its_class_tokens_and_a_retrieval_one_by_its_head(shapes):
    torch.manual_seed(0)
    overrides = task_overrides(shapes)
    vqa = vlmzoo.build("beit3-tiny", **overrides).train()
    recall = retrieval_recall(vqa, shapes, batch_size=5)
    assert set(recall) == {IMAGE_TO_TEXT, TEXT_TO_IMAGE, CHANCE} and vqa.training  # training mode restored
    assert all(0.0 <= v <= 1.0 for v in recall.values())
    pairs = held_out_captions(shapes)
    assert len(pairs) == len(shapes.test) and recall[CHANCE] >= 1 / len(pairs)
    # The class-token path: a model whose retrieval head is the identity gives the same numbers as the vqa one.
    retrieval = vlmzoo.build("beit3-tiny", **{**overrides, "head": {"kind": "retrieval"}})
    state = {k: v for k, v in vqa.state_dict().items() if not k.startswith("head.")}
    hidden = vqa.config["llm"]["hidden"]
    state |= {"head.vision_head.weight": torch.eye(hidden), "head.language_head.weight": torch.eye(hidden),
              "head.logit_scale": torch.tensor(0.0)}
    retrieval.load_state_dict(state)
    assert retrieval_recall(retrieval, shapes) == pytest.approx(recall)


def per_seed(recall=None):
    rows = []
    for model, values in {"llava": None, "beit3": recall}.items():
        for seed in range(2):
            row = {"task": "shapes", "model": model, "seed": seed, "image_path": "visual tokens", "trained": "llm",
                   "visual_tokens_per_image": 16, "train_gflops": 1.0, "steps": 3, "chance_accuracy": 0.4,
                   "accuracy": 0.5}
            if values is not None and model == "beit3":
                row |= {IMAGE_TO_TEXT: values[seed], TEXT_TO_IMAGE: values[seed] / 2, CHANCE: 0.05}
            rows.append(row)
    return pd.DataFrame(rows)


def test_summary_and_report_show_recall_for_the_joint_encoder_and_na_for_the_others(tmp_path):
    summary = summarize(per_seed([0.2, 0.3])).set_index("model")
    assert summary.loc["beit3", IMAGE_TO_TEXT] == pytest.approx(0.25)
    assert summary.loc["beit3", f"{IMAGE_TO_TEXT}_std"] == pytest.approx(0.0707107)
    assert summary.loc["beit3", TEXT_TO_IMAGE] == pytest.approx(0.125)
    assert summary.loc["beit3", CHANCE] == pytest.approx(0.05)
    assert summary.loc["llava", [IMAGE_TO_TEXT, TEXT_TO_IMAGE, CHANCE]].isna().all()
    text = write_report(tmp_path, summary.reset_index(), {}).read_text()
    assert RECALL_NOTE in text and "R@1 image->text %" in text
    assert text.count("| n/a | n/a | n/a |") == 1  # the llava row
    assert "| 25.0 ± 7.1 | 12.5 ± 3.5 | 5.0 |" in text
    # without any recall column (a study of decoders only) every row says n/a
    decoders = write_report(tmp_path, summarize(per_seed()), {}).read_text()
    assert decoders.count("| n/a | n/a | n/a |") == 2


def test_the_printed_table_shows_both_directions_in_one_cell():
    console = Console(record=True, width=200)
    print_comparison(summarize(per_seed([0.2, 0.3])), console=console)
    text = console.export_text()
    assert "R@1 i>t/t>i" in text and "25.0/12.5%" in text and "n/a" in text
