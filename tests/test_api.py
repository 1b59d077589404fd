"""The NumPy API's inputs (arrays, lists, torch tensors), target selection errors, and release at exit."""

import numpy as np
import pytest

from lnbwd_iree import api, layernorm_backward, layernorm_forward, runtime
from lnbwd_iree.reference import backward_reference, forward_reference, relative_error
from lnbwd_iree.runtime import LayerNormKernels
from lnbwd_iree.targets import target_for


def test_lists_are_taken_as_float64(rng):
    x = rng.standard_normal((3, 5)) * 2 + 0.5
    gamma, beta, dy = 1 + 0.5 * rng.standard_normal(5), rng.standard_normal(5), rng.standard_normal((3, 5))
    got = layernorm_forward(x.tolist(), gamma.tolist(), beta.tolist())
    for g, w in zip(got, forward_reference(x, gamma, beta)):
        assert g.dtype == np.float64 and relative_error(g, w) < 1e-12
    _, mean, rstd = got
    grads = layernorm_backward(dy.tolist(), x.tolist(), gamma.tolist(), mean.tolist(), rstd.tolist())
    for g, w in zip(grads, backward_reference(dy, x, gamma, mean, rstd)):
        assert relative_error(g, w) < 1e-12


def test_integer_lists_become_float64():
    assert api.as_array("gamma", [1, 2, 3]).dtype == np.float64


@pytest.mark.parametrize("value, message", [
    ("text", "x must be a NumPy array .or a list of numbers., got str"),
    ([["a", "b"]], "x must hold numbers"),
])
def test_other_inputs_are_named(value, message):
    with pytest.raises(TypeError, match=message):
        layernorm_forward(value, np.ones(2), np.zeros(2))


def test_torch_tensors_are_refused_with_the_way_forward():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"x is a torch tensor.*lnbwd_iree.torch.LayerNorm.*tensor.numpy\(\)"):
        layernorm_forward(torch.ones(2, 4), np.ones(4, np.float32), np.zeros(4, np.float32))


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match="backend 'vmxv' is unknown; 'local-task' runs llvm-cpu or vmvx"):
        LayerNormKernels("local-task", backend="vmxv")


def test_chip_on_a_local_device_is_refused():
    with pytest.raises(ValueError, match="chip='gfx942' does not apply to 'local-sync'"):
        LayerNormKernels("local-sync", chip="gfx942")
    assert target_for("local-task", chip="host").name == "llvm-cpu-host"  # its own chip is no conflict


def test_nonexistent_artifact_dir_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"artifact_dir {tmp_path / 'missing'} does not exist"):
        LayerNormKernels("local-task", artifact_dir=tmp_path / "missing")


def test_close_releases_iree_objects_and_refuses_later_calls(cache_dir, rng):
    kernels = LayerNormKernels("local-task", backend="vmvx", cache_dir=cache_dir, static_shapes=False)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    y, _, _ = kernels.forward(x, np.ones(8, np.float32), np.zeros(8, np.float32), wait=False)
    kernels.close()
    assert kernels.device is None and not kernels._entries and not kernels._plans
    assert relative_error(y.to_host(), forward_reference(x, np.ones(8), np.zeros(8))[0]) < 1e-5  # results kept
    with pytest.raises(RuntimeError, match="was closed"):
        kernels.forward(x, np.ones(8, np.float32), np.zeros(8, np.float32))


def test_exit_handler_closes_every_live_kernels_object(cache_dir, monkeypatch):
    # Only this test's objects: the session's shared ones stay open for later tests.
    monkeypatch.setattr(runtime, "_LIVE", runtime.weakref.WeakSet())
    made = [LayerNormKernels("local-task", backend=b, cache_dir=cache_dir) for b in ("vmvx", "llvm-cpu")]
    assert set(runtime._LIVE) == set(made)
    runtime.close_all()
    assert all(kernels.device is None for kernels in made)
