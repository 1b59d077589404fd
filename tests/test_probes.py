"""The one-off probes in scripts/probes/ stay runnable: each answers --help
(argparse) without a GPU, its first line stating the question it answered,
and none patches a design rule (they build variants through the op seam)."""

import subprocess
import sys
from pathlib import Path

import pytest

PROBES = Path(__file__).resolve().parent.parent / "scripts" / "probes"
NAMES = ["call_overhead", "direct_host_time", "forward_probe", "gpu_gaps", "kernel_probe", "profile_dispatches", "torch_step_probe",
         "torch_step_trace"]


def test_every_probe_is_listed():
    assert sorted(p.stem for p in PROBES.glob("*.py") if p.stem != "variants") == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_probe_answers_help_without_a_gpu(name):
    path = PROBES / f"{name}.py"
    if "import torch" in path.read_text():
        pytest.importorskip("torch")
    done = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and "Question:" in done.stdout


@pytest.mark.parametrize("name", NAMES)
def test_probe_patches_no_design_rule(name):
    text = (PROBES / f"{name}.py").read_text()
    assert "mock" not in text and "setattr(layernorm" not in text and "setattr(rmsnorm" not in text
