"""Per-call cost of the IREE backward on a GPU, for small and large shapes:
queued back to back (one wait at the end), a host wait after each call, and
the host time to submit a call (the loop without the final wait), through
backward() and through the bare call() with validated arguments.

python3 scripts/call_overhead.py 1024x512 8192x4096
"""

import statistics
import sys
import time

import numpy as np
from iree import runtime as ireert

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import make_inputs, parse_shape
from lnbwd_iree.kernels import LAYERNORM_BACKWARD
from lnbwd_iree.runtime import check_problem

kernels = LayerNormKernels("cuda", static_shapes=True)


def median_us(fn, calls=50, trials=7, sync=True):
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


for text in sys.argv[1:]:
    m, n = parse_shape(text)
    dy, x, gamma, mean, rstd = (kernels.to_device(a) for a in make_inputs(np.random.default_rng(0), m, n, "f32"))
    out = tuple(kernels.allocate(shape, np.float32) for shape in ((m, n), (n,), (n,)))
    problem = check_problem({"dy": dy, "x": x}, {"gamma": gamma}, {"mean": mean, "rstd": rstd})
    for _ in range(5):
        kernels.backward(dy, x, gamma, mean, rstd, out=out)
    rows = {
        "queued": median_us(lambda: kernels.backward(dy, x, gamma, mean, rstd, out=out, wait=False)),
        "host-wait": median_us(lambda: kernels.backward(dy, x, gamma, mean, rstd, out=out, wait=True)),
        "submit only": median_us(lambda: kernels.backward(dy, x, gamma, mean, rstd, out=out, wait=False), sync=False),
        "bare call() submit": median_us(
            lambda: kernels.call(
                LAYERNORM_BACKWARD, problem, "layernorm_backward", [dy, x, gamma, mean, rstd], list(out), wait=False
            ),
            sync=False,
        ),
    }
    # The same call with an empty wait fence: ordered only by the device queue.
    # Not a safe way to chain calls; it measures what the timeline wait costs.
    entry = kernels.entry(LAYERNORM_BACKWARD, "f32", "layernorm_backward", (m, n))
    args = [dy, x, gamma, mean, rstd, *out]
    transients = kernels._transients(entry, (m, n), args)

    def unchained():
        signal = ireert.HalFence.create_at(kernels._timeline, kernels._last_signal + 1)
        kernels._last_signal += 1
        arg_list = kernels._arg_list(args, transients, ireert.HalFence(1), signal)
        entry.context.invoke(entry.function, arg_list, ireert.VmVariantList(3))

    rows["unchained (probe)"] = median_us(unchained)
    for label, us in rows.items():
        print(f"{text:10s} {label:20s} {us:9.1f} us per call")
