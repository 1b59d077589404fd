"""RMSNorm in the command line: run --op, compile --op, bench --norm."""

import json

import pytest
from conftest import bench_args

from lnbwd_iree import bench, cache
from lnbwd_iree.cli import main


@pytest.fixture(autouse=True)
def session_cache(cache_dir, monkeypatch):
    monkeypatch.setenv(cache.CACHE_ENV, cache_dir)


def test_run_op_rmsnorm_verifies_and_times(capsys):
    assert main(["run", "1", "2", "1", "--op", "rmsnorm", "--m", "64", "--n", "200", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("rmsnorm2d_bwd M=64 N=200") and "PASS" in out and "FAIL" not in out
    assert "dbeta" not in out and "dgamma" in out and "median" in out


def test_compile_op_builds_only_that_op(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path), "--target", "vmvx-generic", "--dtype", "f32", "--op", "rmsnorm"]) == 0
    names = sorted(p.name for p in tmp_path.glob("*.vmfb"))
    assert names == ["rmsnorm_backward_DxDxf32_vmvx-generic.vmfb", "rmsnorm_forward_DxDxf32_vmvx-generic.vmfb"]


def test_bench_norm_rmsnorm(tmp_path):
    assert main(bench_args(tmp_path, "--norm", "rmsnorm", "--op", "both", "--impl", "iree_static", "--impl", "numpy")) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["results"]
    assert {(r["impl"], r["op"]) for r in rows} == {
        (i, op) for i in ("iree_static", "numpy") for op in ("rmsnorm_backward", "rmsnorm_forward")}
    for r in rows:
        assert r["correct"] and r["median_us"] > 0
        assert r["gbps"] == pytest.approx(bench.bytes_moved(r["m"], r["n"], r["dtype"], r["op"]) / r["median_us"] / 1e3)
    assert "## rmsnorm_backward" in (tmp_path / "out.md").read_text()


def test_bytes_moved_from_the_entry_roles():
    m, n = 8192, 4096
    assert bench.bytes_moved(m, n, "bf16", "rmsnorm_backward") == 3 * m * n * 2 + 2 * n * 2 + m * 4
    assert bench.bytes_moved(m, n, "f32", "rmsnorm_forward") == 2 * m * n * 4 + n * 4 + m * 4
