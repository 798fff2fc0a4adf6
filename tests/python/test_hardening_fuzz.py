"""Bounded fuzzing of untrusted inputs (tests/fuzz/): configs through vlmzoo._C.resolve_config, and
mutated safetensors / torch checkpoint files through read_safetensors_folder + load_into. Each
harness runs in a child process for VLMZOO_FUZZ_SECONDS (default 30 for configs, half that per
checkpoint format); a crash, hang, memory blow-up or wrong exception type fails the test, with the
input that did it left in the test's tmp folder. The tail holds the bugs the fuzzer found, fixed,
as regression tests."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import vlmzoo
from vlmzoo import _C

pytest.importorskip("atheris")
pytestmark = pytest.mark.fuzz

FUZZ = Path(__file__).resolve().parent.parent / "fuzz"
SECONDS = float(os.environ.get("VLMZOO_FUZZ_SECONDS", "30"))


def run_harness(tmp_path, script, seconds, corpus, *extra):
    """Runs a harness; returns its stats. The package is the one this test imported (plain or sanitized)."""
    stats, new, artifacts = tmp_path / "stats.json", tmp_path / "new", tmp_path / "artifacts"
    new.mkdir()
    artifacts.mkdir()
    env = {**os.environ, "PYTHONPATH": str(Path(vlmzoo.__file__).parent.parent), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(FUZZ / script), "--seconds", str(seconds), "--stats", str(stats), *extra,
           "-timeout=60", "-rss_limit_mb=4096", "-max_len=1048576", f"-artifact_prefix={artifacts}/",
           str(new), str(FUZZ / "corpus" / corpus)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 300)
    if done.returncode != 0 or not stats.exists():
        found = sorted(str(p) for p in artifacts.iterdir())
        pytest.fail(f"{script} failed (exit {done.returncode}); inputs that did it: {found}\n{done.stdout[-3000:]}"
                    f"\n{done.stderr[-6000:]}")
    report = json.loads(stats.read_text())
    print(f"\n{script} {' '.join(extra)}: {json.dumps(report, indent=1)[:4000]}")
    return report


def every_registered_kind():
    return {f"{slot}={kind}" for slot in _C.slot_names() for kind in _C.registered_kinds(slot)}


def test_the_config_corpus_holds_every_registered_kind():
    """The fuzzer starts from seeds that build every kind of every slot (configs/**/*.json and
    tests/fuzz/corpus/config): a kind registered without a seed fails here."""
    sys.path.insert(0, str(FUZZ))
    from fuzz_config import seed_texts

    seeded = set()
    for text in seed_texts():
        try:
            resolved = json.loads(_C.resolve_config(text))
        except ValueError:  # configs/families/*.json are family data, not configs
            continue
        seeded |= {f"{slot}={part['kind']}" for slot, part in resolved.items() if isinstance(part, dict) and "kind" in part}
    assert every_registered_kind() - seeded == set()


def test_config_fuzzing_gives_a_config_or_a_value_error(tmp_path):
    report = run_harness(tmp_path, "fuzz_config.py", SECONDS, "config")
    outcomes = report["outcomes"]
    assert report["executions"] >= 100
    # The mutator reaches both sides of the checks, and some inputs far enough to build a model of
    # each assembly, with every registered kind among the models built.
    assert outcomes["resolved"] > 0 and outcomes["ValueError"] > 0
    assert outcomes.get("built decoder", 0) > 0 and outcomes.get("built dual_encoder", 0) > 0
    assert outcomes.get("built multiway_encoder", 0) > 0
    assert every_registered_kind() - set(report["built_kinds"]) == set()


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_checkpoint_fuzzing_gives_tensors_or_an_error_naming_the_file(tmp_path, fmt):
    report = run_harness(tmp_path, "fuzz_checkpoint.py", SECONDS / 2, fmt, "--format", fmt)
    outcomes = report["outcomes"]
    assert report["executions"] >= 50
    assert outcomes["file ValueError"] > 0 and outcomes["file loaded"] > 0
    assert outcomes.get("tensors ValueError", 0) + outcomes.get("tensors KeyError", 0) > 0


# ---- found by the config fuzzer, fixed in csrc/config/json_reader.cpp
TINY = json.loads((Path(__file__).resolve().parent.parent.parent / "configs" / "tiny" / "llava-1.5-tiny.json").read_text())


def with_llm(**fields):
    return json.dumps({**TINY, "llm": {**TINY["llm"], **fields}})


@pytest.mark.parametrize("value", [2**32 + 512, -(2**31) - 1, 2**63, 1e300])
def test_integers_outside_int32_are_refused_naming_the_value(value):
    with pytest.raises(ValueError, match=re.escape(f"llm.vocab: {json.dumps(value)}")):
        _C.resolve_config(with_llm(vocab=value))


def test_a_number_beyond_double_range_is_a_value_error():
    with pytest.raises(ValueError):
        _C.resolve_config(with_llm(vocab=1).replace('"vocab": 1', '"vocab": 1e400'))
