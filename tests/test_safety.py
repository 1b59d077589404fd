"""Inputs that used to give a wrong answer without an error (issue 11): outputs
that share memory with inputs, one instance shared by threads, empty batches
with given outputs, eps beyond the kernel's float type, and artifact permissions."""

import os
import stat
import sys
import threading
import time

import numpy as np
import pytest
from conftest import DTYPES, TOLERANCE, assert_close, host, random_problem, skip_unsupported, sum_scales
from iree import runtime as ireert

from lnbwd_iree import LayerNormKernels, cache
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.reference import backward_reference, forward_reference
from lnbwd_iree.runtime import STATS_DTYPES
from lnbwd_iree.targets import VMVX

SHAPE = (6, 40)


def check_backward(got, dy, x, gamma, eps=1e-5, dtype="f32"):
    """dX, dgamma, dbeta (host arrays) against the float64 reference of the recomputing backward."""
    _, mean, rstd = forward_reference(x, gamma, gamma, eps=eps)
    want = backward_reference(dy, x, gamma, mean, rstd)
    for name, g, w, scale in zip(("dx", "dgamma", "dbeta"), got, want, sum_scales(dy, x, gamma, mean, rstd)):
        assert_close(name, g, w, TOLERANCE[dtype], scale)


def imported(kernels, tensor):
    """A torch tensor's memory as a device array, through DLPack as lnbwd_iree.torch passes it."""
    torch = pytest.importorskip("torch")
    view = kernels.device.from_dlpack_capsule(torch.utils.dlpack.to_dlpack(tensor))
    return ireert.DeviceArray(kernels.device, view, implicit_host_transfer=True)


def same_buffer(kernels, array, shape):
    """A second device array over ``array``'s buffer, viewed with ``shape``."""
    view = array._buffer_view
    return ireert.DeviceArray(
        kernels.device, ireert.HalBufferView(view.get_buffer(), list(shape), view.element_type), implicit_host_transfer=True
    )


# ---- 1. outputs that share memory with inputs or with each other ------------------------------


def backward_aliases(d, kernels):
    """(out, the expected message) for each way an output of backward can share an input's memory."""
    dy, x, gamma = d
    n = SHAPE[-1]
    fresh = lambda s: kernels.allocate(s, np.float32)  # noqa: E731
    return [
        (dy, "out dx shares memory with input dy"),
        (x, "out dx shares memory with input x"),
        ((fresh(SHAPE), gamma), "out dgamma shares memory with input gamma"),
        ((fresh(SHAPE), fresh((n,)), gamma), "out dbeta shares memory with input gamma"),
        # Another view of the same buffer: dgamma over the first row of dY.
        ((fresh(SHAPE), same_buffer(kernels, dy, (n,))), "out dgamma shares memory with input dy"),
        # Outputs that share memory with each other.
        ((fresh(SHAPE), *(2 * [fresh((n,))])), "out dbeta shares memory with out dgamma"),
        ((dx := fresh(SHAPE), same_buffer(kernels, dx, (n,))), "out dgamma shares memory with out dx"),
    ]


def test_backward_refuses_outputs_that_share_memory(kernels, rng):
    dy, x, gamma, _ = random_problem(rng, SHAPE, "f32")
    d = [kernels.to_device(a) for a in (dy, x, gamma)]
    for out, message in backward_aliases(d, kernels):
        # The same signature with separate outputs first, so that the aliasing call takes the cached plan.
        separate = tuple(kernels.allocate(s, np.float32) for s in (SHAPE, SHAPE[-1:], SHAPE[-1:]))
        kernels.backward(*d, out=separate[: len(out) if isinstance(out, tuple) else 1])
        with pytest.raises(ValueError, match=message):
            kernels.backward(*d, out=out)
    # The refused calls wrote nothing: the inputs are intact and still give the right answer.
    for name, array, want in zip(("dy", "x", "gamma"), d, (dy, x, gamma)):
        np.testing.assert_array_equal(array.to_host(), want, err_msg=f"{name} was written")
    check_backward(host(kernels.backward(*d)), dy, x, gamma)


def test_backward_with_statistics_refuses_outputs_over_them(kernels, rng):
    dy, x, gamma, beta = random_problem(rng, SHAPE, "f32")
    _, mean, rstd = forward_reference(x, gamma, beta)
    d = [kernels.to_device(a) for a in (dy, x, gamma, mean.astype(np.float32), rstd.astype(np.float32))]
    # rstd (6 values) viewed over the start of dbeta's buffer (40 values).
    dbeta = kernels.allocate((SHAPE[-1],), np.float32)
    rstd_over_dbeta = same_buffer(kernels, dbeta, (SHAPE[0],))
    with pytest.raises(ValueError, match="out dbeta shares memory with input rstd"):
        kernels.backward(*d[:4], rstd_over_dbeta, out=(kernels.allocate(SHAPE, np.float32), None, dbeta))


def test_forward_refuses_outputs_that_share_memory(kernels, rng):
    _, x, gamma, beta = random_problem(rng, SHAPE, "f32")
    d = [kernels.to_device(a) for a in (x, gamma, beta)]
    m = SHAPE[0]
    y = kernels.allocate(SHAPE, np.float32)
    kernels.forward(*d, out=y)  # caches the plan of the signature
    with pytest.raises(ValueError, match="out y shares memory with input x"):
        kernels.forward(*d, out=d[0])
    stats = kernels.allocate((m,), np.float32)
    with pytest.raises(ValueError, match="out rstd shares memory with out mean"):
        kernels.forward(*d, out=(y, stats, stats))
    with pytest.raises(ValueError, match="out mean shares memory with out y"):
        kernels.forward(*d, out=(y, same_buffer(kernels, y, (m,))))


def test_buffers_without_an_exported_address_are_compared_by_identity(kernels, rng, monkeypatch):
    """cuda exports the address of DLPack imports only (its own buffers:
    UNAVAILABLE): those are compared by identity, which views of one buffer share."""

    def no_export(*args):
        raise RuntimeError("UNAVAILABLE; CUDA buffer type is not supported for export")

    monkeypatch.setattr(ireert.HalDevice, "create_dlpack_capsule", no_export)
    dy, x, gamma, _ = random_problem(rng, SHAPE, "f32")
    d = [kernels.to_device(a) for a in (dy, x, gamma)]
    with pytest.raises(ValueError, match="out dx shares memory with input x"):
        kernels.backward(*d, out=d[1])
    with pytest.raises(ValueError, match="out dgamma shares memory with input dy"):
        kernels.backward(*d, out=(kernels.allocate(SHAPE, np.float32), same_buffer(kernels, d[0], SHAPE[-1:])))
    out = tuple(kernels.to_device(np.full(s, np.nan, np.float32)) for s in (SHAPE, SHAPE[-1:], SHAPE[-1:]))
    check_backward(host(kernels.backward(*d, out=out)), dy, x, gamma)


def test_inputs_may_share_memory(kernels, rng):
    """Only outputs are refused: dY may be X, gamma may be beta (read-only)."""
    _, x, gamma, _ = random_problem(rng, SHAPE, "f32")
    x_d, gamma_d = kernels.to_device(x), kernels.to_device(gamma)
    out = tuple(kernels.to_device(np.full(s, np.nan, np.float32)) for s in (SHAPE, SHAPE[-1:], SHAPE[-1:]))
    check_backward(host(kernels.backward(x_d, x_d, gamma_d, out=out)), x, x, gamma)
    y, _, _ = host(kernels.forward(x_d, gamma_d, gamma_d))
    assert_close("y", y, forward_reference(x, gamma, gamma)[0], TOLERANCE["f32"])


def test_dlpack_imports_of_one_storage_are_compared_by_address(rng, cache_dir):
    """torch tensors arrive as separate DLPack imports of the same memory: a
    slice of one storage overlapping another is refused, adjacent slices are fine."""
    torch = pytest.importorskip("torch")
    kernels = LayerNormKernels("local-task", cache_dir=cache_dir)
    # The local heap allocator imports 64-byte aligned memory: slices start at multiples of 16 floats.
    shape = (4, 64)
    dy, x, gamma, _ = random_problem(rng, shape, "f32")
    n = shape[-1]

    dy_t, x_t, gamma_t = (torch.from_numpy(a).clone() for a in (dy, x, gamma))  # torch's allocator aligns
    d = [imported(kernels, t) for t in (dy_t, x_t, gamma_t)]
    with pytest.raises(ValueError, match="out dx shares memory with input dy"):
        kernels.backward(*d, out=imported(kernels, dy_t))
    grads = torch.full((3 * n,), float("nan"))
    dx = torch.full(shape, float("nan"))
    with pytest.raises(ValueError, match="out dbeta shares memory with out dgamma"):
        overlapping = imported(kernels, grads[n // 2 : n // 2 + n])
        kernels.backward(*d, out=(imported(kernels, dx), imported(kernels, grads[:n]), overlapping))
    with pytest.raises(ValueError, match="out dgamma shares memory with input gamma"):
        kernels.backward(*d, out=(imported(kernels, dx), imported(kernels, gamma_t[:n])))
    kernels.backward(*d, out=(imported(kernels, dx), imported(kernels, grads[:n]), imported(kernels, grads[n : 2 * n])))
    check_backward((dx.numpy(), grads[:n].numpy(), grads[n : 2 * n].numpy()), dy, x, gamma)
    assert grads[2 * n :].isnan().all(), "wrote past dbeta"


# ---- 2. one instance shared by threads --------------------------------------------------------


@pytest.fixture
def fast_switching(monkeypatch):
    """Thread switches every microsecond, and at every fence made, so that
    unlocked read-modify-writes interleave. (CPython 3.11 switches threads only
    on entering Python functions and on loop back-edges, never right after a C
    call as 3.12 does: the yield in create_at stands for that.)"""
    create_at = ireert.HalFence.create_at

    def create_at_then_yield(semaphore, value):
        fence = create_at(semaphore, value)
        time.sleep(0)
        return fence

    monkeypatch.setattr(ireert.HalFence, "create_at", create_at_then_yield)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def run_threads(target, count=8, timeout=120):
    errors = []

    def guarded(index):
        try:
            target(index)
        except BaseException as e:  # reported below, with the thread that raised it
            errors.append((index, e))

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread is stuck"
    assert not errors, f"{len(errors)} threads failed, first: {errors[0]!r}"


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "queued"])
def test_threads_share_one_instance(cache_dir, fast_switching, wait):
    """8 threads call one fresh instance (so plans, entries and scratch are
    created concurrently too), half with host arrays, half with device arrays
    and given outputs; every result is checked against the float64 reference."""
    kernels = LayerNormKernels("local-task", cache_dir=cache_dir)
    calls = 120
    results = [[] for _ in range(8)]

    def work(index):
        rng = np.random.default_rng(index)
        for call in range(calls):
            shape = (3 + index % 2, 32)  # two signatures, so plans are made and reused concurrently
            dy, x, gamma, beta = random_problem(rng, shape, "f32")
            if call % 2:
                out = tuple(kernels.to_device(np.full(s, np.nan, np.float32)) for s in (shape, shape[-1:], shape[-1:]))
                got = kernels.backward(*(kernels.to_device(a) for a in (dy, x, gamma)), out=out, wait=wait)
            else:
                got = kernels.backward(dy, x, gamma, wait=wait)
            results[index].append((got, dy, x, gamma, kernels.forward(x, gamma, beta, wait=wait), beta))

    run_threads(work)
    kernels.synchronize()
    for per_thread in results:
        assert len(per_thread) == calls
        for got, dy, x, gamma, forward, beta in per_thread:
            check_backward(host(got), dy, x, gamma)
            for name, g, w in zip(("y", "mean", "rstd"), host(forward), forward_reference(x, gamma, beta)):
                assert_close(name, g, w, TOLERANCE["f32"])


def test_a_failed_call_does_not_poison_later_ones(cache_dir, rng, monkeypatch):
    """A call whose invoke fails after it took its place on the queue must not
    leave later calls waiting for a value nobody will signal."""
    kernels = LayerNormKernels("local-task", cache_dir=cache_dir)
    dy, x, gamma, _ = random_problem(rng, SHAPE, "f32")
    d = [kernels.to_device(a) for a in (dy, x, gamma)]
    check_backward(host(kernels.backward(*d)), dy, x, gamma)  # the plan now exists

    def failing_invoke(*args):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(ireert.VmContext, "invoke", failing_invoke)
    for wait in (True, False):
        with pytest.raises(RuntimeError, match="injected failure"):
            kernels.backward(*d, wait=wait)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="eps must be"):
        kernels.backward(*d, eps=float("nan"))

    later = []
    # In a thread, so that a call stuck on a value nobody signals fails the test instead of hanging it.
    run_threads(lambda _: later.extend([kernels.backward(*d, wait=False), kernels.backward(*d)]), count=1, timeout=30)
    kernels.synchronize()
    for got in later:
        check_backward(host(got), dy, x, gamma)


def test_a_failure_on_the_device_is_raised_once_then_calls_work(cache_dir, rng):
    """A call that fails on the device fails the timeline semaphore: the error
    reaches the next wait (here synchronize), and calls after it run again."""
    kernels = LayerNormKernels("local-task", cache_dir=cache_dir)
    dy, x, gamma, _ = random_problem(rng, SHAPE, "f32")
    d = [kernels.to_device(a) for a in (dy, x, gamma)]
    kernels.backward(*d, wait=False)
    kernels._timeline.fail("injected device failure")  # what a failed dispatch does to its semaphore
    with pytest.raises(RuntimeError, match="injected device failure"):
        kernels.synchronize()
    later = [kernels.backward(*d, wait=False), kernels.backward(*d)]
    kernels.synchronize()
    for got in later:
        check_backward(host(got), dy, x, gamma)


# ---- 3. empty batch with given outputs -------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("wait", [True, False], ids=["wait", "queued"])
def test_empty_batch_fills_given_outputs(kernels, dtype, wait):
    """M == 0: the given dgamma/dbeta (poisoned with NaN) come back as zeros, the given arrays themselves."""
    skip_unsupported(kernels, dtype)
    storage, stats = DTYPES[dtype], STATS_DTYPES[dtype]
    n, shape = 12, (2, 0, 12)
    x = np.ones(shape, storage)
    gamma = np.linspace(0.5, 1.5, n).astype(storage)
    for saved in ((), (np.ones((2, 0), stats), np.ones((2, 0), stats))):
        out = (kernels.empty(shape, storage), *(kernels.to_device(np.full(n, np.nan, storage)) for _ in range(2)))
        results = kernels.backward(x, x, gamma, *saved, out=out, wait=wait)
        kernels.synchronize()
        assert all(r is o for r, o in zip(results, out))
        dx, dgamma, dbeta = host(results)
        assert dx.shape == shape
        np.testing.assert_array_equal(dgamma, np.zeros(n, storage))
        np.testing.assert_array_equal(dbeta, np.zeros(n, storage))
    out = (kernels.empty(shape, storage), kernels.empty(shape[:-1], stats), kernels.empty(shape[:-1], stats))
    results = kernels.forward(x, gamma, gamma, out=out, wait=wait)
    assert all(r is o for r, o in zip(results, out))
    assert [r.to_host().shape for r in results] == [shape, shape[:-1], shape[:-1]]


def test_empty_batch_fills_dlpack_imported_outputs(cache_dir):
    """torch tensors imported through DLPack (as lnbwd_iree.torch passes its
    gradients) allow no transfer into them; the zeros must still arrive."""
    torch = pytest.importorskip("torch")
    kernels = LayerNormKernels("local-task", cache_dir=cache_dir)

    n = 16
    x = np.ones((0, n), np.float32)
    grads = [torch.full((n,), float("nan")) for _ in range(2)]
    kernels.backward(x, x, np.ones(n, np.float32), out=(None, *(imported(kernels, g) for g in grads)))
    for name, grad in zip(("dgamma", "dbeta"), grads):
        assert (grad == 0).all(), f"{name}: {grad}"


# ---- 5. eps as the kernels receive it (f32) ---------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_eps_beyond_float32_is_refused(kernels, rng, dtype):
    """The kernels take eps as an f32 for every storage dtype (f64 data
    converts it inside): 1e39 would arrive as inf and give dX = 0. Refused on
    the first call of a signature and on the cached plan alike."""
    skip_unsupported(kernels, dtype)
    dy, x, gamma, beta = random_problem(rng, SHAPE, dtype)
    refused = r"eps must be a number in \[0, 3\.4028235e\+38\] \(the kernels take it as float32\), got 1e\+39"
    for cached in (False, True):
        if cached:
            d = [kernels.to_device(a) for a in (dy, x, gamma, beta)]
            kernels.backward(*d[:3])
            kernels.forward(d[1], d[2], d[3])
            dy, x, gamma, beta = d
        with pytest.raises(ValueError, match=refused):
            kernels.backward(dy, x, gamma, eps=1e39)
        with pytest.raises(ValueError, match=refused):
            kernels.forward(x, gamma, beta, eps=1e39)
    # The largest f32 is accepted and used (dX ~ 1e-19 then, below f16's smallest number).
    if dtype == "f16":
        return
    eps = float(np.finfo(np.float32).max)
    check_backward(host(kernels.backward(dy, x, gamma, eps=eps)), *host((dy, x, gamma)), eps=eps, dtype=dtype)


# ---- 6. permissions of written artifacts ------------------------------------------------------


@pytest.fixture
def umask():
    """Sets the process umask for a test and restores it."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path):
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_follow_the_umask(tmp_path, umask):
    """A built artifact, its record and manifest.json are readable by others
    under umask 022, as any file the user creates: a shared folder must work."""
    umask(0o022)
    path = cache.ArtifactStore.build(Specialization(LAYERNORM_FORWARD, "f32"), VMVX, tmp_path / "out")
    manifest = cache.write_manifest(tmp_path / "out")
    for written in (path, path.with_name(path.name + ".json"), manifest):
        assert mode(written) == 0o644, f"{written.name} has mode {oct(mode(written))}"
    umask(0o077)
    cache.atomic_write(tmp_path / "private", b"bytes")
    assert mode(tmp_path / "private") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "private"]
