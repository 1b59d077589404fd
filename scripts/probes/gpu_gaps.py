"""Question: where does a back-to-back IREE call spend GPU time
(docs/performance.md, change 39)? The kernels' own durations, the idle time between the kernels
of one call, and the idle time between calls, from a torch.profiler (CUPTI)
trace of queued calls; torch eager's forward is traced the same way for
comparison. The gap between IREE calls it prints is the profiler's: CUPTI
slows IREE's worker thread so much that queued calls run hundreds of us
apart (torch's stay ~2 us apart), so the unprofiled gap is call time minus
these kernel times.

python scripts/probes/gpu_gaps.py 8192x4096:bf16 32768x1024:f32 ...
(reads artifacts as the runtime does: LNBWD_IREE_ARTIFACTS, else compiles)
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from lnbwd_iree import bench
from lnbwd_iree.runtime import LayerNormKernels

CALLS = 40


def kernel_spans(prof) -> list[tuple[str, float, float]]:
    spans = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA]
    return sorted(spans, key=lambda s: s[1])


def summarise(label: str, spans, kernels_per_call: int) -> None:
    """Medians over calls: each kernel's duration, gaps inside a call, gap to the next call."""
    calls = [spans[i:i + kernels_per_call] for i in range(0, len(spans) - kernels_per_call + 1, kernels_per_call)]
    calls = calls[2:]  # the first calls of a trace start cold
    durations = [statistics.median(c[k][2] - c[k][1] for c in calls) for k in range(kernels_per_call)]
    inner = [statistics.median(c[k + 1][1] - c[k][2] for c in calls) for k in range(kernels_per_call - 1)]
    between = statistics.median(b[0][1] - a[-1][2] for a, b in zip(calls, calls[1:]))
    period = statistics.median(b[0][1] - a[0][1] for a, b in zip(calls, calls[1:]))
    names = [n[:48] for n, _, _ in calls[0]]
    print(f"{label}: period {period:.1f} us | kernels {[round(d, 1) for d in durations]} us | gaps in call "
          f"{[round(g, 1) for g in inner]} us | gap between calls {between:.1f} us | {names}", flush=True)


def main(cases: list[str]) -> None:
    kernels = LayerNormKernels("cuda", static_shapes=True)
    rng = np.random.default_rng()
    for case in cases:
        shape, dtype = case.split(":")
        m, n = bench.parse_shape(shape)
        dy, x, gamma, mean, rstd = bench.make_inputs(rng, m, n, dtype)
        sets = [(kernels.to_device(dy), kernels.to_device(x))]
        sets += [tuple(kernels.to_device(a) for a in bench.make_inputs(rng, m, n, dtype)[:2]) for _ in range(3)]
        g, mu, rs = (kernels.to_device(a) for a in (gamma, mean, rstd))
        beta = kernels.to_device(gamma)
        for op in ("backward", "forward"):
            def call(i, op=op):
                d, xx = sets[i % len(sets)]
                if op == "backward":
                    return kernels.backward(d, xx, g, mu, rs, wait=False)
                return kernels.forward(xx, g, beta, wait=False)
            for i in range(8):
                call(i)
            kernels.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for i in range(CALLS):
                    call(i)
                kernels.synchronize()
            spans = kernel_spans(prof)
            per_call = len(spans) // CALLS
            if per_call * CALLS != len(spans):
                print(f"{case} {op}: {len(spans)} kernels for {CALLS} calls; not summarised", flush=True)
                continue
            summarise(f"iree {op} {case}", spans, per_call)
        torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
        xs = [torch.randn(m, n, device="cuda", dtype=torch_dtype) for _ in range(4)]
        w = torch.randn(n, device="cuda", dtype=torch_dtype)
        for i in range(8):
            torch.native_layer_norm(xs[i % 4], (n,), w, w, 1e-5)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for i in range(CALLS):
                torch.native_layer_norm(xs[i % 4], (n,), w, w, 1e-5)
            torch.cuda.synchronize()
        summarise(f"torch eager forward {case}", kernel_spans(prof), 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="+", metavar="MxN:DTYPE", help="e.g. 8192x4096:bf16")
    main(parser.parse_args().cases)
