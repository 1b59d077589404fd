"""Times IREE's LayerNorm and RMSNorm backward and forward against torch
eager, torch.compile, Liger-Kernel (and NumPy on CPUs), all in one run.

Method (the same for every implementation): each one's outputs are first
checked against the float64 reference on the shape (outputs poisoned with
NaN before that call); one that is wrong is reported and not timed. Inputs
are on the device before timing. Each implementation gets its own copies of
the per-call row inputs (dY and X for the backward, X for the forward), as
many sets as make them together exceed twice the L2 cache, and the calls
rotate among them, so no call finds its inputs in cache from the last.
After a warm-up of each, a trial queues back-to-back calls (at least one per
set) and synchronises once; time per call = trial wall time / calls; the
implementations of a case take turns trial by trial (``time_interleaved``);
the reported time is the median over trials. The copy bandwidth is measured
in the same run. GB/s counts the bytes that must move (``bytes_moved``)."""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from . import runtime, targets
from .dtypes import STATS_DTYPES, STORAGE_DTYPES
from .kernels import LAYERNORM_BACKWARD, LAYERNORM_FORWARD, RMSNORM_BACKWARD, RMSNORM_FORWARD
from .reference import (TOLERANCE, backward_reference, forward_reference, relative_error, rmsnorm_backward_reference,
                        rmsnorm_forward_reference)
from .specialization import Role

# What bench times, and the entry point (kernel, name) each one is: its
# argument roles give the bytes it must move and its outputs' shapes.
OP_ENTRIES = {
    "backward": LAYERNORM_BACKWARD.entry("layernorm_backward"),
    "forward": LAYERNORM_FORWARD.entry("layernorm_forward"),
    "rmsnorm_backward": RMSNORM_BACKWARD.entry("rmsnorm_backward"),
    "rmsnorm_forward": RMSNORM_FORWARD.entry("rmsnorm_forward"),
}
OPS = tuple(OP_ENTRIES)
# `bench --norm`: which of OPS its `--op backward|forward` means.
NORM_OPS = {"layernorm": {"backward": "backward", "forward": "forward"},
            "rmsnorm": {"backward": "rmsnorm_backward", "forward": "rmsnorm_forward"}}
# Every implementation bench knows, in table order; `--impl` takes these names.
IMPLS = ("iree_static", "iree", "torch_eager", "torch_compile", "liger", "numpy")
IREE_IMPLS = ("iree_static", "iree")
# Used when the device reports no L2 size (CPUs, torch absent): a large CPU L2/L3.
L2_BYTES_DEFAULT = 64 << 20
# More sets than this only happen for tiny shapes; their creation would cost
# more than the timing. A capped rotation is recorded as not beyond 2x L2.
MAX_INPUT_SETS = 4096
EPS = 1e-5
TRIALS = 15
# Calls before the trials, long enough for a GPU to leave its idle clocks.
WARMUP_S = 0.1


def bytes_moved(m: int, n: int, dtype: str, op: str = "backward") -> int:
    """Bytes an implementation must move (docs/performance.md, Floors): each
    argument of the op's entry point read or written once. LayerNorm's
    backward: dY, X read and dX written, gamma read, dgamma, dbeta written,
    mean, rstd (f32) read; its forward: X read and Y written, gamma, beta
    read, mean, rstd (f32) written. RMSNorm's: the same without beta, dbeta and mean."""
    if op not in OP_ENTRIES:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    entry = OP_ENTRIES[op]
    size = {Role.ROWS: m * n * STORAGE_DTYPES[dtype].itemsize, Role.COLUMNS: n * STORAGE_DTYPES[dtype].itemsize,
            Role.ROW_STATS: m * 4}
    return sum(size[arg.role] for arg in entry.inputs + entry.outputs)


def input_sets(set_bytes: int, l2_bytes: int, max_sets: int = MAX_INPUT_SETS) -> int:
    """How many copies of ``set_bytes`` of per-call inputs to rotate among so
    that together they exceed twice ``l2_bytes`` (at most ``max_sets``)."""
    if set_bytes <= 0 or l2_bytes < 0:
        raise ValueError(f"set_bytes must be > 0 and l2_bytes >= 0, got {set_bytes}, {l2_bytes}")
    return min(max_sets, 2 * l2_bytes // set_bytes + 1)


def parse_shape(text: str) -> tuple[int, int]:
    try:
        m, n = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"shape must look like 8192x4096, got {text!r}") from e
    if m <= 0 or n <= 0:
        raise ValueError(f"shape dims must be positive, got {text!r}")
    return m, n


def time_interleaved(timed, n_sets: int, min_trial_s=0.02, trials=TRIALS, warmup_s=WARMUP_S) -> list[list[float]]:
    """Seconds per call of each ``(call, synchronize)`` in ``timed``, one
    sample per trial (see the module docstring). ``call(i)`` runs on input set
    ``i``. Each one is warmed up for ``warmup_s``; then trial t of every one
    runs before trial t + 1 of any, so a drift of the device's clocks over
    the run is shared by all of them instead of falling on whichever comes first."""
    counts = []
    for call, synchronize in timed:
        for i in range(3):  # the first calls may compile or load
            call(i % n_sets)
        synchronize()
        # Synchronised calls, so that no queue of slow calls builds up behind the clock.
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < warmup_s:
            call(calls % n_sets)
            synchronize()
            calls += 1
        once = max((time.perf_counter() - start) / max(calls, 1), 1e-7)
        counts.append(max(n_sets, min(2000, math.ceil(min_trial_s / once))))
    samples = [[] for _ in timed]
    for _ in range(trials):
        for (call, synchronize), calls, mine in zip(timed, counts, samples):
            start = time.perf_counter()
            for i in range(calls):
                call(i % n_sets)
            synchronize()
            mine.append((time.perf_counter() - start) / calls)
    return samples


def time_calls(call, synchronize, n_sets: int, min_trial_s=0.02, trials=TRIALS) -> float:
    """Median seconds per call of one implementation (``time_interleaved``)."""
    return statistics.median(time_interleaved([(call, synchronize)], n_sets, min_trial_s, trials)[0])


def make_inputs(rng, m, n, dtype):
    """dY, X, gamma in the storage dtype and X's f32 mean and rstd."""
    storage = STORAGE_DTYPES[dtype]
    x = (rng.standard_normal((m, n), np.float32) * 2 + 0.5).astype(storage)
    dy = rng.standard_normal((m, n), np.float32).astype(storage)
    gamma = (1 + 0.5 * rng.standard_normal(n, np.float32)).astype(storage)
    xf = x.astype(np.float32)
    mean = xf.mean(axis=1)
    rstd = (1 / np.sqrt(((xf - mean[:, None]) ** 2).mean(axis=1) + EPS)).astype(np.float32)
    return dy, x, gamma, mean.astype(np.float32), rstd


@dataclass
class Case:
    """One (op, dtype, M, N) measurement: host inputs split into the per-call
    row inputs (rotated) and the rest, and the float64 reference outputs."""

    op: str
    dtype: str
    m: int
    n: int
    rows: tuple  # the ROWS inputs: dY, X (backward) or X (forward)
    rest: tuple  # the other inputs: gamma and the statistics (backward) or gamma (and beta) (forward)
    want: tuple  # the float64 outputs
    n_sets: int

    @property
    def output_shapes(self) -> tuple:
        shape = {Role.ROWS: (self.m, self.n), Role.COLUMNS: (self.n,), Role.ROW_STATS: (self.m,)}
        return tuple(shape[arg.role] for arg in OP_ENTRIES[self.op].outputs)

    @property
    def output_dtypes(self) -> tuple:
        stats = {Role.ROW_STATS: STATS_DTYPES[self.dtype]}
        return tuple(stats.get(arg.role, STORAGE_DTYPES[self.dtype]) for arg in OP_ENTRIES[self.op].outputs)


@dataclass
class Candidate:
    """An implementation ready to run a case: ``call(i)`` queues one call on
    input set ``i``; ``check()`` runs set 0 into poisoned outputs and returns
    them on the host; ``synchronize()`` waits for queued calls."""

    build: str
    call: Callable[[int], object]
    check: Callable[[], list]
    synchronize: Callable[[], None]
    setup_s: float | None = None  # compile time, where the first call compiles


def numpy_backward(dy, x, gamma, mean, rstd):
    """The backward in float32 NumPy (the CPU comparison)."""
    dyf, xf, gf = dy.astype(np.float32), x.astype(np.float32), gamma.astype(np.float32)
    x_hat = (xf - mean[:, None]) * rstd[:, None]
    g = dyf * gf
    dx = rstd[:, None] * (g - g.mean(-1, keepdims=True) - x_hat * (g * x_hat).mean(-1, keepdims=True))
    return dx.astype(dy.dtype), (dyf * x_hat).sum(0).astype(dy.dtype), dyf.sum(0).astype(dy.dtype)


def numpy_rmsnorm_backward(dy, x, gamma, rstd):
    """RMSNorm's backward in float32 NumPy."""
    dyf, xf = dy.astype(np.float32), x.astype(np.float32)
    x_hat = xf * rstd[:, None]
    g = dyf * gamma.astype(np.float32)
    dx = rstd[:, None] * (g - x_hat * (g * x_hat).mean(-1, keepdims=True))
    return dx.astype(dy.dtype), (dyf * x_hat).sum(0).astype(dy.dtype)


def numpy_rmsnorm_forward(x, gamma):
    """RMSNorm's forward in float32 NumPy: y, rstd."""
    xf = x.astype(np.float32)
    rstd = 1 / np.sqrt((xf * xf).mean(axis=1) + EPS)
    return (xf * rstd[:, None] * gamma.astype(np.float32)).astype(x.dtype), rstd


def numpy_forward(x, gamma, beta):
    """The forward in float32 NumPy: y, mean, rstd."""
    xf = x.astype(np.float32)
    mean = xf.mean(axis=1)
    centred = xf - mean[:, None]
    rstd = 1 / np.sqrt((centred * centred).mean(axis=1) + EPS)
    y = centred * rstd[:, None] * gamma.astype(np.float32) + beta.astype(np.float32)
    return y.astype(x.dtype), mean, rstd


class IreeImpl:
    """LayerNormKernels with the dynamic-shape artifact or the one specialised to each shape."""

    def __init__(self, device, *, static: bool, chip=None, artifact_dir=None):
        self.kernels = runtime.LayerNormKernels(device, chip=chip, artifact_dir=artifact_dir, static_shapes=static)
        what = "artifact specialised to M x N" if static else "dynamic-shape artifact (any M, N)"
        self.build = f"{what}, target {self.kernels.target.name}, outputs preallocated per input set"

    def prepare(self, case: Case) -> list[Candidate]:
        k = self.kernels
        sets = [[k.to_device(a) for a in case.rows] for _ in range(case.n_sets)]
        rest = [k.to_device(a) for a in case.rest]
        dtypes = case.output_dtypes
        # Results go to buffers allocated once per set, as a training loop would keep them.
        outs = [tuple(k.allocate(s, d) for s, d in zip(case.output_shapes, dtypes)) for _ in range(case.n_sets)]
        fn = {"backward": k.backward, "forward": functools.partial(k.forward, eps=EPS),
              "rmsnorm_backward": k.rmsnorm_backward,
              "rmsnorm_forward": functools.partial(k.rmsnorm_forward, eps=EPS)}[case.op]

        def check():
            poisoned = tuple(k.to_device(np.full(s, np.nan, d)) for s, d in zip(case.output_shapes, dtypes))
            return [np.asarray(o.to_host()) for o in fn(*sets[0], *rest, out=poisoned)]

        return [Candidate(self.build, lambda i: fn(*sets[i], *rest, out=outs[i], wait=False), check, k.synchronize)]


class TorchPeers:
    """torch eager, torch.compile and Liger on torch tensors of one device."""

    def __init__(self, torch, device: str):
        self.torch = torch
        self.device = device  # "cuda" or "cpu"
        self._case = None

    def to(self, array):
        array = np.ascontiguousarray(array)
        if array.dtype == STORAGE_DTYPES["bf16"]:
            # NumPy has no bfloat16 that torch reads: pass the bits.
            return self.torch.from_numpy(array.view(np.uint16)).view(self.torch.bfloat16).to(self.device)
        return self.torch.from_numpy(array).to(self.device)

    def synchronize(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def tensors(self, case: Case):
        """The case's rotated row inputs and the rest as tensors, shared by the torch peers."""
        if self._case is not case:
            self._case = self._sets = self._rest = None  # free the last case's tensors first
            first = [self.to(a) for a in case.rows]
            self._sets = [first] + [[t.clone() for t in first] for _ in range(case.n_sets - 1)]
            self._rest = [self.to(a) for a in case.rest]
            self._case = case
        return self._sets, self._rest

    def candidate(self, case: Case, build: str, fn, rest=None) -> Candidate:
        """``fn(*rows, *rest)`` -> outputs as a Candidate (``rest``: the case's
        by default); outputs are allocated by torch, so the check first fills
        and frees same-sized blocks with NaN (the caching allocator hands those
        blocks to the call)."""
        sets, case_rest = self.tensors(case)
        rest = case_rest if rest is None else rest
        torch = self.torch
        dtype = sets[0][0].dtype

        def check():
            poison = [torch.full(s, float("nan"), dtype=d, device=self.device)
                      for d in (dtype, torch.float32) for s in case.output_shapes]
            del poison
            return [o.float().cpu().numpy() for o in fn(*sets[0], *rest)]

        return Candidate(build, lambda i: fn(*sets[i], *rest), check, self.synchronize)

    def aten_backward(self, case: Case):
        """aten.native_layer_norm_backward and the arguments it takes after
        the row inputs, made once so that no call adds a conversion or fill."""
        torch = self.torch
        _, (gamma, mean, rstd) = self.tensors(case)
        if self.device == "cpu":
            # torch's CPU kernel keeps the statistics in the input dtype (its
            # forward returns them so); CUDA keeps them in f32.
            mean, rstd = mean.to(gamma.dtype), rstd.to(gamma.dtype)
        beta = torch.zeros_like(gamma)  # only its dtype and shape matter
        n = case.n

        def backward(dy, x, gamma, mean, rstd, beta):
            return tuple(torch.ops.aten.native_layer_norm_backward(
                dy, x, [n], mean, rstd, gamma, beta, [True, True, True]
            ))

        return backward, (gamma, mean[:, None], rstd[:, None], beta)

    @staticmethod
    def math_backward(dy, x, gamma, mean, rstd):
        dyf, xf, gf = dy.float(), x.float(), gamma.float()
        x_hat = (xf - mean[:, None]) * rstd[:, None]
        g = dyf * gf
        dx = rstd[:, None] * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
        return dx.to(dy.dtype), (dyf * x_hat).sum(0).to(dy.dtype), dyf.sum(0).to(dy.dtype)

    def aten_forward(self, n):
        torch = self.torch

        def forward(x, gamma, beta):
            y, mean, rstd = torch.native_layer_norm(x, [n], gamma, beta, EPS)
            return y, mean.view(-1), rstd.view(-1)

        return forward

    def rms_forward(self, n):
        torch = self.torch

        def forward(x, gamma):
            y, rstd = torch.ops.aten._fused_rms_norm(x, [n], gamma, EPS)
            return y, rstd.view(-1)

        return forward

    def rms_backward(self, case: Case):
        """aten._fused_rms_norm_backward (the CUDA kernel behind
        torch.nn.functional.rms_norm's backward) and its arguments after the rows."""
        torch = self.torch
        _, (gamma, rstd) = self.tensors(case)
        n = case.n

        def backward(dy, x, gamma, rstd):
            return tuple(torch.ops.aten._fused_rms_norm_backward(dy, x, [n], rstd, gamma, [True, True]))

        return backward, (gamma, rstd[:, None])

    @staticmethod
    def math_rms_backward(dy, x, gamma, rstd):
        dyf, xf = dy.float(), x.float()
        x_hat = xf * rstd[:, None]
        g = dyf * gamma.float()
        dx = rstd[:, None] * (g - x_hat * (g * x_hat).mean(-1, keepdim=True))
        return dx.to(dy.dtype), (dyf * x_hat).sum(0).to(dy.dtype)

    def eager(self, case: Case) -> list[Candidate]:
        if case.op == "backward":
            fn, rest = self.aten_backward(case)
            return [self.candidate(case, "eager torch.ops.aten.native_layer_norm_backward", fn, rest)]
        if case.op == "rmsnorm_backward":
            if self.device == "cuda":
                fn, rest = self.rms_backward(case)
                return [self.candidate(case, "eager torch.ops.aten._fused_rms_norm_backward", fn, rest)]
            # torch's CPU rms_norm backward is autograd through its composite forward: the same float32 math.
            return [self.candidate(case, "eager float32 torch math (CPU rms_norm has no fused backward)",
                                   self.math_rms_backward)]
        if case.op == "rmsnorm_forward":
            return [self.candidate(case, "eager torch.ops.aten._fused_rms_norm", self.rms_forward(case.n))]
        return [self.candidate(case, "eager torch.native_layer_norm", self.aten_forward(case.n))]

    def compiled(self, case: Case):
        """torch.compile per shape and dtype: dynamic=False after torch._dynamo.reset()
        (one function compiled for several shapes would be recompiled with dynamic
        shapes). The variants are distinct functions, so each keeps its own
        compiled code while all are timed together."""
        if case.op == "backward":
            variants = [("aten.native_layer_norm_backward", *self.aten_backward(case)),
                        ("explicit float32 math", self.math_backward, None)]
        elif case.op == "rmsnorm_backward":
            variants = [("explicit float32 math", self.math_rms_backward, None)]
        elif case.op == "rmsnorm_forward":
            variants = [("aten._fused_rms_norm", self.rms_forward(case.n), None)]
        else:
            variants = [("torch.native_layer_norm", self.aten_forward(case.n), None)]
        self.torch._dynamo.reset()
        for what, fn, rest in variants:
            compiled = self.torch.compile(fn, dynamic=False)
            candidate = self.candidate(case, f"torch.compile per shape and dtype, dynamic=False, {what}", compiled, rest)
            start = time.perf_counter()
            candidate.call(0)  # compiles here, outside any timing
            self.synchronize()
            candidate.setup_s = time.perf_counter() - start
            yield candidate


class LigerPeer:
    """Liger-Kernel's Triton LayerNorm and RMSNorm (liger_kernel.ops.layer_norm, .rms_norm)."""

    def __init__(self, peers: TorchPeers):
        from liger_kernel.ops import rms_norm
        from liger_kernel.ops.layer_norm import layer_norm_backward, layer_norm_forward

        self.peers = peers
        self.forward_fn, self.backward_fn = layer_norm_forward, layer_norm_backward
        self.rms_norm = rms_norm
        self.version = metadata.version("liger-kernel")

    def prepare_rmsnorm(self, case: Case) -> list[Candidate]:
        """Liger's RMSNorm in its "llama" casting mode (rstd in f32), offset 0, not in place."""
        ops = self.rms_norm
        if case.op == "rmsnorm_forward":

            def forward(x, gamma):
                y, _, rstd, _, _, _ = ops.rms_norm_forward(x, gamma, EPS, 0.0, "llama", None)
                return y, rstd

            return [self.peers.candidate(case, f"liger-kernel {self.version} ops.rms_norm.rms_norm_forward", forward)]
        sets, (gamma, _) = self.peers.tensors(case)
        # The block size and warps Liger's forward picks for this N, which its backward takes.
        _, _, _, block, warps, mode = ops.rms_norm_forward(sets[0][1], gamma, EPS, 0.0, "llama", None)

        def backward(dy, x, gamma, rstd):
            return ops.rms_norm_backward(dy, x, gamma, rstd, 0.0, mode, block, warps, False, None)

        return [self.peers.candidate(case, f"liger-kernel {self.version} ops.rms_norm.rms_norm_backward", backward)]

    def prepare(self, case: Case) -> list[Candidate]:
        if case.op.startswith("rmsnorm"):
            return self.prepare_rmsnorm(case)
        if case.op == "backward":
            _, (gamma, _, _) = self.peers.tensors(case)
            beta = self.peers.torch.zeros_like(gamma)  # only its dtype matters (dbeta's)

            def backward(dy, x, gamma, mean, rstd):
                return self.backward_fn(dy, x, gamma, beta, mean, rstd)

            return [self.peers.candidate(case, f"liger-kernel {self.version} ops.layer_norm.layer_norm_backward", backward)]

        def forward(x, gamma, beta):
            y, _, mean, rstd, _, _ = self.forward_fn(x, gamma, beta, EPS)
            return y, mean, rstd

        return [self.peers.candidate(case, f"liger-kernel {self.version} ops.layer_norm.layer_norm_forward", forward)]


def numpy_candidates(case: Case) -> list[Candidate]:
    sets = [case.rows] + [tuple(a.copy() for a in case.rows) for _ in range(case.n_sets - 1)]
    fn = {"backward": numpy_backward, "forward": numpy_forward, "rmsnorm_backward": numpy_rmsnorm_backward,
          "rmsnorm_forward": numpy_rmsnorm_forward}[case.op]
    return [Candidate("float32 NumPy math", lambda i: fn(*sets[i], *case.rest),
                      lambda: list(fn(*sets[0], *case.rest)), lambda: None)]


def default_impls(driver: str) -> tuple[str, ...]:
    """What ``bench`` times when not told: every implementation that can run
    beside ``driver`` (NumPy on the host's drivers, Liger on GPUs)."""
    skip = "liger" if driver.startswith("local") else "numpy"
    return tuple(i for i in IMPLS if i != skip)


def torch_device(driver: str) -> str | None:
    """The torch device that shares hardware with an IREE driver (None: no torch peer)."""
    if driver in ("cuda", "hip"):
        return "cuda"
    if driver.startswith("local"):
        return "cpu"
    return None


def limit_cpu_threads(device: str, threads: int) -> None:
    """Runs the host implementations on ``threads`` cores: IREE's local-task
    worker count (a runtime flag, read when the device is created, so this must
    come before the first LayerNormKernels of the process) and torch's."""
    if not device.startswith("local"):
        raise ValueError(f"threads applies to the local-task and local-sync devices, not {device!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    from iree import runtime as ireert

    ireert.flags.parse_flags(f"--task_topology_max_group_count={threads}")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def copy_gbps_of(copy, synchronize, nbytes: int) -> float:
    """Copy bandwidth (bytes read + written per second) of ``copy()``."""
    seconds = time_calls(lambda i: copy(), synchronize, 1, trials=9)
    return 2 * nbytes / seconds / 1e9


class Bench:
    """Which implementations can run on ``device``, and the device's copy bandwidth and L2."""

    def __init__(self, device, impls, *, chip=None, artifact_dir=None, l2_bytes=None):
        unknown = sorted(set(impls) - set(IMPLS))
        if unknown:
            raise ValueError(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLS)}")
        self.device = device
        self.notes: list[str] = []  # why a requested implementation is not in the results
        self.chip = targets.target_for(device, chip).chip
        self.impls: dict[str, Callable[[Case], list[Candidate]]] = {}
        for impl in IREE_IMPLS:
            if impl in impls:
                iree = IreeImpl(device, static=impl == "iree_static", chip=chip, artifact_dir=artifact_dir)
                self.impls[impl] = iree.prepare
        self.torch = self._torch_peers([i for i in impls if i in ("torch_eager", "torch_compile", "liger")])
        if self.torch is not None:
            for impl, prepare in (("torch_eager", self.torch.eager), ("torch_compile", self.torch.compiled)):
                if impl in impls:
                    self.impls[impl] = prepare
            if "liger" in impls:
                self._add_liger()
        if "numpy" in impls:
            if device.startswith("local"):
                self.impls["numpy"] = numpy_candidates
            else:
                self.notes.append(f"numpy: runs on the host CPU, not compared on {device}")
        if not self.impls:
            raise RuntimeError(f"nothing to time on {device}: " + "; ".join(self.notes))
        self.impls = {i: self.impls[i] for i in IMPLS if i in self.impls}
        self.copy_gbps, self.l2_bytes, self.name = self._device_figures(l2_bytes)

    def _torch_peers(self, wanted) -> TorchPeers | None:
        if not wanted:
            return None
        where = torch_device(self.device)
        try:
            import torch
        except ImportError:
            self.notes.append(f"{', '.join(wanted)}: torch is not installed (pip install 'lnbwd-iree[torch]')")
            return None
        if where is None:
            self.notes.append(f"{', '.join(wanted)}: torch has no device that shares hardware with {self.device}")
            return None
        if where == "cuda" and not torch.cuda.is_available():
            self.notes.append(
                f"{', '.join(wanted)}: this torch ({torch.__version__}, CUDA build {torch.version.cuda},"
                f" HIP build {torch.version.hip}) sees no GPU"
            )
            return None
        # One compile thread: inductor's worker pool would compete for the CPU
        # with the host-bound small calls timed in the same process.
        os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
        return TorchPeers(torch, where)

    def _add_liger(self):
        if self.torch.device != "cuda":
            self.notes.append("liger: its Triton kernels run on GPUs only")
            return
        try:
            liger = LigerPeer(self.torch)
        except ImportError as e:
            self.notes.append(f"liger: not importable ({e}); pip install 'lnbwd-iree[peers]'")
            return
        self.impls["liger"] = liger.prepare

    def _device_figures(self, l2_bytes):
        if self.torch is not None and self.torch.device == "cuda":
            torch = self.torch.torch
            props = torch.cuda.get_device_properties(0)
            a = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
            b = torch.empty_like(a)
            copy = copy_gbps_of(lambda: b.copy_(a), torch.cuda.synchronize, a.nbytes)
            del a, b
            return copy, l2_bytes or int(props.L2_cache_size), props.name
        if self.device.startswith("local"):
            name = platform.processor() or platform.machine()
            a = np.random.default_rng(0).random(1 << 26, dtype=np.float32)
            b = np.empty_like(a)
            return copy_gbps_of(lambda: np.copyto(b, a), lambda: None, a.nbytes), l2_bytes or L2_BYTES_DEFAULT, name
        self.notes.append(f"copy bandwidth: not measured on {self.device} without torch; % of copy left empty")
        return None, l2_bytes or L2_BYTES_DEFAULT, self.device

    def cases(self, rng, dtype, m, n, ops):
        """The cases of one shape and dtype, on one draw of inputs."""
        dy, x, gamma, mean, rstd = make_inputs(rng, m, n, dtype)
        beta = (0.5 * rng.standard_normal(n, np.float32)).astype(gamma.dtype)
        rms_rstd = numpy_rmsnorm_forward(x, gamma)[1].astype(np.float32)
        for op in ops:
            if op == "backward":
                rows, rest, want = (dy, x), (gamma, mean, rstd), backward_reference(dy, x, gamma, mean, rstd)
            elif op == "forward":
                rows, rest, want = (x,), (gamma, beta), forward_reference(x, gamma, beta, EPS)
            elif op == "rmsnorm_backward":
                rows, rest, want = (dy, x), (gamma, rms_rstd), rmsnorm_backward_reference(dy, x, gamma, rms_rstd)
            else:
                rows, rest, want = (x,), (gamma,), rmsnorm_forward_reference(x, gamma, EPS)
            n_sets = input_sets(sum(a.nbytes for a in rows), self.l2_bytes)
            yield Case(op, dtype, m, n, rows, rest, want, n_sets)

    def measure(self, case: Case) -> list[dict]:
        """One record per implementation: each checked on the case, then the
        correct ones timed together (``time_interleaved``); an implementation
        with several candidates reports its fastest."""
        moved = bytes_moved(case.m, case.n, case.dtype, case.op)
        set_bytes = sum(a.nbytes for a in case.rows)
        rows, timed = {}, []  # timed: (impl, candidate, max relative error)
        for impl, prepare in self.impls.items():
            rows[impl] = row = {
                "impl": impl, "op": case.op, "m": case.m, "n": case.n, "dtype": case.dtype,
                "median_us": None, "gbps": None, "pct_of_copy": None, "build": None,
                "correct": False, "max_rel_error": None, "tolerance": TOLERANCE[case.dtype],
                "input_sets": case.n_sets, "rotated_bytes": case.n_sets * set_bytes,
                "rotated_beyond_2x_l2": case.n_sets * set_bytes > 2 * self.l2_bytes,
            }
            mine = []
            try:
                for candidate in prepare(case):
                    outputs = candidate.check()
                    error = max(relative_error(np.asarray(o, np.float64).reshape(w.shape), w)
                                for o, w in zip(outputs, case.want))
                    row.update(build=candidate.build, max_rel_error=error)
                    if not error <= TOLERANCE[case.dtype]:  # NaN (an unwritten output) fails too
                        mine = []
                        break
                    mine.append((impl, candidate, error))
            except Exception as e:  # noqa: BLE001 - a peer failing on one shape is a result, not the end of the run
                row["error"] = f"{type(e).__name__}: {e}"
                mine = []
            timed += mine
        samples = time_interleaved([(c.call, c.synchronize) for _, c, _ in timed], case.n_sets) if timed else []
        for impl in rows:
            results = [(statistics.median(s), min(s), max(s), c, e) for (i, c, e), s in zip(timed, samples) if i == impl]
            if not results:
                continue
            seconds, fastest, slowest, candidate, error = min(results, key=lambda r: r[0])
            row = rows[impl]
            row.update(build=candidate.build, correct=True, max_rel_error=error, median_us=seconds * 1e6,
                       trial_range_us=[fastest * 1e6, slowest * 1e6], gbps=moved / seconds / 1e9)
            if self.copy_gbps:
                row["pct_of_copy"] = 100 * row["gbps"] / self.copy_gbps
            if candidate.setup_s is not None:
                row["compile_s"] = candidate.setup_s
            if len(results) > 1:
                row["alternatives"] = [{"build": c.build, "median_us": t * 1e6, "compile_s": c.setup_s}
                                       for t, _, _, c, _ in results]
        return list(rows.values())


def log_row(log, row: dict) -> None:
    head = f"{row['op']:8s} {row['impl']:13s} {row['dtype']:4s} {row['m']}x{row['n']}"
    if row.get("error"):
        log(f"{head} FAILED: {row['error']}")
    elif not row["correct"]:
        log(f"{head} WRONG: relative error {row['max_rel_error']:.1e} > {row['tolerance']:.1e} ({row['build']}); not timed")
    else:
        pct = f" {row['pct_of_copy']:5.1f}% of copy" if row["pct_of_copy"] is not None else ""
        log(f"{head} {row['median_us']:10.1f} us {row['gbps']:8.1f} GB/s{pct}  err {row['max_rel_error']:.1e}"
            f"  [{row['input_sets']} sets]")


def run(device: str, shapes, dtypes, *, ops=("backward",), chip=None, artifact_dir=None, impls=None, seed=None,
        threads=None, l2_bytes=None, log=print) -> dict:
    """Checks and times ``impls`` (default: all) for each op, dtype and shape; returns the report."""
    if threads is not None:
        limit_cpu_threads(device, threads)
    bench = Bench(device, impls or default_impls(device), chip=chip, artifact_dir=artifact_dir, l2_bytes=l2_bytes)
    for note in bench.notes:
        log(f"skipped {note}")
    copy = f"{bench.copy_gbps:.1f} GB/s" if bench.copy_gbps else "not measured"
    log(f"device {bench.name}: copy {copy}, L2 {bench.l2_bytes / 2**20:.1f} MiB; timing {', '.join(bench.impls)}")
    rng = np.random.default_rng(seed)
    results = []
    for dtype in dtypes:
        for m, n in shapes:
            for case in bench.cases(rng, dtype, m, n, ops):
                for row in bench.measure(case):
                    log_row(log, row)
                    results.append(row)
    versions = {}
    for package in ("iree-base-runtime", "torch", "liger-kernel"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "device": bench.name,
        "driver": device,
        "chip": bench.chip,
        "iree_version": versions["iree-base-runtime"],
        "torch_version": versions["torch"],
        "liger_version": versions["liger-kernel"],
        "date": datetime.date.today().isoformat(),
        "copy_gbps": bench.copy_gbps,
        "l2_bytes": bench.l2_bytes,
        # None: each library's default (IREE and torch both use one thread per physical core).
        "threads": threads,
        "timing": f"checked against float64 first; {WARMUP_S} s warm-up each; back-to-back calls, one synchronisation"
                  f" per trial, implementations taking turns trial by trial, median over {TRIALS} trials; each"
                  " implementation rotates its own copies of the row inputs, > 2x L2 together",
        "notes": bench.notes,
        "results": results,
    }


def report_paths(stem: Path) -> list[Path]:
    return [stem.with_suffix(s) for s in (".json", ".md", ".png")]


def _write_atomically(path: Path, write) -> None:
    """``write(tmp)`` then rename: an interrupted run leaves no half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cell(row) -> str:
    if row is None:
        return ""
    if row.get("error"):
        return "failed"
    if not row["correct"]:
        return f"WRONG ({row['max_rel_error']:.0e})"
    pct = f" ({row['pct_of_copy']:.0f}%)" if row["pct_of_copy"] is not None else ""
    return f"{row['median_us']:.1f}{pct}"


def markdown(report: dict) -> str:
    rows = report["results"]
    by = {(r["op"], r["impl"], r["dtype"], r["m"], r["n"]): r for r in rows}
    copy = f"; copy bandwidth {report['copy_gbps']:.0f} GB/s" if report["copy_gbps"] else ""
    norms = [norm for norm, ops in NORM_OPS.items() if any(r["op"] in ops.values() for r in rows)]
    lines = [
        f"# {' and '.join(norms) or 'no'} benchmark: {report['device']} ({report['driver']}, {report['chip']})",
        "",
        f"IREE {report['iree_version']}, torch {report['torch_version']}, Liger {report['liger_version']},"
        f" {report['date']}{copy}; L2 {report['l2_bytes'] / 2**20:.1f} MiB.",
        "",
        f"Timing: {report['timing']}." + (f" Host threads: {report['threads']}." if report.get("threads") else ""),
        "Cells: median us per call (% of copy bandwidth); WRONG: failed the float64 check, not timed.",
    ]
    lines += [f"Skipped {note}." for note in report.get("notes", [])]
    for op in OPS:
        op_rows = [r for r in rows if r["op"] == op]
        if not op_rows:
            continue
        impls = [i for i in IMPLS if any(r["impl"] == i for r in op_rows)]
        peers = [i for i in impls if i not in IREE_IMPLS]
        ours = [i for i in impls if i in IREE_IMPLS]
        ratio = bool(peers and ours)
        lines += ["", f"## {op}", "",
                  "| dtype | M x N | " + " | ".join(impls) + (" | best peer / best IREE time |" if ratio else " |"),
                  "|---" * (len(impls) + 2 + ratio) + "|"]
        for dtype, m, n in dict.fromkeys((r["dtype"], r["m"], r["n"]) for r in op_rows):
            cells = [_cell(by.get((op, i, dtype, m, n))) for i in impls]
            line = f"| {dtype} | {m}x{n} | " + " | ".join(cells) + " |"
            if ratio:
                def best(group):
                    times = [by[k]["median_us"] for i in group if (k := (op, i, dtype, m, n)) in by
                             and by[k]["median_us"] is not None]
                    return min(times, default=None)

                peer, iree = best(peers), best(ours)
                line += f" {peer / iree:.2f} |" if peer and iree else " |"
            lines.append(line)
        lines += ["", "Builds:", ""]
        builds = {}
        for r in op_rows:
            if r["build"]:
                builds.setdefault((r["impl"], r["build"]), []).append(f"{r['dtype']} {r['m']}x{r['n']}")
        for (impl, text), where in builds.items():
            lines.append(f"- {impl}: {text} (fastest build in {len(where)} row(s))")
    return "\n".join(lines) + "\n"


def write_report(report: dict, stem: Path, log=print) -> list[Path]:
    """JSON, a markdown table and (with matplotlib) a PNG plot beside each other."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path, png_path = report_paths(stem)
    _write_atomically(json_path, lambda p: p.write_text(json.dumps(report, indent=2)))
    _write_atomically(md_path, lambda p: p.write_text(markdown(report)))
    paths = [json_path, md_path]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib is not installed: no {png_path.name} (pip install 'lnbwd-iree[bench]')")
        return paths
    rows = [r for r in report["results"] if r["gbps"] is not None]
    ops = [op for op in OPS if any(r["op"] == op for r in rows)]
    if not ops:
        log(f"no timed results: no {png_path.name}")
        return paths
    keys = list(dict.fromkeys((r["dtype"], r["m"], r["n"]) for r in rows))
    fig, axes = plt.subplots(len(ops), 1, figsize=(max(8, len(keys) * 1.2), 4.5 * len(ops)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops):
        gbps = {(r["impl"], r["dtype"], r["m"], r["n"]): r["gbps"] for r in rows if r["op"] == op}
        impls = [i for i in IMPLS if any(k[0] == i for k in gbps)]
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            ax.bar([i + j * width for i in range(len(keys))], [gbps.get((impl, *key), 0) for key in keys],
                   width, label=impl)
        if report["copy_gbps"]:
            ax.axhline(report["copy_gbps"], color="k", ls="--", lw=1, label="copy")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], [f"{d}\n{m}x{n}" for d, m, n in keys],
                      fontsize=8)
        ax.set_ylabel("effective GB/s")
        ax.set_title(f"LayerNorm {op}, {report['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    _write_atomically(png_path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    paths.append(png_path)
    return paths
