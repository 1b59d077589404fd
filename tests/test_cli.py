"""The lnbwd-iree command line: run, compile, info."""

import json

import pytest

from lnbwd_iree.cli import main


def test_run_verifies_and_times(capsys):
    assert main(["run", "1", "2", "1", "--m", "64", "--n", "200", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "FAIL" not in out
    assert "us," in out and "GB/s" in out


def test_run_with_no_arguments_uses_the_host_cpu(capsys):
    assert main([]) == 0
    assert "target=llvm-cpu-host" in capsys.readouterr().out


def test_compile_writes_artifacts_and_manifest(tmp_path, capsys):
    assert main(["compile", "--out", str(tmp_path), "--target", "vmvx-generic", "--dtype", "f32", "--shape", "8x16"]) == 0
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


def test_compile_rejects_unknown_target(tmp_path):
    with pytest.raises(SystemExit, match="unknown target"):
        main(["compile", "--out", str(tmp_path), "--target", "rocm-gfx000"])


def test_bad_device_is_reported_not_raised(capsys):
    assert main(["run", "--device", "tpu"]) == 2
    assert "unknown device driver 'tpu'" in capsys.readouterr().err


def test_info_lists_versions_and_drivers(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "iree-base-runtime 3.13.0" in out and "driver local-task" in out
