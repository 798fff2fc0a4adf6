"""Specifications of the `vlmzoo` command: tables on success, one clear line and exit 2 on user errors."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vlmzoo.cli import main

PYTHON_DIR = Path(__file__).resolve().parents[2] / "python"


def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYTHON_DIR), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "vlmzoo", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["info", "nope"], "unknown preset 'nope'"),
        (["compare", "--task", "bogus"], "invalid choice: 'bogus'"),
        (["compare", "no-such-model"], "unknown preset 'no-such-model'"),
        (["generate", "nope"], "unknown preset 'nope'"),
    ],
)
def test_user_errors_print_one_clear_line_and_exit_2(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"vlmzoo {args[0]}: error:")


def test_info_describes_every_preset_when_none_is_named(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for preset in ("llava-1.5-tiny", "llava-1.5-7b"):
        assert preset in out
    assert "3.89M" in out and "7.06B" in out


def test_generate_answers_about_a_sample_image(capsys):
    assert main(["generate", "llava-1.5-tiny", "--image", "camera", "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "image: camera (64x64)" in out and "answer:" in out


def test_compare_writes_its_results_where_asked(tmp_path, capsys):
    code = main(["compare", "llava-1.5-tiny", "--budget", "1steps", "--n-train", "8", "--n-test", "4",
                 "--batch-size", "4", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    assert list(pd.read_csv(tmp_path / "results.csv")["model"]) == ["llava-1.5-tiny"]
    assert "llava-1.5-tiny" in capsys.readouterr().out
