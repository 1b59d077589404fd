"""The implementations bench compares, each ready to run a `Case` as
`Candidate`s that say how they were built: IREE's (static and dynamic
artifacts), torch eager, torch.compile, Liger and NumPy. The peers that
compute with formulas take them from ``lnbwd_iree.reference``."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Callable

import numpy as np

from .. import runtime
from ..dtypes import NUMPY_DTYPES, STATS_DTYPES, STORAGE_DTYPES, TABLE
from .cases import EPS, Case, TimedOp

# Every implementation bench knows, in table order; `--impl` takes these names.
IMPLS = ("iree_static", "iree_direct", "iree", "torch_eager", "torch_compile", "liger", "numpy")
IREE_IMPLS = ("iree_static", "iree_direct", "iree")
TORCH_IMPLS = ("torch_eager", "torch_compile", "liger")
# Run beside torch's CUDA tensors: the kernels IREE compiled, launched without IREE's runtime.
DIRECT_IMPLS = ("iree_direct",)


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


def default_impls(driver: str) -> tuple[str, ...]:
    """What ``bench`` times when not told: every implementation that can run
    beside ``driver`` (NumPy on the host's drivers, Liger on GPUs)."""
    skip = ("liger", "iree_direct") if driver.startswith("local") else ("numpy",)
    return tuple(i for i in IMPLS if i not in skip)


def torch_device(driver: str) -> str | None:
    """The torch device that shares hardware with an IREE driver (None: no torch peer)."""
    if driver in ("cuda", "hip"):
        return "cuda"
    if driver.startswith("local"):
        return "cpu"
    return None


def formula(op: TimedOp, scalars: dict, to, cast) -> Callable:
    """``op``'s reference formula as an implementation: inputs through ``to``
    (its arithmetic type), ROWS and COLUMNS outputs through ``cast`` (the
    storage dtype). What the roles decide is worked out here, so that the
    function torch.compile traces holds tensor work alone."""
    reference, cast_output = op.reference, op.cast_outputs

    def call(*inputs):
        return tuple(cast(o) if cast_it else o for o, cast_it in zip(reference(*inputs, **scalars, to=to), cast_output))

    return call


class IreeImpl:
    """LayerNormKernels with the dynamic-shape artifact or the one specialised to each shape."""

    def __init__(self, device, *, static: bool, chip=None, artifact_dir=None):
        self.kernels = runtime.LayerNormKernels(device, chip=chip, artifact_dir=artifact_dir, static_shapes=static)
        what = "artifact specialised to M x N" if static else "dynamic-shape artifact (any M, N)"
        self.build = f"{what}, target {self.kernels.target.name}, outputs preallocated per input set"

    def prepare(self, case: Case) -> list[Candidate]:
        k = self.kernels
        sets = [tuple(k.to_device(a) for a in case.rows) for _ in range(case.n_sets)]
        rest = tuple(k.to_device(a) for a in case.rest)
        shapes_dtypes = list(zip(case.output_shapes, case.output_dtypes))
        # Results go to buffers allocated once per set, as a training loop would keep them.
        outs = [tuple(k.allocate(s, d) for s, d in shapes_dtypes) for _ in range(case.n_sets)]
        call = functools.partial(k.call, case.op.kernel, case.op.entry.name, **case.scalars)

        def check():
            poisoned = tuple(k.to_device(np.full(s, np.nan, d)) for s, d in shapes_dtypes)
            return [np.asarray(o.to_host()) for o in call(sets[0] + rest, out=poisoned)]

        return [Candidate(self.build, lambda i: call(sets[i] + rest, out=outs[i], wait=False), check, k.synchronize)]


class DirectImpl:
    """The artifact specialised to each shape, its kernels launched from its
    launch plan on torch's current stream (``direct_launch.DirectRunner``,
    what ``lnbwd_iree.torch`` uses on cuda:N): torch tensors in and out,
    outputs preallocated per input set, scratch from torch's allocator."""

    def __init__(self, peers: TorchPeers, target, artifact_dir=None):
        from ..cache import ArtifactStore
        from ..direct_launch import DirectRunner

        torch = peers.torch
        self.peers = peers
        self.index = torch.cuda.current_device()
        self.runner = DirectRunner(self.index, target, static_shapes=True,
                                   store=ArtifactStore(artifact_dirs=(artifact_dir,) if artifact_dir else ()))
        self.build = (f"artifact specialised to M x N, target {self.runner.target.name}, launched from its launch"
                      " plan on torch's stream, outputs preallocated per input set")

    def prepare(self, case: Case) -> list[Candidate]:
        torch, device = self.peers.torch, self.peers.device
        sets, rest = self.peers.tensors(case)
        rest = tuple(rest)
        outputs = [(s, getattr(torch, TABLE[NUMPY_DTYPES[d]].torch_name))
                   for s, d in zip(case.output_shapes, case.output_dtypes)]
        outs = [tuple(torch.empty(s, dtype=d, device=device) for s, d in outputs) for _ in range(case.n_sets)]
        kernel, entry, scalars = case.op.kernel, case.op.entry.name, case.scalars

        def scratch(nbytes):
            return torch.empty(nbytes, dtype=torch.uint8, device=device)

        def call(i, out):
            self.runner.run(kernel, entry, case.dtype, tuple(sets[i]) + rest, out, scalars, scratch,
                            torch._C._cuda_getCurrentRawStream(self.index))

        def check():
            poisoned = tuple(torch.full(s, float("nan"), dtype=d, device=device) for s, d in outputs)
            call(0, poisoned)
            return [o.double().cpu().numpy() for o in poisoned]

        return [Candidate(self.build, lambda i: call(i, outs[i]), check, self.peers.synchronize)]


def numpy_math(case: Case) -> Callable:
    """The case's op in NumPy, in the arithmetic type of its dtype (float32, float64 for f64)."""
    arithmetic, storage = STATS_DTYPES[case.dtype], STORAGE_DTYPES[case.dtype]
    return formula(case.op, case.scalars, lambda a: np.asarray(a, arithmetic), lambda a: a.astype(storage))


def numpy_candidates(case: Case) -> list[Candidate]:
    fn = numpy_math(case)
    sets = [case.rows] + [tuple(a.copy() for a in case.rows) for _ in range(case.n_sets - 1)]
    build = f"{STATS_DTYPES[case.dtype]} NumPy math (lnbwd_iree.reference's formula)"
    return [Candidate(build, lambda i: fn(*sets[i], *case.rest), lambda: list(fn(*sets[0], *case.rest)), lambda: None)]


def aten_layernorm_backward(peers: TorchPeers, case: Case):
    torch = peers.torch
    _, (gamma, mean, rstd) = peers.tensors(case)
    if peers.device == "cpu":
        # torch's CPU kernel keeps the statistics in the input dtype (its
        # forward returns them so); CUDA keeps them in f32.
        mean, rstd = mean.to(gamma.dtype), rstd.to(gamma.dtype)
    beta = torch.zeros_like(gamma)  # only its dtype and shape matter
    n = case.n

    def backward(dy, x, gamma, mean, rstd, beta):
        return tuple(torch.ops.aten.native_layer_norm_backward(dy, x, [n], mean, rstd, gamma, beta, [True, True, True]))

    # The arguments after the rows made once, so that no call adds a conversion or fill.
    return "torch.ops.aten.native_layer_norm_backward", backward, (gamma, mean[:, None], rstd[:, None], beta)


def aten_layernorm_forward(peers: TorchPeers, case: Case):
    torch, n, eps = peers.torch, case.n, case.scalars["eps"]

    def forward(x, gamma, beta):
        y, mean, rstd = torch.native_layer_norm(x, [n], gamma, beta, eps)
        return y, mean.view(-1), rstd.view(-1)

    return "torch.native_layer_norm", forward, None


def aten_rmsnorm_backward(peers: TorchPeers, case: Case):
    """aten._fused_rms_norm_backward: the CUDA kernel behind
    torch.nn.functional.rms_norm's backward. None on CPUs, where that backward
    is autograd through a composite forward, the same float32 math as the reference's."""
    if peers.device != "cuda":
        return None
    torch, n = peers.torch, case.n
    _, (gamma, rstd) = peers.tensors(case)

    def backward(dy, x, gamma, rstd):
        return tuple(torch.ops.aten._fused_rms_norm_backward(dy, x, [n], rstd, gamma, [True, True]))

    return "torch.ops.aten._fused_rms_norm_backward", backward, (gamma, rstd[:, None])


def aten_rmsnorm_forward(peers: TorchPeers, case: Case):
    torch, n, eps = peers.torch, case.n, case.scalars["eps"]

    def forward(x, gamma):
        y, rstd = torch.ops.aten._fused_rms_norm(x, [n], gamma, eps)
        return y, rstd.view(-1)

    return "torch.ops.aten._fused_rms_norm", forward, None


# Kernel name -> torch's own function for it: (peers, case) -> (what,
# fn(*rows, *rest), rest or None for the case's) or None where torch has none.
ATEN = {
    "layernorm_backward": aten_layernorm_backward,
    "layernorm_forward": aten_layernorm_forward,
    "rmsnorm_backward": aten_rmsnorm_backward,
    "rmsnorm_forward": aten_rmsnorm_forward,
}
# Kernel name -> what torch.compile is given ("aten": ATEN's function, "math":
# the reference formula in torch), the fastest reported; default: aten where
# torch has it, else math.
COMPILED = {"layernorm_backward": ("aten", "math"), "rmsnorm_backward": ("math",)}


class TorchPeers:
    """torch eager and torch.compile on torch tensors of one device."""

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
        dtypes = {sets[0][0].dtype, self.arithmetic(case)}

        def check():
            poison = [torch.full(s, float("nan"), dtype=d, device=self.device)
                      for d in dtypes for s in case.output_shapes]
            del poison
            # float64 holds every storage dtype exactly (NumPy reads no bfloat16).
            return [o.double().cpu().numpy() for o in fn(*sets[0], *rest)]

        return Candidate(build, lambda i: fn(*sets[i], *rest), check, self.synchronize)

    def arithmetic(self, case: Case):
        """The torch dtype of the case's arithmetic and statistics."""
        return getattr(self.torch, TABLE[TABLE[case.dtype].accumulator].torch_name)

    def aten(self, case: Case):
        """(what, fn, rest) of torch's own function for the case's kernel (``ATEN``), or None."""
        make = ATEN.get(case.op.kernel.name)
        return make(self, case) if make else None

    def math(self, case: Case):
        """(what, fn, None): the reference formula in torch, in float32 (float64 for f64 data)."""
        to, cast = self.arithmetic(case), getattr(self.torch, TABLE[case.dtype].torch_name)
        what = f"explicit {TABLE[TABLE[case.dtype].accumulator].torch_name} math"
        return what, formula(case.op, case.scalars, lambda t: t.to(to), lambda t: t.to(cast)), None

    def eager(self, case: Case) -> list[Candidate]:
        aten = self.aten(case)
        what, fn, rest = aten or self.math(case)
        if aten is None:
            what += f" (torch has no fused {case.op.kernel.name} on {self.device})"
        return [self.candidate(case, f"eager {what}", fn, rest)]

    def compiled(self, case: Case) -> list[Candidate]:
        """torch.compile per shape and dtype: dynamic=False after torch._dynamo.reset()
        (one function compiled for several shapes would be recompiled with dynamic
        shapes). The variants are distinct functions, so each keeps its own
        compiled code while all are timed together."""
        variants = {"aten": self.aten(case), "math": self.math(case)}
        kinds = COMPILED.get(case.op.kernel.name, ("aten",) if variants["aten"] else ("math",))
        self.torch._dynamo.reset()
        candidates = []
        for what, fn, rest in filter(None, (variants[kind] for kind in kinds)):
            compiled = self.torch.compile(fn, dynamic=False)
            build = f"torch.compile per shape and dtype, dynamic=False, {what}"
            candidate = self.candidate(case, build, compiled, rest)
            start = time.perf_counter()
            candidate.call(0)  # compiles here, outside any timing
            self.synchronize()
            candidate.setup_s = time.perf_counter() - start
            candidates.append(candidate)
        return candidates


class LigerPeer:
    """Liger-Kernel's Triton LayerNorm and RMSNorm (liger_kernel.ops.layer_norm, .rms_norm)."""

    def __init__(self, peers: TorchPeers):
        from liger_kernel.ops import layer_norm, rms_norm

        self.peers = peers
        self.layer_norm, self.rms_norm = layer_norm, rms_norm
        self.version = metadata.version("liger-kernel")

    def prepare(self, case: Case) -> list[Candidate]:
        make = {"layernorm_backward": self.layernorm_backward, "layernorm_forward": self.layernorm_forward,
                "rmsnorm_backward": self.rmsnorm_backward, "rmsnorm_forward": self.rmsnorm_forward}
        if case.op.kernel.name not in make:
            raise NotImplementedError(f"liger: has no {case.op.kernel.name}")
        what, fn = make[case.op.kernel.name](case)
        return [self.peers.candidate(case, f"liger-kernel {self.version} {what}", fn)]

    def layernorm_backward(self, case: Case):
        _, (gamma, _, _) = self.peers.tensors(case)
        beta = self.peers.torch.zeros_like(gamma)  # only its dtype matters (dbeta's)
        layer_norm_backward = self.layer_norm.layer_norm_backward
        return "ops.layer_norm.layer_norm_backward", lambda dy, x, gamma, mean, rstd: layer_norm_backward(
            dy, x, gamma, beta, mean, rstd)

    def layernorm_forward(self, case: Case):
        layer_norm_forward, eps = self.layer_norm.layer_norm_forward, case.scalars["eps"]

        def forward(x, gamma, beta):
            y, _, mean, rstd, _, _ = layer_norm_forward(x, gamma, beta, eps)
            return y, mean, rstd

        return "ops.layer_norm.layer_norm_forward", forward

    # Liger's RMSNorm in its "llama" casting mode (rstd in f32), offset 0, not in place.
    def rmsnorm_forward(self, case: Case):
        rms_norm_forward, eps = self.rms_norm.rms_norm_forward, case.scalars["eps"]

        def forward(x, gamma):
            y, _, rstd, _, _, _ = rms_norm_forward(x, gamma, eps, 0.0, "llama", None)
            return y, rstd

        return "ops.rms_norm.rms_norm_forward", forward

    def rmsnorm_backward(self, case: Case):
        sets, (gamma, _) = self.peers.tensors(case)
        ops = self.rms_norm
        # The block size and warps Liger's forward picks for this N, which its backward takes.
        _, _, _, block, warps, mode = ops.rms_norm_forward(sets[0][1], gamma, EPS, 0.0, "llama", None)
        return "ops.rms_norm.rms_norm_backward", lambda dy, x, gamma, rstd: ops.rms_norm_backward(
            dy, x, gamma, rstd, 0.0, mode, block, warps, False, None)
