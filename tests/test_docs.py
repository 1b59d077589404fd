"""The README's commands: the test command is the one CI runs, and the others run as written."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command():
    ci_command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Test it", 1)[1]
    assert f"```bash\n{ci_command}\n```" in section


def code_blocks(language: str) -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return [block.split("```", 1)[0] for block in readme.split(f"```{language}\n")[1:]]


def test_readme_shell_commands_run_from_the_venv_without_activation():
    commands = [line for block in code_blocks("bash") for line in block.splitlines() if line.strip()]
    assert commands and all(line.startswith(("python3 -m venv .venv && ", ".venv/bin/")) for line in commands), commands


@pytest.mark.parametrize("index, needs", [(0, "lnbwd_iree.layernorm_backward"), (1, "lnbwd_iree.torch")],
                         ids=["numpy", "torch"])
def test_readme_python_examples_run_as_written_and_print_one_line(index, needs, cache_dir):
    example = code_blocks("python")[index]
    assert needs in example
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          env={**os.environ, "LNBWD_IREE_CACHE": cache_dir})
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and done.stdout.strip(), done.stdout


def test_readme_pytorch_section_installs_torch_as_pyproject_says():
    assert '(README, "PyTorch")' in (ROOT / "pyproject.toml").read_text()
    section = (ROOT / "README.md").read_text().split("## PyTorch", 1)[1]
    assert ".venv/bin/pip install -q torch " in section and ".venv/bin/pip install -q -e '.[torch]'" in section
