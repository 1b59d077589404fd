"""The README's commands: the test command is the one CI runs, and the others run as written."""

import os
import subprocess
import sys
from pathlib import Path

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


def test_readme_numpy_example_runs_as_written(cache_dir):
    example = code_blocks("python")[0]
    assert "lnbwd_iree.layernorm_backward" in example
    done = subprocess.run([sys.executable, "-c", example], capture_output=True, text=True,
                          env={**os.environ, "LNBWD_IREE_CACHE": cache_dir})
    assert done.returncode == 0, done.stderr
