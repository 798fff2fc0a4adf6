"""The `vlmzoo` command: info, compare, pretrain, generate. User errors print one line and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import skimage.data
import torch
from PIL import Image
from rich.table import Table

from vlmzoo.config.paths import folder_problem, looks_like_path, why_missing
from vlmzoo.config.presets import presets
from vlmzoo.config.towers import DEFAULT_PRETRAIN_BUDGET, TOWERS, tower
from vlmzoo.data import SAMPLE_IMAGE_NAMES, TASKS
from vlmzoo.data.tasks import CAPTION_QUESTION
from vlmzoo.families import AutoProcessor, LlavaProcessor, from_pretrained, load_image_file
from vlmzoo.models.info import info
from vlmzoo.study import compare as study  # called through the module: a test stands in for compare
from vlmzoo.study.compare import (DEFAULT_BUDGET, DEFAULT_CURVE_POINTS, DEFAULT_SEEDS, DEFAULT_TASK,
                                  DEFAULT_TASK_SIZES, FULL_BUDGET, FULL_SEEDS, FULL_TASKS, default_configs,
                                  wide_console)
from vlmzoo.study.executors import DEFAULT_WORKERS, EXECUTORS, MissingExtraError
from vlmzoo.training.precision import PRECISIONS
from vlmzoo.training.pretraining import pretrain
from vlmzoo.training.recipes import DEFAULT_RECIPE, RECIPES
from vlmzoo.training.rows import build

USAGE_ERROR = 2
INFO_TEXT_TOKENS = 64


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump), still exiting 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _millions(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n < 1e9 else f"{n / 1e9:,.2f}B"


def cmd_info(args: argparse.Namespace) -> int:
    names = args.configs or presets()
    rows = [info(name, text_tokens=args.text_tokens) for name in names]  # resolve all first: errors before output
    table = Table(title=f"vlmzoo info (forward FLOPs: 1 image + {args.text_tokens} text tokens)")
    for header in ("model", "family", "params", "vision", "abstractor", "llm", "vis tok/img", "fwd GFLOPs"):
        table.add_column(header, justify="left" if header in ("model", "family") else "right")
    for name, row in zip(names, rows):
        p = row["parameters"]
        table.add_row(
            str(row["name"] or name), row["family"], _millions(p["total"]), _millions(p["vision"]),
            _millions(p["abstractor"]), _millions(p["llm"]), str(row["visual_tokens_per_image"]),
            f"{row['forward_flops']['total'] / 1e9:,.2f}",
        )
    console = wide_console()
    console.print(table)
    for name, row in zip(names, rows):
        for slot, record in row["sources"].items():  # where each slot taken from elsewhere comes from
            at = f" at revision {record['revision']}" if "revision" in record else ""
            console.print(f"{row['name'] or name}: {slot} from {record['from']}{at}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v is not None}
    seeds = args.seeds if args.seeds is not None else (FULL_SEEDS if args.full else DEFAULT_SEEDS)
    configs = args.configs or (default_configs(full=True) if args.full else None)
    budget = args.budget or (FULL_BUDGET if args.full else DEFAULT_BUDGET)
    comparison = study.compare(configs, task=list(FULL_TASKS) if args.full else args.task, budget=budget,
                               out=args.out, seed=args.seed, seeds=seeds, task_sizes=sizes, recipe=args.recipe,
                               batch_size=args.batch_size, trainable=args.trainable, precision=args.precision,
                               curve_points=args.curve_points,
                               count_pretraining=args.count_pretraining, resume=args.resume, workers=args.workers,
                               threads=args.threads, executor=args.executor, address=args.address,
                               progress=not args.quiet)
    attrs = comparison.table.attrs
    print(f"{attrs['runs_trained']} runs trained, {attrs['runs_reused']} reused, {attrs['wall_time_s']:.0f} s; "
          f"wrote report.md, results.csv (per seed), summary.csv, learning_curves.csv and PNGs to {args.out}")
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    if args.tower:
        t = tower(args.tower, "--tower")
        config, task, budget, seed = t.preset, t.task, t.budget, t.seed
    else:
        config, task, budget, seed = args.config, args.task, args.budget, args.seed
    result = pretrain(config, task, budget, seed, cache=not args.no_cache, progress=not args.quiet)
    where = f"cached in {result.cache_folder}" + (" (reused)" if result.from_cache else "") if result.cache_folder else "not cached"
    print(f"pretrained {result.model.name} on {task} ({result.objective}, {result.steps} steps, "
          f"{result.pretraining_flops / 1e12:,.2f} TFLOPs), {where}")
    for name, value in result.metrics.items():
        print(f"  {name}: {value:.4f}" if isinstance(value, float) else f"  {name}: {value}")
    return 0


def _load_for_generate(target: str):
    """(model, processor) for a checkpoint folder (Hugging Face, or vlmzoo's with its word tokenizer)
    or a preset/JSON config (random weights, the built-in shapes vocabulary)."""
    path = Path(target).expanduser()
    if not path.exists() and looks_like_path(target):
        raise FileNotFoundError(f"MODEL {target!r} is neither a checkpoint folder nor a JSON config: it does not "
                                f"exist: {why_missing(path)}")
    if path.is_file() and path.suffix != ".json":
        raise FileNotFoundError(folder_problem(path, "MODEL"))
    model = from_pretrained(path) if path.is_dir() else build(target)
    processor = AutoProcessor.from_pretrained(target)
    image_token_id = getattr(processor, "image_token_id", None)
    if model.visual_tokens_per_image and image_token_id is not None and image_token_id != model.image_token_id:
        raise ValueError(
            f"{target}: the model's fusion.image_token_id is {model.image_token_id} but the processor's image token "
            f"{getattr(processor, 'image_token', '?')!r} has id {image_token_id}"
        )
    return model, processor


def _open_image(image: str):
    """A PIL image from a file path or the name of a bundled scikit-image sample (full size)."""
    if Path(image).is_file():
        return load_image_file(image)
    if image in SAMPLE_IMAGE_NAMES:
        return Image.fromarray(np.asarray(getattr(skimage.data, image)())).convert("RGB")
    raise FileNotFoundError(f"--image {image!r} is neither an image file nor a bundled sample "
                            f"({', '.join(SAMPLE_IMAGE_NAMES)})")


def _prompt_text(processor, prompt: str) -> str:
    """The text the model reads: the folder's chat template around an image and the prompt when it
    has one, else the prompt with the image placeholder put first (unless the prompt places it)."""
    image_token = getattr(processor, "image_token", None)
    if image_token is None or image_token in prompt:
        return prompt
    if getattr(processor, "chat_template", None):
        chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(chat, add_generation_prompt=True)
    return f"{image_token}\n{prompt}" if isinstance(processor, LlavaProcessor) else prompt


def _sampling(args: argparse.Namespace) -> dict:
    """generate's sampling options: greedy unless --do-sample or a sampling option is given."""
    options = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p))
               if v is not None}
    if not (args.do_sample or options):
        return {}
    return {"do_sample": True, "seed": args.seed, **options}


def cmd_generate(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)  # a preset's random weights too: the same command, the same answer
    model, processor = _load_for_generate(args.model)
    if args.quantize:
        model.quantize(args.quantize)
    image = _open_image(args.image)
    text = _prompt_text(processor, args.prompt)
    inputs = processor(images=image, text=text, return_tensors="pt")
    placed = int((inputs["input_ids"] == model.image_token_id).sum())
    patches = inputs.get("image_patches")  # Fuyu: one token per patch of the image at its own size
    if model.visual_tokens_per_image and patches is None and placed != model.visual_tokens_per_image:
        raise ValueError(
            f"{args.model}: the processor puts {placed} image tokens for the image but the model makes "
            f"{model.visual_tokens_per_image} visual tokens per image (check patch_size, "
            "vision_feature_select_strategy and num_additional_image_tokens in processor_config.json)"
        )
    eos = processor.eos_token_id
    pad = processor.pad_token_id
    with torch.no_grad():
        output = model.eval().generate(
            input_ids=inputs["input_ids"],
            **({"image_patches": patches.to(model.dtype)} if patches is not None
               else {"pixel_values": inputs["pixel_values"].to(model.dtype)}),
            attention_mask=inputs["attention_mask"], max_new_tokens=args.max_new_tokens,
            eos_token_id=eos, pad_token_id=pad, no_repeat_ngram_size=args.no_repeat_ngram_size,
            repetition_penalty=args.repetition_penalty, **_sampling(args),
            # InstructBLIP's processor also tokenizes the instruction for the Q-Former.
            **{k: inputs[k] for k in ("qformer_input_ids", "qformer_attention_mask") if k in inputs},
        )
    new_tokens = output[0, inputs["input_ids"].shape[1]:].tolist()
    answer = new_tokens[: new_tokens.index(eos)] if eos in new_tokens else new_tokens
    shown = f"{patches.shape[0]} patches" if patches is not None else "{1}x{0}".format(*inputs["pixel_values"].shape[-2:])
    quantized = f", linear layers in {args.quantize}" if args.quantize else ""
    print(f"model: {model.name} ({model.num_parameters():,} parameters{quantized})")
    print(f"processor: {type(processor).__name__} ({type(processor.tokenizer).__name__}, {len(processor.tokenizer)} tokens)")
    print(f"image: {args.image} ({image.width}x{image.height} -> {shown})")
    print(f"prompt: {text!r}")
    # Special tokens are shown: an untrained model's <unk> should be visible, not an empty answer.
    print(f"answer: {processor.decode(answer, skip_special_tokens=False)}")
    print(f"token ids: {new_tokens}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vlmzoo", description="vision-language models assembled in C++ from JSON configs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = sub.add_parser("info", help="parameters, visual tokens and FLOPs of presets or config files")
    info.add_argument("configs", nargs="*", metavar="CONFIG", help="preset names or JSON paths (default: all presets)")
    info.add_argument("--text-tokens", type=int, default=INFO_TEXT_TOKENS, help="text tokens for the FLOPs")
    info.set_defaults(run=cmd_info)

    compare = sub.add_parser("compare", help="train and evaluate models on the same task and budget")
    compare.add_argument("configs", nargs="*", metavar="CONFIG",
                         help="preset names or JSON paths (default: the micro LLaVA, its one-slot variants, the micro BLIP-2)")
    compare.add_argument("--task", choices=sorted(TASKS), default=DEFAULT_TASK)
    compare.add_argument("--full", action="store_true",
                         help=f"the whole study: tasks {', '.join(FULL_TASKS)}, {FULL_SEEDS} seeds (unless --seeds) and, "
                              "without CONFIGs, the tiny presets and llava-micro/lora (its LM trained with LoRA) beside the default set")
    compare.add_argument("--seeds", type=int, default=None,
                         help=f"seeds per model: --seed, --seed+1, ... (default {DEFAULT_SEEDS}; {FULL_SEEDS} with --full)")
    compare.add_argument("--curve-points", type=int, default=DEFAULT_CURVE_POINTS,
                         help="accuracy measurements per run, evenly spaced in training FLOPs (0: none)")
    compare.add_argument("--count-pretraining", action="store_true",
                         help="charge each model's tower pretraining FLOPs to its budget (it trains fewer steps)")
    compare.add_argument("--resume", action="store_true",
                         help="reuse the runs already finished in --out (same settings), train the rest")
    compare.add_argument("--executor", choices=EXECUTORS, default="local",
                         help="where runs run: local worker processes, or one Ray task per run (pip install "
                              "'vlmzoo[ray]'); results, files and --resume are the same")
    compare.add_argument("--address", default=None, metavar="ADDR",
                         help="with --executor ray: the cluster to join ('auto', 'HEAD:6379', 'ray://HEAD:10001'); "
                              "default RAY_ADDRESS, else Ray starts on this machine")
    compare.add_argument("--workers", type=int, default=None,
                         help=f"local: models trained at once, one process each with --threads threads (default "
                              f"{DEFAULT_WORKERS}); ray: runs submitted at once (default all)")
    compare.add_argument("--threads", type=int, default=None,
                         help="torch threads per worker (default: the CPU cores shared out between the workers); "
                              "ray: the CPUs each run asks for (default 1)")
    compare.add_argument("--budget", default=None,
                         help=f"steps (300, 300steps) or training FLOPs (default {DEFAULT_BUDGET}; {FULL_BUDGET} with --full)")
    compare.add_argument("--out", default="vlmzoo-compare", help="folder for results.csv and the PNGs")
    compare.add_argument("--seed", type=int, default=0, help="first seed")
    compare.add_argument("--recipe", default=None,
                         help=f"training recipe of vlmzoo.recipes: {', '.join(RECIPES['llava'])} (default: each model's "
                              f"own, {DEFAULT_RECIPE!r} or 'pretrained' when its vision slot comes from a tower)")
    compare.add_argument("--trainable", default=None,
                         help="override the recipe's trainable slots: projector+llm, all, family, or one slot")
    compare.add_argument("--precision", choices=PRECISIONS, default="float32",
                         help="training precision: float32, bf16 (bfloat16 products under CPU autocast, float32 master "
                              "weights) or auto (bf16 where the CPU has AMX-BF16 or AVX512-BF16); evaluation is float32")
    compare.add_argument("--batch-size", type=int, default=None, help="override the recipe's batch size (32)")
    compare.add_argument("--n-train", type=int, default=None,
                         help=f"training questions (default {DEFAULT_TASK_SIZES['n_train']})")
    compare.add_argument("--n-test", type=int, default=None,
                         help=f"held-out questions (default {DEFAULT_TASK_SIZES['n_test']})")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(run=cmd_compare)


    pretrain = sub.add_parser("pretrain", help="pretrain a tiny CLIP/SigLIP or language model on a task (cached)")
    pretrain.add_argument("config", nargs="?", default="clip-tiny", metavar="CONFIG",
                          help="a dual encoder (clip-tiny, siglip-tiny: image-caption pairs) or a decoder preset "
                               "(llava-1.5-tiny: its language model on the task's text); default clip-tiny")
    pretrain.add_argument("--tower", choices=sorted(TOWERS), default=None,
                          help="pretrain a named tower (what a slot {\"from\": NAME} loads) instead")
    pretrain.add_argument("--task", choices=sorted(TASKS), default="shapes")
    pretrain.add_argument("--budget", default=DEFAULT_PRETRAIN_BUDGET,
                          help=f"optimizer steps (default {DEFAULT_PRETRAIN_BUDGET}, as vlmzoo.pretrain's)")
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--no-cache", action="store_true", help="train without reading or writing the cache")
    pretrain.add_argument("--quiet", action="store_true", help="no progress bar")
    pretrain.set_defaults(run=cmd_pretrain)

    generate = sub.add_parser("generate", help="answer a prompt about an image")
    generate.add_argument("model", metavar="MODEL",
                          help="a checkpoint folder (Hugging Face or vlmzoo), a preset name or a JSON path")
    generate.add_argument("--image", default="astronaut", metavar="PATH",
                          help=f"an image file, or a bundled scikit-image sample: {', '.join(SAMPLE_IMAGE_NAMES)}")
    generate.add_argument("--prompt", default=CAPTION_QUESTION)
    generate.add_argument("--max-new-tokens", type=int, default=16)
    generate.add_argument("--no-repeat-ngram-size", type=int, default=0, metavar="N",
                          help="no n-gram of N tokens occurs twice (transformers' no_repeat_ngram_size)")
    generate.add_argument("--repetition-penalty", type=float, default=1.0, metavar="P")
    generate.add_argument("--do-sample", action="store_true",
                          help="sample the next token instead of the greedy pick (implied by the three options below)")
    generate.add_argument("--temperature", type=float, default=None, metavar="T", help="sampling temperature (1.0)")
    generate.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K likeliest tokens")
    generate.add_argument("--top-p", type=float, default=None, metavar="P",
                          help="sample among the likeliest tokens whose probabilities sum to P")
    generate.add_argument("--seed", type=int, default=0, help="the seed of sampling and of a preset's random weights (the same seed, the same answer)")
    generate.add_argument("--quantize", choices=("bf16", "int8"), default=None,
                          help="linear layers in bf16 storage or int8 (vlmzoo/quantize.py) before generating")
    generate.set_defaults(run=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError, MissingExtraError) as error:
        if os.environ.get("VLMZOO_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"vlmzoo {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
