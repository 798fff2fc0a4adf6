"""The CPU ops at every instruction set level, not only the best one this machine has.

The CPU kernels are compiled once per instruction set (csrc/ops/cpu/vec.h) and the best copy the CPU
can run is picked at run time (csrc/ops/cpu/dispatch.cpp); VLMZOO_CPU_ISA forces a lower level. Here
a representative subset of test_ops.py runs again in a subprocess per forced level, so the AVX2
kernels are tested on an AVX-512 machine too. The subprocess prints the level its ops run at before
running the tests, and the level is fixed once per process, so a pass cannot come from another level.
"""
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vlmzoo._C

ops = torch.ops.vlmzoo
HERE = Path(__file__).parent
# Forward against the reference for every op (odd sizes, non-contiguous inputs, float32 / bfloat16 /
# float16), attention with masks, GQA, decode over long and split caches and the head dims the
# bf16 GEMM cannot take, and one backward through the fused op.
SUBSET = ("matches_reference or returns_sum or swiglu or promotes or rope_broadcasts or nothing_to_attend or "
          "transposed_projections or head_dims or layer_norm_gradients")
# Reports the level, then runs pytest in the same process.
DRIVER = """
import sys, torch, pytest, vlmzoo._C
print("vlmzoo cpu_isa:", torch.ops.vlmzoo.cpu_isa(), flush=True)
sys.exit(pytest.main(sys.argv[1:]))
"""


def run_python(args, isa, extra_env=None):
    env = dict(os.environ, VLMZOO_CPU_ISA=isa, VLMZOO_TEST_DEVICE="cpu", **(extra_env or {}))
    # The subprocess imports the same vlmzoo as this one (not another installed copy).
    package_root = str(Path(vlmzoo._C.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, *args], cwd=HERE.parent.parent, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("isa", ["avx2", "reference"])
def test_ops_match_the_reference_at_a_forced_level(isa):
    # For avx2, oneDNN (the attention kernel's GEMMs) is held to AVX2 as well, as on an AVX2 CPU.
    extra = {"ONEDNN_MAX_CPU_ISA": "AVX2"} if isa == "avx2" else {}
    proc = run_python(["-c", DRIVER, str(HERE / "test_ops.py"), "-q", "-p", "no:cacheprovider", "-k", SUBSET],
                      isa, extra)
    output = proc.stdout + proc.stderr
    if "lacks" in output and "this CPU" in output:
        pytest.skip(f"this CPU cannot run {isa}")
    assert f"vlmzoo cpu_isa: {isa}\n" in proc.stdout, output[-3000:]
    assert proc.returncode == 0, output[-3000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) >= 200 and "skipped" not in proc.stdout, output[-3000:]


def test_an_unknown_level_is_an_error_naming_the_variable_and_the_levels():
    probe = """
import torch, vlmzoo._C
for call in (lambda: torch.ops.vlmzoo.cpu_isa(),
             lambda: torch.ops.vlmzoo.rms_norm(torch.randn(2, 8), torch.ones(8), 1e-6)):
    try:
        call()
        print("no error")
    except RuntimeError as e:
        print("error:", str(e).splitlines()[0])
"""
    proc = run_python(["-c", probe], "sse9")
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout + proc.stderr
    for line in lines:
        assert line.startswith("error: VLMZOO_CPU_ISA=sse9 is not a CPU level"), line
        assert "expected one of avx512, avx2, baseline, reference" in line and "reference)" in line, line


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


@pytest.mark.skipif("VLMZOO_CPU_ISA" in os.environ, reason="a level is forced")
def test_the_best_level_the_cpu_has_is_picked():
    flags = cpu_flags()
    if flags is None or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 Linux only")
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        expected = "avx512"
    elif {"avx2", "fma", "f16c"} <= flags:
        expected = "avx2"
    else:
        expected = "reference"
    assert ops.cpu_isa() == expected


def test_wide_instructions_stay_in_their_kernel_copies():
    # Inline functions of shared headers (c10, std) compiled inside a kernel copy must not be where the
    # linker takes them from for the whole library; only the copies' own namespaces use AVX / AVX-512.
    if platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None:
        pytest.skip("needs x86-64 and objdump")
    text = subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", vlmzoo._C.__file__], capture_output=True,
                          text=True, check=True).stdout
    if "vlmzoo::ops::cpu::avx2::" not in text:
        pytest.skip("no symbols (stripped build) or no avx2 copy")
    avx512 = re.compile(r"%zmm\d|%k[0-7]\b|%[xy]mm(1[6-9]|2\d|3[01])\b")
    vex = re.compile(r"\tv[a-z0-9]+\b")
    function, wrong = None, {}
    for line in text.splitlines():
        if line.endswith(">:"):
            function = line[line.index("<") + 1 : -2]
        elif function is not None and vex.search(line):
            in_avx512 = "vlmzoo::ops::cpu::avx512::" in function or "at::vec::AVX512::" in function
            in_avx2 = "vlmzoo::ops::cpu::avx2::" in function or "at::vec::AVX2::" in function
            if not in_avx512 and (avx512.search(line) or not in_avx2):
                wrong.setdefault(function, line.strip())
    assert not wrong, "\n".join(f"{f[:200]}: {insn}" for f, insn in list(wrong.items())[:20])
