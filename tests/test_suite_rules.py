"""The suite's own rules: a device named in LNBWD_IREE_TEST_DEVICES that does
not open fails the tests that need it (a broken GPU setup must not run green),
and test modules import helpers from conftest.py or *_helpers.py, never from
each other."""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEVICES_ENV

from lnbwd_iree.runtime import open_device

TESTS = Path(__file__).resolve().parent


def test_a_named_device_that_does_not_open_fails(tmp_path):
    try:
        open_device("hip")
    except RuntimeError:
        pass
    else:
        pytest.skip("this machine has a hip device")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS / "test_cross_backend.py"),
         "-k", "f32 and llvm-cpu-vs-hip"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, DEVICES_ENV: "local-task,hip"},
    )
    assert done.returncode == 1, done.stdout[-2000:]
    assert f"hip is named in {DEVICES_ENV} but does not open" in done.stdout
    assert "1 failed" in done.stdout and "skipped" not in done.stdout


def test_test_modules_do_not_import_each_other():
    for path in TESTS.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.startswith("test_") for n in names), f"{path.name} imports {names}"
