"""Where the per-call time of the IREE backward goes on a GPU: chained
timeline fences (each call waits for the previous), an empty wait fence (calls
ordered only by the device queue), or a host wait after every call.

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
from lnbwd_iree.runtime import Problem

kernels = LayerNormKernels("cuda", static_shapes=True)
for text in sys.argv[1:]:
    m, n = parse_shape(text)
    dy, x, gamma, mean, rstd = (kernels.to_device(a) for a in make_inputs(np.random.default_rng(0), m, n, "f32"))
    out = kernels.allocate((m, n), np.float32)
    context, function = kernels.function(LAYERNORM_BACKWARD, "f32", "layernorm_backward", (m, n))
    semaphore = kernels.device.create_semaphore(0)
    state = {"value": 0}

    def call(chained: bool, host_wait: bool):
        args = ireert.VmVariantList(8)
        for a in (dy, x, gamma, mean, rstd, out):
            args.push_ref(a._buffer_view.ref)
        wait = ireert.HalFence.create_at(semaphore, state["value"]) if chained else ireert.HalFence(1)
        state["value"] += 1
        signal = ireert.HalFence.create_at(semaphore, state["value"])
        args.push_ref(wait.ref)
        args.push_ref(signal.ref)
        context.invoke(function, args, ireert.VmVariantList(3))
        if host_wait:
            signal.wait()

    for label, chained, host_wait in (("chained", True, False), ("unchained", False, False), ("host-wait", True, True)):
        for _ in range(5):
            call(chained, host_wait)
        ireert.HalFence.create_at(semaphore, state["value"]).wait()
        samples = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(50):
                call(chained, host_wait)
            ireert.HalFence.create_at(semaphore, state["value"]).wait()
            samples.append((time.perf_counter() - start) / 50 * 1e6)
        print(f"{text:10s} {label:10s} {statistics.median(samples):9.1f} us per call")
    start = time.perf_counter()
    for _ in range(200):
        kernels._as_matrix(dy, (m, n))
        ireert.HalFence.create_at(semaphore, state["value"])
    print(f"{text:10s} python-side fence+view overhead {(time.perf_counter() - start) / 200 * 1e6:.1f} us")
