"""BEiT-3 trains: the tiny preset, as VQA classification over the shapes task's answer set, lowers
its loss within 30 steps; and the presets: full ones count the published parameters (meta device),
tiny ones build and fit the built-in tasks."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

import vlmzoo
from vlmzoo.data.tasks import make_task
from vlmzoo.training.vqa import answer_set, task_overrides, train_vqa, vqa_batches


@pytest.fixture(scope="module")
def shapes():
    return make_task("shapes", image_size=32, n_train=480, n_val=8, n_test=64)


def test_tiny_beit3_lowers_its_vqa_loss_in_30_steps(shapes):
    model = vlmzoo.build("beit3-tiny", **task_overrides(shapes))
    losses = train_vqa(model, shapes, 30, batch_size=16, lr=1e-3)
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.1, (first, last)


def test_vqa_batches_hold_right_padded_questions_and_answer_classes(shapes):
    batch = next(vqa_batches(shapes, "train", 4))
    tok = shapes.tokenizer
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert (batch["input_ids"][:, 0] == tok.bos_id).all()
    lengths = batch["attention_mask"].sum(1)
    for row, n in zip(batch["input_ids"], lengths):
        assert row[n - 1] == tok.eos_id and (row[n:] == tok.pad_id).all()
    answers = answer_set(shapes)
    assert [answers[i] for i in batch["labels"]] == [e.answer for e in shapes.train[:4]]


# unilm beit3 README, "Pretrained models": BEiT3-base 222M, BEiT3-large 674M parameters. These are the
# backbone (torchscale BEiT3 with _get_base_config / _get_large_config: vocab 64010, 224 px, patch 16)
# plus the image-text heads (vision_head, language_head, logit_scale: BEiT3ForRetrieval), which the full
# presets carry: 222,167,041 and 674,799,617.
PUBLISHED = {"beit3-base": (222, dict(encoder_embed_dim=768, encoder_attention_heads=12,
                                      encoder_ffn_embed_dim=3072, encoder_layers=12)),
             "beit3-large": (674, dict(encoder_embed_dim=1024, encoder_attention_heads=16,
                                       encoder_ffn_embed_dim=4096, encoder_layers=24))}


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_full_presets_count_the_published_parameters(preset):
    from beit3_fixtures import import_torchscale

    millions, encoder = PUBLISHED[preset]
    counts = vlmzoo.parameter_counts(preset)
    assert counts["total"] // 10**6 == millions, counts
    BEiT3, EncoderConfig = import_torchscale()
    with torch.device("meta"):
        reference = BEiT3(EncoderConfig(vocab_size=64010, multiway=True, no_output_layer=True, img_size=224,
                                        patch_size=16, **encoder))
    d = encoder["encoder_embed_dim"]
    assert counts["vision"] + counts["llm"] == sum(p.numel() for p in reference.parameters())
    assert counts["head"] == 2 * d * d + 1


@pytest.mark.parametrize("preset", ["beit3-tiny", "beit3-micro"])
def test_tiny_presets_build_and_fit_the_shapes_task(preset, shapes):
    model = vlmzoo.build(preset, **task_overrides(shapes))
    batch = next(vqa_batches(shapes, "val", 2, image_size=model.config["vision"]["image_size"]))
    out = model(**batch)
    assert out.logits.shape == (2, len(shapes.answers)) and torch.isfinite(out.loss)


def test_beit3_micro_runs_in_compare_beside_a_llava_at_the_same_budget(tmp_path):
    from vlmzoo.study.compare import compare

    task = make_task("shapes", image_size=64, n_train=64, n_val=0, n_test=16)
    comparison = compare(["beit3-micro", "llava-1.5-micro"], task=task, budget="2e10flops", out=tmp_path, seeds=1,
                         batch_size=4, curve_points=1, progress=False, print_table=False)
    table = comparison[0].set_index("model")
    assert table.loc["beit3-micro", "family"] == "beit3"
    assert 0.0 <= table.loc["beit3-micro", "accuracy"] <= 1.0
    # the same FLOPs budget: each trained as many steps as its FLOPs per step allow, no more
    for name in ("beit3-micro", "llava-1.5-micro"):
        assert table.loc[name, "train_gflops"] <= 20.0
        assert table.loc[name, "train_gflops"] * (1 + 1 / table.loc[name, "steps"]) > 20.0
    # retrieval recall@1 both ways for the joint encoder's row, n/a (NaN) for the decoder's, in every output
    summary = pd.read_csv(tmp_path / "summary.csv").set_index("model")
    for column in ("recall@1_image_to_text", "recall@1_text_to_image", "recall@1_chance"):
        assert 0.0 <= table.loc["beit3-micro", column] <= 1.0
        assert summary.loc["beit3-micro", column] == pytest.approx(table.loc["beit3-micro", column])
        assert math.isnan(summary.loc["llava-1.5-micro", column])
    report = (tmp_path / "report.md").read_text()
    assert "beit3-micro" in report and "R@1 image->text %" in report
    llava_line = next(line for line in report.splitlines() if line.startswith("| llava-1.5-micro |"))
    assert llava_line.endswith("| n/a | n/a | n/a |")
