"""Where a forward + backward step of lnbwd_iree.torch.LayerNorm spends its
time on CUDA, and which change to the tensor imports cuts it (issue 13).

Variants of the same step (y = module(x); grads of x, weight, bias for dy;
then the step's tensors dropped), run interleaved in rounds, each step timed
alone (torch.cuda.synchronize before and at its end), median over all rounds:

  eager         torch.nn.LayerNorm
  borrowed      the module as shipped: tensors imported without ownership,
                cached by (address, dtype, shape)
  owning        every tensor imported afresh per call through torch's DLPack
                capsule, which owns the tensor until IREE releases the import
                (the module before this change)
  owning+hold   owning, each call's imports kept until the next call of the
                same op and released there, on the calling thread
  owning+switch owning with sys.setswitchinterval(1e-6): a thread waiting for
                the GIL gets it sooner
  borrowed+spin borrowed, the host wait spins on the semaphore's value instead
                of sleeping in HalFence.wait

Also, for owning and borrowed, the step's parts apart (forward alone, the
backward alone on a retained graph), each step's phases, and (owning) which
thread released the imports last: a finalizer on each imported tensor view
runs on the thread that drops the import's last reference.

python scripts/torch_step_probe.py --shape 4096x1024 --shape 8192x4096 --out DIR
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import math
import statistics
import sys
import threading
import time
import weakref
from pathlib import Path

import torch

import lnbwd_iree.torch as ours

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
L2_BYTES = 50 << 20


def parse_shape(text):
    m, n = text.lower().split("x")
    return int(m), int(n)


def log(text):
    print(text, flush=True)


@contextlib.contextmanager
def owning(hold=False):
    """Every import through torch's owning DLPack capsule (the module before
    borrowed imports); with ``hold``, a call's imports are released at the
    start of the next call of the same op, on the calling thread."""
    held = {"fwd": [], "bwd": []}
    current = threading.local()
    original_forward, original_backward = ours._forward_kernel, ours._backward_kernel

    def borrowed(self, tensor):
        array = self.array(tensor)
        collector = getattr(current, "collector", None)
        if collector is not None:
            collector.append(array)
        return array

    def holding(op, kernel):
        def call(*args):
            held[op].clear()
            current.collector = held[op]
            try:
                return kernel(*args)
            finally:
                current.collector = None
        return call

    saved = ours.Binding.borrowed
    ours.Binding.borrowed = borrowed
    if hold:
        ours._forward_kernel = holding("fwd", original_forward)
        ours._backward_kernel = holding("bwd", original_backward)
    try:
        yield
    finally:
        ours.Binding.borrowed = saved
        ours._forward_kernel, ours._backward_kernel = original_forward, original_backward
        held["fwd"].clear()
        held["bwd"].clear()


@contextlib.contextmanager
def switch_interval(seconds):
    saved = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


@contextlib.contextmanager
def owning_switch():
    with owning(), switch_interval(1e-6):
        yield


@contextlib.contextmanager
def spin_wait(kernels):
    """The host wait as a spin on the timeline's value (the probe's kernels
    are used by one thread at a time)."""

    def wait(fence, timeline):
        target = kernels._last_signal
        while timeline.query() < target:
            pass

    kernels._wait = wait
    try:
        yield
    finally:
        del kernels._wait


@contextlib.contextmanager
def release_threads(counts):
    """Counts, per thread (the main thread, the one that ran the backward
    kernel, i.e. autograd's device thread, or another: IREE's), the imported
    tensor views whose last reference was dropped there (owning imports only)."""
    lock = threading.Lock()
    main, backward_threads = threading.get_ident(), set()

    def record(op):
        ident = threading.get_ident()
        where = "main" if ident == main else "backward thread" if ident in backward_threads else "other"
        with lock:
            counts[f"{op} import, released on {where} thread"] += 1

    saved_array, saved_backward = ours.Binding.array, ours._backward_kernel
    current = threading.local()

    def array(self, tensor):
        result = saved_array(self, tensor)
        weakref.finalize(tensor, record, getattr(current, "op", "forward"))
        return result

    def backward_kernel(*args):
        backward_threads.add(threading.get_ident())
        current.op = "backward"
        try:
            return saved_backward(*args)
        finally:
            current.op = "forward"

    ours.Binding.array = array
    ours._backward_kernel = backward_kernel
    try:
        yield
    finally:
        ours.Binding.array, ours._backward_kernel = saved_array, saved_backward


def relative(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def probe_shape(m, n, dtype_name, rounds, steps, device, only=()):
    dtype = DTYPES[dtype_name]
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    generator = torch.Generator(device=device).manual_seed(m * 7 + n)
    n_sets = max(2, math.ceil(2 * L2_BYTES / (4 * m * n * dtype.itemsize)) + 1)
    xs = [(torch.randn(m, n, device=device, generator=generator) * 2 + 0.5).to(dtype).requires_grad_() for _ in range(n_sets)]
    dys = [torch.randn(m, n, device=device, generator=generator).to(dtype) for _ in range(n_sets)]
    weight = (1 + 0.5 * torch.randn(n, device=device, generator=generator)).to(dtype)
    bias = torch.randn(n, device=device, generator=generator).to(dtype)
    modules = {}
    for name, cls in (("ours", ours.LayerNorm), ("eager", torch.nn.LayerNorm)):
        module = cls(n, device=device, dtype=dtype)
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
        modules[name] = module
    kernels = ours.binding_for(device).kernels

    # Correctness of the shipped path (borrowed imports) against float64, on fresh outputs.
    x64 = xs[1].detach().double().requires_grad_()
    w64, b64 = weight.double().requires_grad_(), bias.double().requires_grad_()
    y64 = torch.nn.functional.layer_norm(x64, (n,), w64, b64, 1e-5)
    reference = (y64, *torch.autograd.grad(y64, [x64, w64, b64], dys[1].double()))
    errors = {}
    for label, context in (("borrowed", contextlib.nullcontext), ("owning", owning)):
        with context():
            for _ in range(3):  # the third step reuses cached imports
                module = modules["ours"]
                y = module(xs[1])
                got = (y, *torch.autograd.grad(y, [xs[1], module.weight, module.bias], dys[1]))
        errors[label] = max(relative(a, b) for a, b in zip(got, reference))
    log(f"{m}x{n} {dtype_name}: max rel err vs float64 {errors}")

    def step(module, i, phases, pause=0.0):
        t0 = time.perf_counter()
        out = module(xs[i])
        t1 = time.perf_counter()
        grads = torch.autograd.grad(out, [xs[i], module.weight, module.bias], dys[i])
        t2 = time.perf_counter()
        del out, grads
        t3 = time.perf_counter()
        synchronize()
        t4 = time.perf_counter()
        phases.append((t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3))
        if pause:
            time.sleep(pause)  # untimed: lets other threads finish before the next step

    def paused_step(module, i, phases):
        step(module, i, phases, pause=500e-6)

    backward_thread = concurrent.futures.ThreadPoolExecutor(1)
    detached = [t.detach() for t in (modules["ours"].weight, modules["ours"].bias)]

    def manual(module, i, phases, executor=None):
        """The two kernels called directly, no autograd (the backward on
        ``executor``'s thread when given, as autograd runs it on its own)."""
        x, weight_, bias_ = xs[i].detach(), *detached
        t0 = time.perf_counter()
        y, mean, rstd = ours._forward_kernel(x, weight_, bias_, 1e-5)
        t1 = time.perf_counter()
        if executor is None:
            grads = ours._backward_kernel(dys[i], x, weight_, mean, rstd)
        else:
            grads = executor.submit(ours._backward_kernel, dys[i], x, weight_, mean, rstd).result()
        t2 = time.perf_counter()
        del y, mean, rstd, grads
        t3 = time.perf_counter()
        synchronize()
        t4 = time.perf_counter()
        phases.append((t4 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3))

    def manual_threaded(module, i, phases):
        manual(module, i, phases, backward_thread)

    def forward_only(module, i, phases):
        t0 = time.perf_counter()
        out = module(xs[i])
        del out
        synchronize()
        phases.append((time.perf_counter() - t0,))

    retained = {}

    def backward_retained(module, i, phases):
        if i not in retained:
            retained[i] = module(xs[i])
        t0 = time.perf_counter()
        grads = torch.autograd.grad(retained[i], [xs[i], module.weight, module.bias], dys[i], retain_graph=True)
        del grads
        synchronize()
        phases.append((time.perf_counter() - t0,))

    variants = {
        "eager": (modules["eager"], step, contextlib.nullcontext),
        "borrowed": (modules["ours"], step, contextlib.nullcontext),
        "owning": (modules["ours"], step, owning),
        "owning+hold": (modules["ours"], step, lambda: owning(hold=True)),
        "owning+switch": (modules["ours"], step, owning_switch),
        "borrowed+spin": (modules["ours"], step, lambda: spin_wait(kernels)),
        "owning fwd alone": (modules["ours"], forward_only, owning),
        "owning bwd alone (retained)": (modules["ours"], backward_retained, owning),
        "borrowed fwd alone": (modules["ours"], forward_only, contextlib.nullcontext),
        "borrowed bwd alone (retained)": (modules["ours"], backward_retained, contextlib.nullcontext),
        "borrowed, 0.5 ms pause after each step": (modules["ours"], paused_step, contextlib.nullcontext),
        "kernels called directly": (modules["ours"], manual, contextlib.nullcontext),
        "kernels called directly, bwd on a thread": (modules["ours"], manual_threaded, contextlib.nullcontext),
    }
    if only:
        variants = {name: v for name, v in variants.items() if name in only}
    samples = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (module, fn, context) in variants.items():
            with context():
                for k in range(3):  # warm-up: the cache fills, the allocator settles
                    fn(module, k % n_sets, [])
                for k in range(steps):
                    fn(module, k % n_sets, samples[name])
            retained.clear()
    backward_thread.shutdown()
    counts = collections.Counter()
    if not only or "owning" in only:
        with owning(), release_threads(counts):
            for k in range(steps):
                step(modules["ours"], k % n_sets, [])
        synchronize()
        time.sleep(0.05)
    rows = []
    for name, values in samples.items():
        medians = [statistics.median(v[j] for v in values) * 1e6 for j in range(len(values[0]))]
        row = {"variant": name, "m": m, "n": n, "dtype": dtype_name, "steps": len(values), "median_us": medians[0]}
        if len(medians) > 1:
            row.update(zip(("forward_us", "backward_us", "free_us", "sync_us"), medians[1:]))
        rows.append(row)
        parts = "" if len(medians) == 1 else "  (fwd {:.0f}, bwd {:.0f}, del {:.0f}, sync {:.0f})".format(*medians[1:])
        log(f"{m}x{n} {dtype_name:4s} {name:30s} {medians[0]:8.1f} us{parts}")
    if counts:
        log(f"{m}x{n} {dtype_name}: owning imports last released on threads {dict(counts)}")
    return {"rows": rows, "errors": errors, "release_threads": dict(counts), "input_sets": n_sets}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", action="append")
    parser.add_argument("--dtype", action="append", choices=DTYPES)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--variant", action="append", help="run only these variants (repeatable; default all)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    report = {"torch": torch.__version__, "device": name, "results": []}
    for m, n in [parse_shape(s) for s in args.shape or ["4096x1024", "8192x4096"]]:
        for dtype_name in args.dtype or ["f32", "bf16"]:
            report["results"].append(probe_shape(m, n, dtype_name, args.rounds, args.steps, device, args.variant or ()))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "torch_step_probe.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
