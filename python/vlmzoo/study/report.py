"""A comparison as a study: per-seed rows aggregated to mean and spread, which designs are ahead of
which by more than their seed spread, and the report.md that states it.

Spread is the sample standard deviation over seeds (ddof=1) beside the min-max range. The rule
for "ahead": mean(A) - mean(B) > std(A) + std(B); any other pair is "not separable" (as is every
pair when a model has fewer than 2 seeds: no spread, no claim).
"""
from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from vlmzoo.storage.atomic import atomic_write_text
from vlmzoo.training.encoder_retrieval import CHANCE as RECALL_CHANCE
from vlmzoo.training.encoder_retrieval import CHANCE_NOTE, IMAGE_TO_TEXT, TEXT_TO_IMAGE
from vlmzoo.training.train import FINAL_LOSS

SPREAD = "sample std over seeds (ddof=1)"
RULE = "A is ahead of B when mean(A) - mean(B) > std(A) + std(B) (accuracy over seeds, sample std); otherwise not separable"
# Columns that are the same for every seed of a model (design facts) or averaged (costs).
_FIRST = ("family", "image_path", "trained", "recipe", "precision", "params_total", "params_trainable", "visual_tokens_per_image", "steps", "train_gflops",
          "pretrain_gflops", "chance_accuracy")
_MEAN = ("train_examples_per_s", "peak_rss_mib", "wall_time_s", "cpu_time_s", FINAL_LOSS)
# Image-text retrieval recall@1 (rows of a joint encoder, BEiT-3; absent, so NaN and "n/a", for the others):
# mean and sample std over seeds as accuracy; chance is the same for every seed (the test split's captions).
_RECALL = (IMAGE_TO_TEXT, TEXT_TO_IMAGE)
RECALL_NOTE = ("retrieval recall@1 (image->text, text->image): a joint encoder's row (BEiT-3) only, the test images "
               "against their template captions, cosine of the retrieval head's embeddings or else of the class "
               "tokens of a vision-only and a text-only pass; images with equal captions count as positives of "
               f"each other, so {CHANCE_NOTE}; n/a for a row without such embeddings (a decoder)")


def summarize(rows) -> "Any":
    """One row per (task, model) from per-seed rows: accuracy mean, std, min, max and seed count,
    accuracy_<kind> means and stds, the design columns of the first seed and the mean of the costs.
    Models keep the order of their first appearance."""
    keys = [k for k in ("task", "model") if k in rows.columns]
    out = []
    for key, group in rows.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        record: dict[str, Any] = dict(zip(keys, key))
        record.update({c: group[c].iloc[0] for c in _FIRST if c in group})
        record.update({c: group[c].mean() for c in _MEAN if c in group})
        for column in _RECALL:
            values = group[column].astype(float) if column in group else pd.Series([math.nan] * len(group))
            record.update({column: values.mean(), f"{column}_std": values.std(ddof=1)})
        record[RECALL_CHANCE] = group[RECALL_CHANCE].astype(float).mean() if RECALL_CHANCE in group else math.nan
        accuracy = group["accuracy"].astype(float)
        record.update(seeds=len(group), accuracy=accuracy.mean(), accuracy_std=accuracy.std(ddof=1),
                      accuracy_min=accuracy.min(), accuracy_max=accuracy.max())
        for column in [c for c in group.columns if c.startswith("accuracy_") and c not in record]:
            values = group[column].astype(float)
            record[column] = values.mean()
            record[f"{column}_std"] = values.std(ddof=1)
        out.append(record)
    return pd.DataFrame(out)


def separability(summary) -> dict[str, list[tuple[str, str, float, float]]]:
    """{"ahead": [(a, b, mean gap, spread)], "not_separable": [...]} over the models of one task's
    summary, by RULE (the gap and spread in accuracy fractions; `a` is the higher mean)."""
    ahead, tied = [], []
    records = list(summary.itertuples(index=False))
    for x, y in combinations(records, 2):
        a, b = (x, y) if x.accuracy >= y.accuracy else (y, x)
        gap = float(a.accuracy - b.accuracy)
        spread = float(a.accuracy_std + b.accuracy_std)  # NaN with one seed: never separable
        (ahead if not math.isnan(spread) and gap > spread else tied).append((a.model, b.model, gap, spread))
    return {"ahead": sorted(ahead, key=lambda p: -p[2]), "not_separable": tied}


def _percent(value: float) -> str:
    return "n/a" if value != value else f"{100 * value:.1f}"


def _recall_cell(mean: float, std: float) -> str:
    """Recall in percent as mean ± std (the mean alone with one seed), "n/a" where the row has none."""
    if mean != mean:
        return "n/a"
    return _percent(mean) + ("" if std != std else f" ± {_percent(std)}")


def summary_markdown(summary) -> str:
    """The summary as a Markdown table (accuracy and retrieval recall@1 in percent)."""
    lines = ["| model | sees the image by | trained | vis tok/img | train GFLOPs | pretrain GFLOPs | steps | seeds "
             "| accuracy % (mean ± std) | min-max % | chance % | R@1 image->text % | R@1 text->image % | R@1 chance % |",
             "|" + "---|" * 14]
    for r in summary.to_dict("records"):
        recall = [_recall_cell(r.get(c, math.nan), r.get(f"{c}_std", math.nan)) for c in _RECALL]
        lines.append(
            f"| {r['model']} | {r.get('image_path', '')} | {r.get('trained', '')} | "
            f"{int(r['visual_tokens_per_image'])} | {r['train_gflops']:,.0f} | "
            f"{r.get('pretrain_gflops', 0.0):,.0f} | {int(r['steps'])} | {int(r['seeds'])} | "
            f"{_percent(r['accuracy'])} ± {_percent(r['accuracy_std'])} | "
            f"{_percent(r['accuracy_min'])}-{_percent(r['accuracy_max'])} | {_percent(r['chance_accuracy'])} | "
            f"{recall[0]} | {recall[1]} | {_percent(r.get(RECALL_CHANCE, math.nan))} |")
    return "\n".join(lines)


def separability_markdown(summary) -> str:
    verdict = separability(summary)
    lines = ["Ahead by more than the seed spread:"]
    lines += [f"- **{a}** ahead of **{b}**: +{100 * gap:.1f} points > spread {100 * spread:.1f}"
              for a, b, gap, spread in verdict["ahead"]] or ["- none"]
    lines += ["", "Not separable (the gap is within the spread):"]
    lines += [f"- {a} vs {b}: gap {100 * gap:.1f} points, spread {_percent(spread)}"
              for a, b, gap, spread in verdict["not_separable"]] or ["- none"]
    return "\n".join(lines)


def write_report(out: str | Path, summary, figures: Mapping[str, Any], notes: Mapping[str, str] | None = None) -> Path:
    """out/report.md: per task, the summary table, the verdicts by RULE, and the figures (already
    saved as out/<name>.png) whose names end with the task's name; `notes` are "key: value" lines on top."""
    out = Path(out)
    lines = ["# vlmzoo compare: report", ""]
    lines += [f"- {k}: {v}" for k, v in (notes or {}).items()]
    lines += [f"- spread: {SPREAD}; the table also shows the min-max range", f"- rule: {RULE}",
              f"- {RECALL_NOTE}", ""]
    tasks = list(dict.fromkeys(summary["task"])) if "task" in summary else [""]
    for task in tasks:
        part = summary[summary["task"] == task] if task else summary
        lines += [f"## Task `{task}`" if task else "## Results", "", summary_markdown(part), "",
                  separability_markdown(part), ""]
        for name in figures:
            if not task or name.endswith(f"_{task}"):
                lines += [f"![{name}]({name}.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
