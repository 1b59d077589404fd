"""Question: where does lnbwd_iree.torch.LayerNorm's training step on CUDA
spend its time, on the host and on the GPU (issue 13)? A timeline from
torch.profiler (CUPTI sees IREE's kernels too: both use the device's
primary context).

For each shape and dtype: steps of y = module(x); y.backward(dy), warmed up,
then a few profiled. The public pieces are wrapped in record_function ranges
(iree.sync: the host ordering's wait for torch's stream; binding.run: one
kernel launch through the binding, DirectBinding's or, with
LNBWD_IREE_TORCH_CUDA_PATH=iree, IreeBinding's; iree.call: the runtime's
launcher on that path); the custom ops show as lnbwd_iree::layer_norm_fwd
and _bwd. The printed timeline of one step shows where the host waits and
where the GPU idles. The step medians it prints rotate three inputs (under
2x L2 at 4096x1024): they are diagnostic; benchmarks/torch_layernorm_cuda.*
are the measured figures.

python scripts/probes/torch_step_trace.py --shape 4096x1024 --shape 8192x4096 --dtype f32 --dtype bf16
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

import lnbwd_iree.torch as ours
from lnbwd_iree.runtime import LayerNormKernels

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def labelled(owner, name, label):
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        with record_function(label):
            return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def wrap_pieces():
    labelled(ours.HostOrdering, "before", "iree.sync")
    labelled(ours.DirectBinding, "run", "binding.run")
    labelled(ours.IreeBinding, "run", "binding.run")
    labelled(LayerNormKernels, "call", "iree.call")


def steps(module, xs, dy, count):
    for i in range(count):
        x = xs[i % len(xs)]
        with record_function("step"):
            y = module(x)
            y.backward(dy)
        x.grad = None


def timed(module, xs, dy, count):
    out = []
    for i in range(count):
        torch.cuda.synchronize()
        start = time.perf_counter()
        steps(module, [xs[i % len(xs)]], dy, 1)
        torch.cuda.synchronize()
        out.append((time.perf_counter() - start) * 1e6)
    return statistics.median(out)


def timeline(prof, width=14):
    """The events of the last profiled step, in start order, µs from its start."""
    events = [e for e in prof.events() if e.time_range.end > e.time_range.start]
    steps_ = [e for e in events if e.name == "step"]
    if not steps_:
        return [], 0.0
    step = steps_[-1]
    t0, t1 = step.time_range.start, step.time_range.end
    # GPU kernels are matched by time: the step's span on the host up to its last kernel.
    rows = []
    for e in events:
        on_gpu = e.device_type == torch.autograd.DeviceType.CUDA
        if e is step:
            continue
        if not on_gpu and not (t0 <= e.time_range.start <= t1):
            continue
        if not on_gpu and not (e.name.startswith(("iree.", "binding.", "lnbwd_iree::", "aten::empty", "aten::native_layer", "cuda")) or "autograd" in e.name.lower()):
            continue
        rows.append((e.time_range.start - t0, e.time_range.end - e.time_range.start, "GPU" if on_gpu else "cpu", e.name[:90]))
    rows.sort()
    gpu = [r for r in rows if r[2] == "GPU" and -50 <= r[0] <= (t1 - t0) + 5000]
    cpu = [r for r in rows if r[2] == "cpu"]
    return sorted(cpu + gpu)[:80], t1 - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", action="append", default=[])
    parser.add_argument("--dtype", action="append", default=[])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    wrap_pieces()
    device = torch.device("cuda")
    for dtype_name in args.dtype or ["f32"]:
        for shape in args.shape or ["4096x1024"]:
            m, n = map(int, shape.lower().split("x"))
            dtype = DTYPES[dtype_name]
            torch.manual_seed(0)
            module = ours.LayerNorm(n, device=device, dtype=dtype)
            eager = torch.nn.LayerNorm(n, device=device, dtype=dtype)
            xs = [torch.randn(m, n, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]
            dy = torch.randn(m, n, device=device, dtype=dtype)
            steps(module, xs, dy, 10)
            steps(eager, xs, dy, 10)
            print(f"== {dtype_name} {m}x{n}: step median (synchronised) ours {timed(module, xs, dy, args.steps):.0f} us, "
                  f"eager {timed(eager, xs, dy, args.steps):.0f} us", flush=True)
            # Back to back, one synchronisation per 20 steps.
            for label, mod in (("ours", module), ("eager", eager)):
                torch.cuda.synchronize()
                start = time.perf_counter()
                steps(mod, xs, dy, 20)
                torch.cuda.synchronize()
                print(f"   {label} back-to-back: {(time.perf_counter() - start) / 20 * 1e6:.0f} us/step", flush=True)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                steps(module, xs, dy, 5)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=22, max_name_column_width=60), flush=True)
            rows, span = timeline(prof)
            print(f"-- last profiled step, host span {span:.0f} us (start, duration, where, what):")
            for start, dur, where, name in rows:
                print(f"{start:9.1f} {dur:9.1f} {where:4} {name}")
            print(flush=True)


if __name__ == "__main__":
    main()
