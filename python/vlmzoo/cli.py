"""The `vlmzoo` command: info, compare, generate. User errors print one line and exit 2."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

USAGE_ERROR = 2
INFO_TEXT_TOKENS = 64


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump), still exiting 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def _millions(n: int) -> str:
    return f"{n / 1e6:,.2f}M" if n < 1e9 else f"{n / 1e9:,.2f}B"


def cmd_info(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .compare import wide_console
    from .info import info
    from .presets import presets

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
    wide_console().print(table)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    sizes = {k: v for k, v in (("n_train", args.n_train), ("n_test", args.n_test)) if v is not None}
    compare(args.configs or None, task=args.task, budget=args.budget, out=args.out, seed=args.seed,
            task_sizes=sizes, batch_size=args.batch_size, trainable=args.trainable, progress=not args.quiet)
    print(f"wrote results.csv, loss_curves.csv and PNGs to {args.out}")
    return 0


def _load_for_generate(target: str):
    """(model, tokenizer) for a checkpoint folder or a preset/JSON config (random weights)."""
    import json

    from .loading import from_pretrained
    from .data import WordTokenizer, make_task
    from .model import build
    from .train import TOKENIZER_FILE

    path = Path(target)
    model = from_pretrained(path) if path.is_dir() else build(target)
    if (path / TOKENIZER_FILE).is_file():
        tokenizer = WordTokenizer.from_dict(json.loads((path / TOKENIZER_FILE).read_text()))
    else:  # presets and vlmzoo checkpoints without a tokenizer speak the shapes vocabulary
        tokenizer = make_task("shapes", n_train=0, n_val=0, n_test=0).tokenizer
    if model.visual_tokens_per_image and model.image_token_id != tokenizer.image_id:
        raise ValueError(
            f"{target}: fusion.image_token_id {model.image_token_id} is not the built-in tokenizer's <image> id "
            f"{tokenizer.image_id}; `vlmzoo generate` prompts presets and models trained on built-in tasks"
        )
    return model, tokenizer


def cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .data import build_prompt, images_to_tensor, sample_image
    from .train import normalization

    model, tokenizer = _load_for_generate(args.model)
    image_size = model.config["vision"].get("image_size", 224)
    image = sample_image(args.image, size=image_size)
    mean, std = normalization(model.config)
    prompt = build_prompt(tokenizer, args.prompt, model.visual_tokens_per_image)
    input_ids = torch.tensor([prompt])
    with torch.no_grad():
        output = model.eval().generate(
            input_ids=input_ids, pixel_values=images_to_tensor([image], image_size, mean, std),
            attention_mask=torch.ones_like(input_ids), max_new_tokens=args.max_new_tokens,
            eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id,
        )
    new_tokens = output[0, len(prompt):].tolist()
    answer = new_tokens[: new_tokens.index(tokenizer.eos_id)] if tokenizer.eos_id in new_tokens else new_tokens
    print(f"model: {model.name} ({model.num_parameters():,} parameters)")
    print(f"image: {args.image} ({image_size}x{image_size})")
    print(f"prompt: {args.prompt}")
    print(f"answer: {tokenizer.decode(answer, skip_special=False)}")  # untrained models say <unk>: show it
    print(f"token ids: {new_tokens}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .compare import DEFAULT_BUDGET, DEFAULT_TASK_SIZES, DEFAULT_TRAIN
    from .data import SAMPLE_IMAGE_NAMES, TASKS
    from .data.tasks import CAPTION_QUESTION

    parser = _Parser(prog="vlmzoo", description="vision-language models assembled in C++ from JSON configs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    info = sub.add_parser("info", help="parameters, visual tokens and FLOPs of presets or config files")
    info.add_argument("configs", nargs="*", metavar="CONFIG", help="preset names or JSON paths (default: all presets)")
    info.add_argument("--text-tokens", type=int, default=INFO_TEXT_TOKENS, help="text tokens for the FLOPs")
    info.set_defaults(run=cmd_info)

    compare = sub.add_parser("compare", help="train and evaluate models on the same task and budget")
    compare.add_argument("configs", nargs="*", metavar="CONFIG",
                         help="preset names or JSON paths (default: the tiny LLaVA and its one-slot variants)")
    compare.add_argument("--task", choices=sorted(TASKS), default="shapes")
    compare.add_argument("--budget", default=DEFAULT_BUDGET,
                         help=f"steps (300, 300steps) or training FLOPs (default {DEFAULT_BUDGET})")
    compare.add_argument("--out", default="vlmzoo-compare", help="folder for results.csv and the PNGs")
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--trainable", default=DEFAULT_TRAIN["trainable"],
                         help="projector+llm (default), all, family, or one slot")
    compare.add_argument("--batch-size", type=int, default=DEFAULT_TRAIN["batch_size"])
    compare.add_argument("--n-train", type=int, default=None,
                         help=f"training questions (default {DEFAULT_TASK_SIZES['n_train']})")
    compare.add_argument("--n-test", type=int, default=None,
                         help=f"held-out questions (default {DEFAULT_TASK_SIZES['n_test']})")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(run=cmd_compare)

    generate = sub.add_parser("generate", help="answer a prompt about a bundled sample image")
    generate.add_argument("model", metavar="MODEL", help="a checkpoint folder, a preset name or a JSON path")
    generate.add_argument("--image", choices=SAMPLE_IMAGE_NAMES, default="astronaut", metavar="NAME",
                          help=f"a scikit-image sample: {', '.join(SAMPLE_IMAGE_NAMES)}")
    generate.add_argument("--prompt", default=CAPTION_QUESTION)
    generate.add_argument("--max-new-tokens", type=int, default=16)
    generate.set_defaults(run=cmd_generate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, KeyError) as error:
        if os.environ.get("VLMZOO_DEBUG"):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"vlmzoo {args.command}: error: {message}", file=sys.stderr)
        return USAGE_ERROR
