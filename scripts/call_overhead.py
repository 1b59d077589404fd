"""Per-call time of the IREE backward on a GPU for small and large shapes:
queued back to back (one wait at the end) versus a host wait after each call.
With kernel time known from ncu, the difference is host and launch overhead.

python3 scripts/call_overhead.py 1024x512 8192x4096
"""

import statistics
import sys
import time

import numpy as np

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import make_inputs, parse_shape

kernels = LayerNormKernels("cuda", static_shapes=True)
for text in sys.argv[1:]:
    m, n = parse_shape(text)
    dy, x, gamma, mean, rstd = (kernels.to_device(a) for a in make_inputs(np.random.default_rng(0), m, n, "f32"))
    out = tuple(kernels.allocate(shape, np.float32) for shape in ((m, n), (n,), (n,)))
    for label, wait in (("queued", False), ("host-wait", True)):
        for _ in range(5):
            kernels.backward(dy, x, gamma, mean, rstd, out=out, wait=wait)
        kernels.synchronize()
        samples = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(50):
                kernels.backward(dy, x, gamma, mean, rstd, out=out, wait=wait)
            kernels.synchronize()
            samples.append((time.perf_counter() - start) / 50 * 1e6)
        print(f"{text:10s} {label:10s} {statistics.median(samples):9.1f} us per call")
