"""Training precision (vlmzoo.training.precision): bf16 mixed precision through torch's CPU autocast, the same
path as a step written by hand under torch.autocast, float32 master weights and optimizer state."""
import pytest
import torch

import vlmzoo
from vlmzoo.cli import build_parser
from vlmzoo.data import make_task
from vlmzoo.study.compare import compare
from vlmzoo.training.precision import PRECISIONS, autocast, cpu_multiplies_bf16, resolve_precision
from vlmzoo.training.train import _batches, task_overrides, train

BATCH = 8


@pytest.fixture(scope="module")
def task():
    return make_task("shapes", seed=0, n_train=64, n_val=0, n_test=16)


def tiny_model(task, preset="llava-1.5-tiny"):
    config = vlmzoo.resolve_config(preset)
    torch.manual_seed(0)
    return vlmzoo.build(config, **task_overrides(config, task.tokenizer))


def test_auto_follows_the_cpu_and_a_bad_name_is_refused():
    assert resolve_precision("auto") == ("bf16" if cpu_multiplies_bf16() else "float32")
    assert [resolve_precision(p) for p in ("float32", "bf16")] == ["float32", "bf16"]
    with pytest.raises(ValueError, match=r"precision must be one of 'float32', 'bf16', 'auto', got 'fp16'"):
        resolve_precision("fp16")
    assert set(PRECISIONS) == {"float32", "bf16", "auto"}


@pytest.mark.parametrize("preset", ["llava-1.5-tiny", "blip2-opt-tiny", "flamingo-tiny", "fuyu-tiny"])
def test_autocast_reaches_the_cpp_forward(task, preset):
    # The C++ forward's products run in bfloat16 under autocast: logits move by bf16 rounding, not more.
    model = tiny_model(task, preset).eval()
    batch = next(_batches(task, model, BATCH, 0, 0, 0.0))
    with torch.no_grad():
        exact = model(**batch).logits
        with autocast("bf16"):
            rounded = model(**batch).logits
    difference = (exact - rounded.float()).abs().max().item()
    assert 1e-5 < difference < 0.1 * exact.abs().max().item()


def test_bf16_training_equals_a_hand_written_autocast_step_and_keeps_float32_state(task):
    model = tiny_model(task)
    by_hand = tiny_model(task)
    by_hand.load_state_dict(model.state_dict())
    batch = next(_batches(task, by_hand, BATCH, 0, 0, 0.0))
    by_hand.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = by_hand(**batch).loss.item()

    result = train(model, task, 12, batch_size=BATCH, lr=2e-3, trainable="all", precision="bf16", progress=False)
    assert result.extra["precision"] == "bf16"
    assert result.losses[0] == pytest.approx(expected, abs=1e-6)
    assert sum(result.losses[-3:]) / 3 < 0.5 * result.losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())

    float32 = tiny_model(task)
    reference = train(float32, task, 1, batch_size=BATCH, lr=2e-3, trainable="all", progress=False)
    assert reference.extra["precision"] == "float32"
    assert reference.losses[0] != result.losses[0]  # bf16 really ran...
    assert reference.losses[0] == pytest.approx(result.losses[0], rel=1e-2)  # ...and stayed close


def test_compare_trains_in_the_chosen_precision_and_keeps_the_runs_apart(tmp_path):
    sizes = {"n_train": 64, "n_test": 16}
    kwargs = dict(budget=3, seeds=[0], task_sizes=sizes, curve_points=0, progress=False, workers=1, isolate=False,
                  print_table=False, out=tmp_path)
    bf16 = compare(["beit3-tiny", "llava-1.5-tiny"], precision="bf16", **kwargs)
    assert list(bf16.table["precision"]) == ["bf16", "bf16"]
    assert "bf16 training" in bf16.report.read_text()
    # float32 runs are other runs: resume does not reuse the bf16 ones
    float32 = compare(["llava-1.5-tiny"], resume=True, **kwargs)
    assert float32.table.attrs["runs_reused"] == 0 and list(float32.table["precision"]) == ["float32"]


def test_the_cli_takes_the_precision():
    args = build_parser().parse_args(["compare", "--precision", "bf16"])
    assert args.precision == "bf16"
    assert build_parser().parse_args(["compare"]).precision == "float32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compare", "--precision", "half"])
