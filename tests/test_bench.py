"""lnbwd-iree bench on the host CPU with tiny shapes: records, the float64
guard, --impl validation, output files. No timing is asserted."""

import json

import numpy as np
import pytest
from conftest import bench_args

from lnbwd_iree import bench
from lnbwd_iree.bench import peers, runner, timing
from lnbwd_iree.cli import main

RECORD_KEYS = {"impl", "op", "m", "n", "dtype", "median_us", "gbps", "pct_of_copy", "build", "correct",
               "max_rel_error", "input_sets", "rotated_beyond_2x_l2"}


def test_backward_and_forward_records(tmp_path, capsys):
    assert main(bench_args(tmp_path, "--op", "both", "--impl", "iree_static", "--impl", "numpy",
                           "--dtype", "bf16")) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert {"device", "iree_version", "date", "copy_gbps", "results"} <= set(report)
    assert report["copy_gbps"] > 0 and report["l2_bytes"] == 4096
    rows = report["results"]
    got = {(r["impl"], r["op"], r["dtype"]) for r in rows}
    assert got == {(i, op, d) for i in ("iree_static", "numpy") for op in ("backward", "forward") for d in ("f32", "bf16")}
    for r in rows:
        assert RECORD_KEYS <= set(r)
        assert (r["m"], r["n"]) == (16, 24)
        assert r["correct"] and r["max_rel_error"] <= r["tolerance"]
        assert r["median_us"] > 0 and r["gbps"] > 0 and r["pct_of_copy"] > 0
        assert r["rotated_beyond_2x_l2"] and r["rotated_bytes"] > 2 * 4096
        moved = bench.bytes_moved(16, 24, r["dtype"], r["op"])
        assert r["gbps"] == pytest.approx(moved / r["median_us"] / 1e3)
    builds = {r["impl"]: r["build"] for r in rows}
    assert "specialised" in builds["iree_static"] and "NumPy" in builds["numpy"]
    md = (tmp_path / "out.md").read_text()
    assert "## backward" in md and "## forward" in md
    # Every table row has as many cells as its header.
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in tables}) == 1
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'out.json'}" in out


def test_torch_compile_reports_the_faster_build(tmp_path):
    pytest.importorskip("torch")
    assert main(bench_args(tmp_path, "--impl", "torch_compile", "--impl", "torch_eager")) == 0
    rows = {r["impl"]: r for r in json.loads((tmp_path / "out.json").read_text())["results"]}
    compiled = rows["torch_compile"]
    assert "dynamic=False" in compiled["build"] and compiled["compile_s"] > 0
    variants = {v["build"]: v["median_us"] for v in compiled["alternatives"]}
    assert len(variants) == 2 and any("aten.native_layer_norm_backward" in b for b in variants)
    assert compiled["median_us"] == min(variants.values()) == variants[compiled["build"]]
    low, high = compiled["trial_range_us"]
    assert low <= compiled["median_us"] <= high
    assert "native_layer_norm_backward" in rows["torch_eager"]["build"]


def test_wrong_implementation_is_reported_not_timed(tmp_path, monkeypatch, capsys):
    original = peers.numpy_math

    def off_by_a_percent(case):
        math = original(case)

        def call(*inputs):
            dx, *rest = math(*inputs)
            return dx * np.float32(1.01), *rest

        return call

    monkeypatch.setattr(peers, "numpy_math", off_by_a_percent)
    assert main(bench_args(tmp_path, "--impl", "numpy", "--impl", "iree_static")) == 1
    rows = {r["impl"]: r for r in json.loads((tmp_path / "out.json").read_text())["results"]}
    wrong = rows["numpy"]
    assert not wrong["correct"] and wrong["median_us"] is None and wrong["gbps"] is None
    assert wrong["max_rel_error"] == pytest.approx(0.01, rel=0.2)
    assert rows["iree_static"]["correct"]
    captured = capsys.readouterr()
    assert "numpy" in captured.out and "WRONG" in captured.out
    assert "failed the float64 check" in captured.err
    assert "WRONG" in (tmp_path / "out.md").read_text()


def test_an_implementation_that_writes_nothing_is_caught(tmp_path, monkeypatch):
    """The check runs into NaN-poisoned outputs: a kernel that leaves them unwritten fails."""
    from lnbwd_iree import runtime

    def no_op(self, *args, out=None, wait=True, **kwargs):
        return out

    monkeypatch.setattr(runtime.LayerNormKernels, "call", no_op)
    assert main(bench_args(tmp_path, "--op", "forward", "--impl", "iree_static")) == 1
    (row,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert not row["correct"] and row["median_us"] is None and np.isnan(row["max_rel_error"])


def test_unknown_impl_is_rejected_with_the_list(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(bench_args(tmp_path, "--impl", "nonsense"))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and all(name in err for name in bench.IMPLS)
    assert not (tmp_path / "out.json").exists()


def test_help_lists_the_implementations(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in bench.IMPLS) and "--force" in out and "never replaced" in out


def test_existing_results_are_not_overwritten(tmp_path, capsys):
    (tmp_path / "out.md").write_text("committed table\n")
    assert main(bench_args(tmp_path, "--impl", "numpy")) == 2
    assert "already exist" in capsys.readouterr().err
    assert (tmp_path / "out.md").read_text() == "committed table\n"
    assert not (tmp_path / "out.json").exists()
    assert main(bench_args(tmp_path, "--impl", "numpy", "--force")) == 0
    assert (tmp_path / "out.md").read_text() != "committed table\n"


def test_default_output_is_a_new_file_in_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["bench", "--shape", "8x16", "--dtype", "f32", "--l2-bytes", "2048", "--impl", "numpy"]
    assert main(args) == 0
    (written,) = tmp_path.glob("bench_local-task_*.json")
    assert json.loads(written.read_text())["results"]
    assert f"wrote {written}" in capsys.readouterr().out


def test_dtype_defaults_to_f32_as_for_run(tmp_path):
    assert main(["bench", "--shape", "8x16", "--l2-bytes", "2048", "--impl", "numpy",
                 "--json", str(tmp_path / "out.json")]) == 0
    assert {r["dtype"] for r in json.loads((tmp_path / "out.json").read_text())["results"]} == {"f32"}
    assert main(["bench", "--shape", "8x16", "--l2-bytes", "2048", "--impl", "numpy", "--dtype", "f64",
                 "--json", str(tmp_path / "f64.json")]) == 0
    assert {r["dtype"] for r in json.loads((tmp_path / "f64.json").read_text())["results"]} == {"f64"}


def test_no_iree_impl_and_no_torch_still_writes_a_table(tmp_path, monkeypatch):
    """Peers alone (no IREE row to divide by) and no copy bandwidth: no ZeroDivisionError."""
    monkeypatch.setattr(runner, "device_figures", lambda driver, torch, l2: timing.DeviceFigures("test host", None, l2))
    assert main(bench_args(tmp_path, "--impl", "numpy")) == 0
    (row,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert row["pct_of_copy"] is None and row["median_us"] > 0
    assert "numpy" in (tmp_path / "out.md").read_text()


def test_png_skipped_with_a_message_without_matplotlib(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    (tmp_path / "out.png").write_bytes(b"an earlier run's plot")
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(bench_args(tmp_path, "--impl", "numpy", "--force")) == 0
    assert "matplotlib is not installed: no out.png" in capsys.readouterr().out
    assert not (tmp_path / "out.png").exists()  # not left beside tables it does not show


def test_torch_without_the_gpu_skips_the_peers_with_a_note(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    notes = []
    assert runner.torch_peers("cuda", ["torch_eager", "liger"], notes) is None
    assert "torch_eager, liger: this torch" in notes[0] and "sees no GPU" in notes[0]


def test_cuda_without_a_gpu_is_a_clear_error(tmp_path, capsys):
    """On this CPU-only host: peers are skipped with a note, IREE's device check names the problem."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has a GPU")
    code = main(bench_args(tmp_path, "--device", "cuda", "--impl", "torch_eager"))
    assert code == 2
    assert "nothing to time on cuda" in capsys.readouterr().err


def test_rotation_exceeds_twice_the_l2():
    mib = 1 << 20
    assert bench.input_sets(2 * mib, 50 * mib) == 51  # 1024x512 bf16 backward (dY + X) on an H100
    assert bench.input_sets(1 * mib, 50 * mib) == 101  # its forward (X)
    assert bench.input_sets(256 * mib, 50 * mib) == 1  # one set is already beyond 2x L2
    for set_bytes in (1, 1000, 100 * mib - 1, 100 * mib, 100 * mib + 1):
        n = bench.input_sets(set_bytes, 50 * mib, max_sets=10**9)
        assert n * set_bytes > 100 * mib and (n - 1) * set_bytes <= 100 * mib
    assert bench.input_sets(1, 50 * mib, max_sets=64) == 64
    with pytest.raises(ValueError, match="set_bytes"):
        bench.input_sets(0, mib)


def test_bytes_moved_floors():
    assert bench.bytes_moved(8192, 4096, "f32", "backward") == 3 * 8192 * 4096 * 4 + 3 * 4096 * 4 + 2 * 8192 * 4
    assert bench.bytes_moved(8192, 4096, "bf16", "forward") == 2 * 8192 * 4096 * 2 + 2 * 4096 * 2 + 2 * 8192 * 4
    with pytest.raises(ValueError, match="op must be"):
        bench.bytes_moved(1, 1, "f32", "sideways")


def test_implementations_take_turns_trial_by_trial():
    order = []

    def recorder(name):
        return (lambda i: order.append((name, i)), lambda: order.append((name, "sync")))

    samples = bench.time_interleaved([recorder("a"), recorder("b")], n_sets=2, min_trial_s=0, trials=3, warmup_s=0)
    assert [len(s) for s in samples] == [3, 3]
    timed = order[order.index(("b", "sync")) + 1:]  # after both warm-ups
    trials = [name for name, what in timed if what == "sync"]
    assert trials == ["a", "b"] * 3
    # Each trial rotates over every input set.
    assert [i for name, i in timed if name == "a"][:2] == [0, 1]


def test_default_implementations_are_those_that_run_beside_the_device():
    assert bench.default_impls("local-task") == ("iree_static", "iree", "torch_eager", "torch_compile", "numpy")
    assert bench.default_impls("cuda") == ("iree_static", "iree_direct", "iree", "torch_eager", "torch_compile", "liger")


def test_liger_asked_for_on_the_host_is_skipped_with_a_note(tmp_path, capsys):
    assert main(bench_args(tmp_path, "--impl", "numpy", "--impl", "liger")) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert {r["impl"] for r in report["results"]} == {"numpy"}
    assert report["notes"] and report["notes"][0].startswith("liger:")
    assert "skipped liger:" in capsys.readouterr().out


def test_every_registered_kernel_is_timed_with_its_reference():
    from lnbwd_iree.kernels import KERNELS
    from lnbwd_iree.reference import REFERENCES

    assert {op.kernel for op in bench.TIMED_OPS.values()} == set(KERNELS)
    for op in bench.TIMED_OPS.values():
        assert op.reference is REFERENCES[op.entry.name] and bench.NORM_OPS[op.norm][op.direction] == op.name
    # LayerNorm's records keep their names, so that committed results compare.
    assert bench.NORM_OPS["layernorm"] == {"backward": "backward", "forward": "forward"}


def small_cases(dtype, seed=0, m=8, n=24):
    return list(bench.inputs.cases(np.random.default_rng(seed), dtype, m, n, bench.TIMED_OPS.values(), l2_bytes=1024))


def test_statistics_inputs_are_the_forward_formula_of_x():
    from lnbwd_iree.reference import forward_reference, rmsnorm_forward_reference

    by_name = {case.op.name: case for case in small_cases("bf16")}
    (dy, x), (gamma, mean, rstd) = by_name["backward"].rows, by_name["backward"].rest
    assert x.dtype == dy.dtype == gamma.dtype and mean.dtype == rstd.dtype == np.float32
    _, want_mean, want_rstd = forward_reference(x, gamma, 0 * gamma, bench.EPS)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(rstd, want_rstd, rtol=1e-5)
    # One draw for every op of the shape: RMSNorm's rows and gamma are LayerNorm's.
    (rms_dy, rms_x), (rms_gamma, rms_rstd) = by_name["rmsnorm_backward"].rows, by_name["rmsnorm_backward"].rest
    assert rms_x is x and rms_dy is dy and rms_gamma is gamma
    np.testing.assert_allclose(rms_rstd, rmsnorm_forward_reference(x, gamma, bench.EPS)[1], rtol=1e-5)
    assert not np.allclose(rms_rstd, rstd)  # X is off-centre: the two statistics differ


@pytest.mark.parametrize("dtype", ["f32", "bf16", "f64"])
def test_numpy_peer_runs_the_reference_formula_in_its_arithmetic_type(dtype):
    from lnbwd_iree.reference import TOLERANCE, relative_error

    for case in small_cases(dtype):
        got = peers.numpy_math(case)(*case.rows, *case.rest)
        assert [g.dtype for g in got] == list(case.output_dtypes)
        errors = [relative_error(g, w) for g, w in zip(got, case.want)]
        assert max(errors) <= TOLERANCE[dtype], (case.op.name, errors)
        # float32 arithmetic and storage rounding leave an error; f64 data is the reference itself.
        assert (max(errors) == 0) == (dtype == "f64"), (case.op.name, errors)


def test_torch_math_is_the_same_formula_as_numpys():
    torch = pytest.importorskip("torch")
    torch_peers = peers.TorchPeers(torch, "cpu")
    for case in small_cases("f32"):
        what, fn, rest = torch_peers.math(case)
        assert what == "explicit float32 math" and rest is None
        sets, case_rest = torch_peers.tensors(case)
        got = fn(*sets[0], *case_rest)
        for g, want in zip(got, peers.numpy_math(case)(*case.rows, *case.rest)):
            assert g.dtype == torch.float32
            np.testing.assert_allclose(g.numpy(), want, rtol=1e-5, atol=1e-6)


def test_integer_init_draws_integers():
    drawn = bench.inputs.draw(np.random.default_rng(0), 64, 32, "f32", integers=True)
    dy = drawn["dy"]
    assert set(drawn) == set(bench.inputs.DRAWS) and dy.shape == (64, 32) and drawn["gamma"].shape == (32,)
    assert np.array_equal(dy, np.round(dy)) and dy.min() >= -5 and dy.max() <= 5 and dy.std() > 1


def test_plot_titles_name_each_op():
    plt = pytest.importorskip("matplotlib.pyplot")
    rows = [{"impl": "numpy", "op": op, "m": 8, "n": 16, "dtype": "f32", "gbps": 1.0}
            for op in ("backward", "rmsnorm_forward")]
    fig = bench.report.figure({"results": rows, "copy_gbps": None, "device": "host"}, plt)
    assert [ax.get_title() for ax in fig.axes] == ["layernorm backward, host", "rmsnorm forward, host"]
    plt.close(fig)


@pytest.mark.parametrize("flag", ["--l2-bytes", "--threads"])
@pytest.mark.parametrize("value", ["0", "-3", "1.5"])
def test_sizes_must_be_positive_integers(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        main(bench_args(tmp_path, "--impl", "numpy", flag, value))
    assert e.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err
    assert not (tmp_path / "out.json").exists()


def test_bench_device_is_one_of_the_drivers(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(bench_args(tmp_path, "--device", "tpu"))
    assert "invalid choice: 'tpu'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "(default: local-task)" in out and "(default: backward)" in out and "(default: False)" not in out


def test_torch_peers_are_checked_in_float64_on_f64_data(tmp_path):
    """Their outputs reach the float64 check unrounded (f64 data exists on CPUs for gradchecks)."""
    pytest.importorskip("torch")
    args = bench_args(tmp_path, "--norm", "rmsnorm", "--op", "both", "--dtype", "f64", "--impl", "torch_eager")
    assert main(args) == 0
    rows = json.loads((tmp_path / "out.json").read_text())["results"]
    assert {(r["op"], r["dtype"]) for r in rows} == {(op, d) for op in ("rmsnorm_backward", "rmsnorm_forward")
                                                     for d in ("f32", "f64")}
    assert all(r["max_rel_error"] <= (1e-12 if r["dtype"] == "f64" else 1e-5) for r in rows)


def test_a_kernel_bench_cannot_time_is_refused_with_the_reason():
    from lnbwd_iree.specialization import Arg, Entry, Kernel, Role

    x, gamma, y = Arg("x", Role.ROWS), Arg("gamma", Role.COLUMNS), Arg("y", Role.ROWS)
    unknown = Kernel("unknown_forward", (Entry("unknown_forward", (x, gamma), (y,)),), lambda spec, target: {})
    with pytest.raises(ValueError, match="unknown_forward has no float64 reference"):
        bench.TimedOp("unknown", unknown)
    rows_last = Kernel("layernorm_forward", (Entry("layernorm_forward", (gamma, x), (y,)),), lambda spec, target: {})
    with pytest.raises(ValueError, match="ROWS inputs, which must come first"):
        bench.TimedOp("layernorm", rows_last)


def test_an_implementation_missing_an_output_fails_its_check(tmp_path, monkeypatch, capsys):
    """The float64 check compares every output: one left out is a failure, not a pass on the rest."""
    original = peers.numpy_math

    def without_dbeta(case):
        math = original(case)
        return lambda *inputs: math(*inputs)[:-1]

    monkeypatch.setattr(peers, "numpy_math", without_dbeta)
    assert main(bench_args(tmp_path, "--impl", "numpy")) == 1
    (row,) = json.loads((tmp_path / "out.json").read_text())["results"]
    assert not row["correct"] and "returned 2 outputs, the reference 3" in row["error"]


def test_a_peer_without_the_kernel_is_left_out_with_a_note(tmp_path, monkeypatch, capsys):
    def lacks(case):
        raise NotImplementedError(f"numpy: has no {case.op.kernel.name}")

    monkeypatch.setattr(runner, "numpy_candidates", lacks)
    assert main(bench_args(tmp_path, "--impl", "numpy", "--impl", "iree_static")) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert [r["impl"] for r in report["results"]] == ["iree_static"]
    assert "numpy: has no layernorm_backward" in report["notes"]


def test_iree_direct_asked_for_on_the_host_is_skipped_with_a_note(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(bench_args(tmp_path, "--impl", "numpy", "--impl", "iree_direct")) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert {r["impl"] for r in report["results"]} == {"numpy"}
    assert any(note.startswith("iree_direct: launches on torch's CUDA stream") for note in report["notes"])
