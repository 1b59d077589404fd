"""The lnbwd-iree command line: run, compile, cache, info, help and errors."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from lnbwd_iree import cache, compiler, runtime
from lnbwd_iree.cli import driver_problem, main
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.runtime import LayerNormKernels
from lnbwd_iree.targets import VMVX


@pytest.fixture(autouse=True)
def session_cache(cache_dir, monkeypatch):
    """Artifacts go to the test session's cache, not the user's."""
    monkeypatch.setenv(cache.CACHE_ENV, cache_dir)


def test_run_verifies_and_times(capsys):
    assert main(["run", "1", "2", "1", "--m", "64", "--n", "200", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out
    timing = next(line for line in out.splitlines() if "median" in line)
    assert "backward" in timing and "min" in timing and "max" in timing and "GB/s effective" in timing
    assert "preallocated outputs" in out and "input set(s) rotated" in out


def test_run_timing_allocates_no_outputs_inside_the_timed_calls(monkeypatch, capsys):
    allocations = []
    allocate = LayerNormKernels.allocate
    monkeypatch.setattr(LayerNormKernels, "allocate", lambda self, *a: allocations.append(a) or allocate(self, *a))
    assert main(["run", "0", "2", "1", "--m", "64", "--n", "128"]) == 0
    # The forward's y, mean, rstd; the backward writes into buffers made before timing.
    assert len(allocations) == 3, allocations


def test_run_with_no_arguments_uses_the_host_cpu(capsys):
    assert main([]) == 0
    assert "target=llvm-cpu-host" in capsys.readouterr().out


def test_options_alone_run_the_example(capsys):
    assert main(["--m", "64", "--n", "16"]) == 0
    assert "M=64 N=16" in capsys.readouterr().out


def test_run_with_no_rows_says_what_it_did(capsys):
    assert main(["run", "1", "2", "1", "--m", "0", "--n", "16"]) == 0
    out = capsys.readouterr().out
    assert "M=0: an empty batch" in out and "nothing to time" in out


@pytest.mark.parametrize("argv, message", [
    (["run", "--m", "100000000000"], "out of memory"),
    (["run", "--artifact-dir", "/nonexistent/artifacts"], "artifact_dir /nonexistent/artifacts does not exist"),
    (["run", "--chip", "sm_80"], "chip='sm_80' does not apply to 'local-task'"),
    (["cache", "prune"], "needs --max-size and/or --older-than"),
])
def test_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("lnbwd-iree: error: ") and err.count("\n") == 1, err


def test_compile_to_a_file_is_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["compile", "--out", str(tmp_path / "file"), "--target", "vmvx-generic"]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_compile_writes_artifacts_and_manifest(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path), "--target", "vmvx-generic", "--dtype", "f32", "--op", "layernorm", "--shape", "8x16"]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    files = {a["file"] for a in manifest["artifacts"]}
    assert files == {
        "layernorm_backward_DxDxf32_vmvx-generic.vmfb",
        "layernorm_forward_DxDxf32_vmvx-generic.vmfb",
        "layernorm_backward_8x16xf32_vmvx-generic.vmfb",
        # The forward's artifacts are per N: they serve every M.
        "layernorm_forward_Dx16xf32_vmvx-generic.vmfb",
    }
    assert all((tmp_path / f).stat().st_size > 0 for f in files)
    assert {a["chip"] for a in manifest["artifacts"]} == {"generic"}


def test_compile_again_keeps_earlier_artifacts_in_the_manifest_and_builds_a_shape_once(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["compile", "--out", out, "--target", "vmvx-generic", "--dtype", "f32", "--op", "layernorm", "--shape", "8x16", "--shape", "8x16"]) == 0
    assert "built 4, 0 already up to date" in capsys.readouterr().out  # dynamic + 8x16, forward and backward
    # An artifact no load can use (here: no record) stays out of the manifest and its count.
    (tmp_path / "stale_vmvx-generic.vmfb").write_bytes(b"not a module")
    # 4x16 needs a new backward only: the forward's artifact is per N (Dx16), already built.
    assert main(["compile", "--out", out, "--target", "vmvx-generic", "--dtype", "f32", "--op", "layernorm", "--shape", "4x16"]) == 0
    printed = capsys.readouterr().out
    assert "built 1, 3 already up to date" in printed and "lists 5 artifacts" in printed
    assert "not listed, unusable: stale_vmvx-generic.vmfb (no readable record)" in printed
    files = [a["file"] for a in json.loads((tmp_path / "manifest.json").read_text())["artifacts"]]
    assert len(files) == len(set(files)) == 5
    assert "layernorm_backward_8x16xf32_vmvx-generic.vmfb" in files and "layernorm_backward_4x16xf32_vmvx-generic.vmfb" in files


def manifest_files(folder):
    return sorted(a["file"] for a in json.loads((folder / "manifest.json").read_text())["artifacts"])


def test_cache_prune_and_clear_of_a_compile_folder_rewrite_its_manifest(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["compile", "--out", out, "--target", "vmvx-generic", "--dtype", "f32", "--op", "layernorm",
                 "--shape", "8x16"]) == 0
    assert len(manifest_files(tmp_path)) == 4
    dynamic = "layernorm_backward_DxDxf32_vmvx-generic.vmfb"
    week_ago = (tmp_path / dynamic).stat().st_mtime - 7 * 86400
    for path in (tmp_path / dynamic, cache.record_path(tmp_path / dynamic)):
        os.utime(path, (week_ago, week_ago))
    assert main(["cache", "prune", "--older-than", "3d", "--dir", out]) == 0
    left = sorted(p.name for p in tmp_path.glob("*.vmfb"))
    assert len(left) == 3 and dynamic not in left and manifest_files(tmp_path) == left
    assert main(["cache", "clear", "--dir", out]) == 0
    assert not list(tmp_path.glob("*.vmfb")) and manifest_files(tmp_path) == []


def test_compile_rejects_unknown_target(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compile", "--out", str(tmp_path), "--target", "rocm-gfx000"])
    assert "invalid choice: 'rocm-gfx000'" in capsys.readouterr().err


def test_gpu_compile_prints_its_time_not_expected_compiler_warnings(tmp_path):
    # 8192x4096 f32 on CUDA takes the row-block schedule, about whose row loop
    # iree-compile warns "tiling is not thread safe" (docs/design.md).
    done = subprocess.run(
        [sys.executable, "-m", "lnbwd_iree", "compile", "--out", str(tmp_path), "--target", "cuda-sm_80",
         "--dtype", "f32", "--shape", "8192x4096", "--verbose"],
        capture_output=True, text=True, env={**os.environ, cache.CACHE_ENV: str(tmp_path / "cache")},
    )
    assert done.returncode == 0, done.stderr
    compiled = [line for line in done.stderr.splitlines() if line.startswith("lnbwd-iree: compiled ")]
    # Dynamic and 8192x4096, forward and backward, of LayerNorm and RMSNorm.
    assert len(compiled) == 8 and all(" for cuda-sm_80 in " in line and " s -> " in line for line in compiled)
    assert "thread safe" not in done.stderr and len(done.stderr.splitlines()) == 8, done.stderr


def compiled_records(caplog):
    return [r for r in caplog.records if r.name == "lnbwd_iree" and r.getMessage().startswith("compiled ")]


def test_compile_prints_a_summary_and_a_line_per_artifact_only_with_verbose(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="lnbwd_iree")
    compile_args = ["compile", "--out", str(tmp_path), "--target", "vmvx-generic", "--op", "layernorm"]
    # vmvx has no f16: one skipped pair; f32, bf16, f64: forward and backward each.
    assert main(compile_args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"built 6, 0 already up to date, 1 target/dtype pairs skipped (unsupported) in {tmp_path};"
                       " manifest.json lists 6 artifacts (-v: one line per artifact)"], printed
    assert compiled_records(caplog) == []
    caplog.clear()
    assert main([*compile_args, "--dtype", "f32", "--shape", "4x16", "-v"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == ["up to date: layernorm_backward_DxDxf32_vmvx-generic.vmfb",
                           "up to date: layernorm_forward_DxDxf32_vmvx-generic.vmfb"], printed
    assert printed[2].startswith("built 2, 2 already up to date in ") and len(printed) == 3, printed
    assert sorted(r.getMessage().split()[1] for r in compiled_records(caplog)) == [
        "layernorm_backward_4x16xf32", "layernorm_forward_Dx16xf32"]


def test_run_names_the_artifacts_it_used(capsys):
    assert main(["run", "--m", "64", "--n", "16"]) == 0
    assert ("  artifacts: layernorm_forward per-N (Dx16xf32), layernorm_backward shape-specialised (64x16xf32)"
            in capsys.readouterr().out.splitlines())


def test_runtime_only_fallback_to_the_dynamic_artifact_is_said_once(tmp_path, monkeypatch, capsys, caplog):
    """No compiler and no specialised artifact: the dynamic one serves, `run`
    names it, and one warning (not one per shape) says why."""
    assert main(["compile", "--out", str(tmp_path), "--target", "vmvx-generic", "--dtype", "f32"]) == 0
    monkeypatch.setattr(compiler, "compiler_version", lambda: None)
    monkeypatch.setattr(runtime, "_fallback_reported", False)
    capsys.readouterr()
    caplog.set_level(logging.INFO, logger="lnbwd_iree")
    for m in (8, 9):
        assert main(["run", "--m", str(m), "--n", "16", "--backend", "vmvx", "--artifact-dir", str(tmp_path)]) == 0
        assert ("  artifacts: layernorm_forward dynamic (DxDxf32), layernorm_backward dynamic (DxDxf32)"
                in capsys.readouterr().out.splitlines())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("layernorm_forward N=16: no per-N artifact layernorm_forward_Dx16xf32_vmvx-generic"
                                  ".vmfb in ") and "iree-base-compiler is not installed" in warnings[0]


def test_bad_device_is_reported_not_raised(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--device", "tpu"])
    assert "invalid choice: 'tpu'" in capsys.readouterr().err


def test_help_names_arguments_defaults_choices_and_columns(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run", "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    assert "[verify] [init] [time]" in help_text and "{0,1}" not in help_text
    assert "(default: 1024)" in help_text and "{cuda,hip,local-sync,local-task,vulkan}" in help_text
    assert "{llvm-cpu,vmvx}" in help_text and "effective GB/s" in help_text and "% of copy" in help_text
    with pytest.raises(SystemExit):
        main(["compile", "--help"])
    assert "rocm-gfx942" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "cache" in top


def test_version(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("lnbwd-iree 0.1.0 (iree-base-runtime 3.13.0, iree-base-compiler ")


def test_info_lists_versions_and_drivers(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "iree-base-runtime 3.13.0" in out and "driver local-task" in out
    assert re.search(r"cache folder .*: \d+ artifacts, ", out)


def test_driver_errors_are_shown_whole_without_source_location():
    error = RuntimeError(
        "Error creating driver: c/runtime/src/iree/hal/drivers/hip/dynamic_symbols.c:155: UNAVAILABLE; HIP runtime "
        "library 'libamdhip64.so' not available: please ensure installed and in dynamic library search path: \n"
        "  Tried: libamdhip64.so\n    c/runtime/src/iree/base/internal/dynamic_library_posix.c:165: NOT_FOUND"
    )
    assert driver_problem(error) == (
        "UNAVAILABLE; HIP runtime library 'libamdhip64.so' not available: please ensure installed and in "
        "dynamic library search path"
    )


def test_cache_list_prune_and_clear(tmp_path, capsys):
    folder = tmp_path / "cache"
    old = cache.ArtifactStore.build(Specialization(LAYERNORM_FORWARD, "f32", 8, 16), VMVX, folder)
    new = cache.ArtifactStore.build(Specialization(LAYERNORM_FORWARD, "f32", 4, 16), VMVX, folder)
    (folder / "notes.txt").write_text("not an artifact")
    week_ago = old.stat().st_mtime - 7 * 86400
    for path in (old, cache.record_path(old)):
        os.utime(path, (week_ago, week_ago))

    assert main(["cache", "list", "--dir", str(folder)]) == 0
    listing = capsys.readouterr().out
    assert f"{folder}: 2 artifacts" in listing
    assert "layernorm_forward f32 8x16 on vmvx-generic" in listing and "KiB" in listing

    assert main(["cache", "prune", "--older-than", "3d", "--dir", str(folder)]) == 0
    assert "removed 1 artifacts" in capsys.readouterr().out
    assert not old.exists() and new.exists()

    assert main(["cache", "clear", "--dir", str(folder)]) == 0
    assert "removed 1 artifacts" in capsys.readouterr().out
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # a cache has no manifest, and gets none


def test_a_closed_pipe_ends_quietly():
    """`lnbwd-iree info | head -1`: the reader has gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    done = subprocess.run([sys.executable, "-m", "lnbwd_iree", "info"], stdout=write_end, stderr=subprocess.PIPE,
                          text=True)
    os.close(write_end)
    assert done.returncode == 128 + 13 and done.stderr == "", done.stderr  # 13: SIGPIPE


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("lnbwd_iree.cli.cmd_info", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "lnbwd-iree: interrupted\n"
