"""Question: where does a forward + backward step of lnbwd_iree.torch.LayerNorm
spend its time on CUDA, against torch.nn.LayerNorm (issue 13)?

Variants of the same step (y = module(x); grads of x, weight, bias for dy;
then the step's tensors dropped), run interleaved in rounds, each step timed
alone (torch.cuda.synchronize before and at its end), median over all rounds:

  eager            torch.nn.LayerNorm
  ours             the module as shipped (LNBWD_IREE_TORCH_CUDA_PATH picks
                   the CUDA path: the direct launch, or iree)
  ours+switch      with sys.setswitchinterval(1e-6): a thread waiting for
                   the GIL gets it sooner
  the step's parts apart: the forward alone, the backward alone on a
  retained graph, a step followed by an untimed 0.5 ms pause, and the custom
  ops (lnbwd_iree::layer_norm_fwd / _bwd) called directly, without
  autograd, the backward on the calling thread or on another (as autograd
  runs it on its own)

Each step's phases (forward, backward, freeing its tensors, the final
synchronisation) are reported too. The variants that answered issue 13 by
swapping the module's tensor imports (owning DLPack capsules, held imports,
a spinning wait; benchmarks/torch_step_probe_cuda.json) replaced private
members of a design since replaced, and are not kept.

python scripts/probes/torch_step_probe.py --shape 4096x1024 --shape 8192x4096 --out DIR
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import lnbwd_iree.torch as ours
from lnbwd_iree.bench import parse_shape

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}
L2_BYTES = 50 << 20


def log(text):
    print(text, flush=True)


@contextlib.contextmanager
def switch_interval(seconds):
    saved = sys.getswitchinterval()
    sys.setswitchinterval(seconds)
    try:
        yield
    finally:
        sys.setswitchinterval(saved)


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

    # Correctness against float64, on fresh outputs.
    x64 = xs[1].detach().double().requires_grad_()
    w64, b64 = weight.double().requires_grad_(), bias.double().requires_grad_()
    y64 = torch.nn.functional.layer_norm(x64, (n,), w64, b64, 1e-5)
    reference = (y64, *torch.autograd.grad(y64, [x64, w64, b64], dys[1].double()))
    module = modules["ours"]
    for _ in range(3):  # the third step reuses what the first ones cached
        y = module(xs[1])
        got = (y, *torch.autograd.grad(y, [xs[1], module.weight, module.bias], dys[1]))
    error = max(relative(a, b) for a, b in zip(got, reference))
    log(f"{m}x{n} {dtype_name}: max rel err vs float64 {error:.2e}")

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
        """The two custom ops called directly, no autograd (the backward on
        ``executor``'s thread when given, as autograd runs it on its own)."""
        x, weight_, bias_ = xs[i].detach(), *detached
        t0 = time.perf_counter()
        y, mean, rstd = ours.layer_norm_fwd(x, weight_, bias_, 1e-5)
        t1 = time.perf_counter()
        if executor is None:
            grads = ours.layer_norm_bwd(dys[i], x, weight_, mean, rstd)
        else:
            grads = executor.submit(ours.layer_norm_bwd, dys[i], x, weight_, mean, rstd).result()
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
        "ours": (modules["ours"], step, contextlib.nullcontext),
        "ours+switch": (modules["ours"], step, lambda: switch_interval(1e-6)),
        "ours fwd alone": (modules["ours"], forward_only, contextlib.nullcontext),
        "ours bwd alone (retained)": (modules["ours"], backward_retained, contextlib.nullcontext),
        "ours, 0.5 ms pause after each step": (modules["ours"], paused_step, contextlib.nullcontext),
        "custom ops called directly": (modules["ours"], manual, contextlib.nullcontext),
        "custom ops called directly, bwd on a thread": (modules["ours"], manual_threaded, contextlib.nullcontext),
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
    rows = []
    for name, values in samples.items():
        medians = [statistics.median(v[j] for v in values) * 1e6 for j in range(len(values[0]))]
        row = {"variant": name, "m": m, "n": n, "dtype": dtype_name, "steps": len(values), "median_us": medians[0]}
        if len(medians) > 1:
            row.update(zip(("forward_us", "backward_us", "free_us", "sync_us"), medians[1:]))
        rows.append(row)
        parts = "" if len(medians) == 1 else "  (fwd {:.0f}, bwd {:.0f}, del {:.0f}, sync {:.0f})".format(*medians[1:])
        log(f"{m}x{n} {dtype_name:4s} {name:30s} {medians[0]:8.1f} us{parts}")
    return {"rows": rows, "max_rel_error": error, "input_sets": n_sets}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
