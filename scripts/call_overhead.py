"""Per-call cost of the IREE backward on a GPU, for small and large shapes:
queued back to back (one wait at the end), a host wait after each call, and
the host time to submit a call (the loop without the final wait), through
backward() and through the cached plan alone (no Python checks). The same
numbers are taken three times in one process: before torch is imported, with
torch's CUDA context live, and after a torch.compile'd function has run, to
show what torch in the process costs IREE's submission.

python3 scripts/call_overhead.py 1024x512 8192x4096
"""

import statistics
import sys
import time

import numpy as np

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import make_inputs, parse_shape

kernels = LayerNormKernels("cuda", static_shapes=True)


def median_us(fn, calls=100, trials=9, sync=True):
    samples = []
    for _ in range(trials):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        if sync:
            kernels.synchronize()
        samples.append((time.perf_counter() - start) / calls * 1e6)
        kernels.synchronize()
    return statistics.median(samples)


problems = {}
for text in sys.argv[1:]:
    m, n = parse_shape(text)
    inputs = tuple(kernels.to_device(a) for a in make_inputs(np.random.default_rng(0), m, n, "f32"))
    out = tuple(kernels.allocate(shape, np.float32) for shape in ((m, n), (n,), (n,)))
    for _ in range(5):
        kernels.backward(*inputs, out=out)
    problems[text] = inputs, out


def measure(phase):
    for text, (inputs, out) in problems.items():
        plan = next(p for key, p in kernels._plans.items() if key[1][1:] == tuple(inputs[0]._buffer_view.shape))
        rows = {
            "queued": median_us(lambda: kernels.backward(*inputs, out=out, wait=False)),
            "host-wait": median_us(lambda: kernels.backward(*inputs, out=out, wait=True)),
            "submit only": median_us(lambda: kernels.backward(*inputs, out=out, wait=False), sync=False),
            "plan submit only": median_us(lambda: kernels._launch(plan, inputs, (), out, False), sync=False),
        }
        for label, us in rows.items():
            print(f"{phase:14s} {text:10s} {label:18s} {us:9.1f} us per call", flush=True)


measure("no torch")
import torch  # noqa: E402  (imported late on purpose: the first phase runs without it)

torch.ones(1, device="cuda").sum().item()
measure("torch context")


@torch.compile
def scaled_sum(a):
    return (a * 2).sum(0)


scaled_sum(torch.ones(64, 64, device="cuda")).cpu()
measure("after compile")
