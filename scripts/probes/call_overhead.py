"""Question: what does one IREE backward call cost the host on a GPU, and
does torch in the process (its CUDA context, a torch.compile'd function)
slow IREE's submission? For small and large shapes: calls queued back to
back (one wait at the end), a host wait after each call, the host time to
submit a call (the loop without the final wait), and the submission of a
cached plan alone, each taken three times in one process: before torch is
imported, with torch's CUDA context live, and after a torch.compile'd
function has run (docs/performance.md, "PyTorch module").

python3 scripts/probes/call_overhead.py 1024x512 8192x4096
"""

import argparse
import statistics
import time

import numpy as np

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import make_inputs, parse_shape


def median_us(kernels, fn, calls=100, trials=9, sync=True):
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


def measure(kernels, problems, phase):
    for text, (inputs, out) in problems.items():
        # The plan alone has no public launcher yet (the runtime split of issue 23
        # adds one): its row reads the runtime's plan cache and launcher.
        plan = next(p for key, p in kernels._plans.items() if key[1][1:] == tuple(inputs[0]._buffer_view.shape))
        rows = {
            "queued": median_us(kernels, lambda: kernels.backward(*inputs, out=out, wait=False)),
            "host-wait": median_us(kernels, lambda: kernels.backward(*inputs, out=out, wait=True)),
            "submit only": median_us(kernels, lambda: kernels.backward(*inputs, out=out, wait=False), sync=False),
            "plan submit only": median_us(kernels, lambda: kernels._launch(plan, inputs, (), out, False), sync=False),
        }
        for label, us in rows.items():
            print(f"{phase:14s} {text:10s} {label:18s} {us:9.1f} us per call", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shapes", nargs="+", metavar="MxN")
    args = parser.parse_args(argv)
    kernels = LayerNormKernels("cuda", static_shapes=True)
    problems = {}
    for text in args.shapes:
        m, n = parse_shape(text)
        inputs = tuple(kernels.to_device(a) for a in make_inputs(np.random.default_rng(0), m, n, "f32"))
        out = tuple(kernels.allocate(shape, np.float32) for shape in ((m, n), (n,), (n,)))
        for _ in range(5):
            kernels.backward(*inputs, out=out)
        problems[text] = inputs, out
    measure(kernels, problems, "no torch")
    import torch  # imported late on purpose: the first phase runs without it

    torch.ones(1, device="cuda").sum().item()
    measure(kernels, problems, "torch context")

    @torch.compile
    def scaled_sum(a):
        return (a * 2).sum(0)

    scaled_sum(torch.ones(64, 64, device="cuda")).cpu()
    measure(kernels, problems, "after compile")


if __name__ == "__main__":
    main()
