"""The NumPy API's inputs (arrays, lists, torch tensors), target selection errors, and release at exit."""

import inspect

import numpy as np
import pytest

from lnbwd_iree import api, layernorm_backward, layernorm_forward, rmsnorm_backward, rmsnorm_forward, runtime
from lnbwd_iree.kernels import LAYERNORM_FORWARD
from lnbwd_iree.reference import (
    backward_reference, forward_reference, relative_error, rmsnorm_backward_reference, rmsnorm_forward_reference,
)
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
    assert kernels.device is None and not kernels._modules and not kernels._plans
    assert relative_error(y.to_host(), forward_reference(x, np.ones(8), np.zeros(8))[0]) < 1e-5  # results kept
    with pytest.raises(RuntimeError, match="was closed"):
        kernels.forward(x, np.ones(8, np.float32), np.zeros(8, np.float32))


def test_every_public_method_of_a_closed_kernels_object_says_it_was_closed(cache_dir, rng):
    kernels = LayerNormKernels("local-task", backend="vmvx", cache_dir=cache_dir, static_shapes=False)
    x, dy = (rng.standard_normal((4, 8)).astype(np.float32) for _ in range(2))
    gamma = np.ones(8, np.float32)
    # Device arrays made before the close, as a caller may still hold them.
    held = kernels.allocate((4, 8), np.float32)
    mean, rstd = kernels.to_device(np.zeros(4, np.float32)), kernels.to_device(np.ones(4, np.float32))
    kernels.close()
    calls = {
        "specialization": lambda: kernels.specialization(LAYERNORM_FORWARD, "f32", (4, 8)),
        "entry": lambda: kernels.entry(LAYERNORM_FORWARD, "f32", "layernorm_forward", (4, 8)),
        "call": lambda: kernels.call(LAYERNORM_FORWARD, "layernorm_forward", (x, gamma, gamma), eps=1e-5),
        "call_checked": lambda: kernels.call_checked(LAYERNORM_FORWARD, "layernorm_forward", (x, gamma, gamma), (1e-5,)),
        "forward": lambda: kernels.forward(x, gamma, gamma),
        "forward out=": lambda: kernels.forward(x, gamma, gamma, out=held),
        "backward": lambda: kernels.backward(dy, x, gamma),
        "backward out=": lambda: kernels.backward(dy, x, gamma, mean, rstd, out=held),
        "rmsnorm_forward out=": lambda: kernels.rmsnorm_forward(x, gamma, eps=1e-6, out=held),
        "rmsnorm_backward out=": lambda: kernels.rmsnorm_backward(dy, x, gamma, rstd, out=held),
        "queued": kernels.queued,
        "synchronize": kernels.synchronize,
        "to_device": lambda: kernels.to_device(x),
        "to_device of a device array": lambda: kernels.to_device(held),
        "empty": lambda: kernels.empty((4, 8), np.float32),
        "empty, zero-size": lambda: kernels.empty((0, 8), np.float32),
        "allocate": lambda: kernels.allocate((4, 8), np.float32),
    }
    public = {name for name, _ in inspect.getmembers(LayerNormKernels, inspect.isfunction) if not name.startswith("_")}
    assert public - {"close"} == {label.split()[0].rstrip(",") for label in calls}  # each is called below
    for label, call in calls.items():
        with pytest.raises(RuntimeError, match=r"this LayerNormKernels \(local-task\) was closed; make a new one"):
            call()
            pytest.fail(f"{label} ran on a closed LayerNormKernels")
    kernels.close()  # closing again does nothing


def test_exit_handler_closes_every_live_kernels_object(cache_dir, monkeypatch):
    # Only this test's objects: the session's shared ones stay open for later tests.
    monkeypatch.setattr(runtime, "_LIVE", runtime.weakref.WeakSet())
    made = [LayerNormKernels("local-task", backend=b, cache_dir=cache_dir) for b in ("vmvx", "llvm-cpu")]
    assert set(runtime._LIVE) == set(made)
    runtime.close_all()
    assert all(kernels.device is None for kernels in made)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_dimensional_x_is_one_row(rng, cache_dir, dtype):
    """x of shape [N], as torch takes it: results of the caller's shapes, statistics of shape ()."""
    n = 37
    # An offset well away from 0: a mean of 37 draws near 0 has no relative precision to check.
    x = (rng.standard_normal(n) * 2 + 3).astype(dtype)
    dy = rng.standard_normal(n).astype(dtype)
    gamma, beta = (1 + 0.5 * rng.standard_normal(n)).astype(dtype), rng.standard_normal(n).astype(dtype)
    bound = 1e-5 if dtype == np.float32 else 1e-12
    rows = lambda a: a.astype(np.float64).reshape(1, n)  # noqa: E731  (the references take [M, N])

    y, mean, rstd = layernorm_forward(x, gamma, beta)
    assert (y.shape, mean.shape, rstd.shape) == ((n,), (), ())
    for got, want in zip((y, mean, rstd), forward_reference(rows(x), gamma, beta)):
        assert relative_error(got, np.asarray(want).reshape(got.shape)) < bound
    want = backward_reference(rows(dy), rows(x), gamma, mean.reshape(1), rstd.reshape(1))
    for grads in (layernorm_backward(dy, x, gamma, mean, rstd), layernorm_backward(dy, x, gamma)):
        assert [g.shape for g in grads] == [(n,)] * 3
        for got, w in zip(grads, want):
            assert relative_error(got, np.asarray(w).reshape(got.shape)) < bound

    y, rstd = rmsnorm_forward(x, gamma, eps=1e-6)
    assert (y.shape, rstd.shape) == ((n,), ())
    for got, w in zip((y, rstd), rmsnorm_forward_reference(rows(x), gamma, 1e-6)):
        assert relative_error(got, np.asarray(w).reshape(got.shape)) < bound
    want = rmsnorm_backward_reference(rows(dy), rows(x), gamma, rstd.reshape(1))
    for grads in (rmsnorm_backward(dy, x, gamma, rstd), rmsnorm_backward(dy, x, gamma, eps=1e-6)):
        assert [g.shape for g in grads] == [(n,)] * 2
        for got, w in zip(grads, want):
            assert relative_error(got, np.asarray(w).reshape(got.shape)) < bound
