"""The README's Python code runs as written: every ```python block, in order, in a fresh interpreter
started in an empty folder (so it reads nothing from the repository but the installed package)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


def test_the_readme_has_python_to_run():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert blocks and all("vlmzoo" in block for block in blocks)


def test_the_readme_python_runs_as_written(tmp_path):
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(python_blocks((ROOT / "README.md").read_text())))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_readme_prompts_use_only_words_of_the_built_in_vocabulary():
    from vlmzoo.data import make_task

    tokenizer = make_task("shapes", n_train=0, n_val=0, n_test=0).tokenizer
    prompts = re.findall(r'text="([^"]*)"', "\n".join(python_blocks((ROOT / "README.md").read_text())))
    assert prompts
    for prompt in prompts:
        assert tokenizer.covers(prompt), (prompt, [w for w in prompt.split() if not tokenizer.covers(w)])


def test_the_readme_says_how_to_torch_load_a_pickled_model_and_it_is_so(tmp_path):
    import pytest
    import torch

    import vlmzoo

    assert "torch.load(path, weights_only=False)" in (ROOT / "README.md").read_text()
    model = vlmzoo.build("llava-1.5-micro")
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(Exception, match="weights_only"):
        torch.load(tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
