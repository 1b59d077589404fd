"""Question: which dispatch of an op's kernels takes the time on a GPU? Runs
each kernel of the op a few times on the bench's inputs, for ncu to time
dispatch by dispatch (benchmarks/ncu_cuda*.log).

ncu --metrics gpu__time_duration.sum python3 scripts/probes/profile_dispatches.py 8192x4096 f32 [layernorm|rmsnorm]
"""

import argparse

import numpy as np

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import NORM_OPS, TIMED_OPS, parse_shape
from lnbwd_iree.bench.inputs import draw, op_inputs
from lnbwd_iree.dtypes import DTYPES


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", type=parse_shape, metavar="MxN")
    parser.add_argument("dtype", choices=DTYPES)
    parser.add_argument("norm", nargs="?", choices=tuple(NORM_OPS), default="layernorm")
    args = parser.parse_args(argv)
    (m, n), dtype = args.shape, args.dtype
    kernels = LayerNormKernels("cuda", static_shapes=True)
    drawn = draw(np.random.default_rng(), m, n, dtype)
    for name in NORM_OPS[args.norm].values():
        op = TIMED_OPS[name]
        inputs = tuple(kernels.to_device(a) for a in op_inputs(op, drawn, dtype))
        for _ in range(3):
            kernels.call(op.kernel, op.entry.name, inputs, **op.scalars)
    kernels.synchronize()


if __name__ == "__main__":
    main()
