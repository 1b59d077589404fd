"""Question: where does a training step's host time go on the direct CUDA
path (lnbwd_iree.torch on cuda:N), and does any part of it wait for the GPU?

Asked because the first H100 run of the direct path (2026-12-08,
docs/performance.md, change 41) measured 700-900 µs per LayerNorm step at
every shape, and 5 steps queued behind a 0.5 s GPU sleep returned only after
it, while a null-launch step costs ~90 µs on a 2-core CPU and the kernels
replay from a CUDA graph in 26 µs. Each part is timed on the host with the
GPU kept busy behind a sleep, so a part that waits for the GPU shows the
sleep's length: the module step (each of several steps alone, to see which
blocks), its forward alone, its backward alone, the step on a side stream
(not the legacy default stream), DirectRunner.run of the forward and backward, GpuLauncher.launch
alone, one torch.empty, torch's own step; then the same after an IREE cuda
device is opened in the process (IREE's runtime holds a stream and a thread
of its own); then a cProfile of module steps.

python3 scripts/probes/direct_host_time.py --shape 4096x1024 --dtype f32
"""

import argparse
import cProfile
import io
import os
import pstats
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="4096x1024", help="MxN")
    parser.add_argument("--dtype", default="f32", choices=("f32", "bf16"))
    parser.add_argument("--sleep-cycles", type=int, default=400_000_000, help="GPU sleep before each timed part")
    args = parser.parse_args()

    import torch

    import lnbwd_iree.torch as ours
    from lnbwd_iree import layernorm_forward
    from lnbwd_iree.kernels import LAYERNORM_BACKWARD, LAYERNORM_FORWARD

    m, n = (int(v) for v in args.shape.split("x"))
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    module = ours.LayerNorm(n, device="cuda", dtype=dtype)
    theirs = torch.nn.LayerNorm(n, device="cuda", dtype=dtype)
    x = torch.randn(m, n, device="cuda", dtype=dtype, requires_grad=True)
    dy = torch.randn(m, n, device="cuda", dtype=dtype)

    def step(norm=module):
        torch.autograd.grad(norm(x), [x, norm.weight, norm.bias], dy)

    def behind_sleep(label, fn, calls=20):
        """Host µs per call of ``fn`` queued behind a GPU sleep, and the sleep's own µs."""
        fn()
        torch.cuda.synchronize()
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        torch.cuda._sleep(args.sleep_cycles)
        end.record()
        each = []
        for _ in range(calls):
            start = time.perf_counter()
            fn()
            each.append((time.perf_counter() - start) * 1e6)
        torch.cuda.synchronize()
        sleep_us = begin.elapsed_time(end) * 1e3
        waited = " WAITED FOR THE GPU" if sum(each) > 0.5 * sleep_us else ""
        print(f"{label:48s} median {sorted(each)[len(each) // 2]:9.1f} us  max {max(each):10.1f} us"
              f"  (first {each[0]:.1f}; sleep {sleep_us:.0f} us){waited}", flush=True)

    binding = ours.binding_for(x.device)
    print(f"binding {type(binding).__name__}, path {ours.GPU_PATH}, torch {torch.__version__}, "
          f"CUDA_MODULE_LOADING={os.environ.get('CUDA_MODULE_LOADING')}, "
          f"CUDA_LAUNCH_BLOCKING={os.environ.get('CUDA_LAUNCH_BLOCKING')}")
    xd = x.detach()
    weight, bias = module.weight.detach(), module.bias.detach()
    y, mean, rstd = torch.empty_like(xd), xd.new_empty(m, dtype=torch.float32), xd.new_empty(m, dtype=torch.float32)
    dx, dweight, dbias = torch.empty_like(xd), torch.empty_like(weight), torch.empty_like(bias)

    def forward():
        binding.run(LAYERNORM_FORWARD, "layernorm_forward", (xd, weight, bias), (y, mean, rstd), {"eps": 1e-5})

    def backward():
        binding.run(LAYERNORM_BACKWARD, "layernorm_backward", (dy, xd, weight, mean, rstd), (dx, dweight, dbias), {})

    def forward_only():
        module(x)

    def backward_only():
        # A forward made before the sleep; each call runs the backward of a fresh one.
        torch.autograd.grad(pending.pop(), [x, module.weight, module.bias], dy)

    pending = []

    def parts(when):
        print(f"== {when}")
        behind_sleep("module step (fwd + bwd)", step)
        behind_sleep("module forward alone", forward_only)
        pending[:] = [module(x) for _ in range(21)]
        behind_sleep("module backward alone", backward_only)
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):  # not the legacy default stream
            behind_sleep("module step on a side stream", step)
        behind_sleep("torch.nn.LayerNorm step", lambda: step(theirs))
        behind_sleep("binding.run forward", forward)
        behind_sleep("binding.run backward", backward)
        runner = binding.runner
        bound = runner._bound.items()[-1][1]  # the backward's, bound last
        scratch = [torch.empty(max(s, 1), dtype=torch.uint8, device="cuda") for s in (bound.transients, *bound.allocations)]
        addresses = [t.data_ptr() for t in (dy, xd, weight, mean, rstd, dx, dweight, dbias, *scratch)]
        stream = torch._C._cuda_getCurrentRawStream(0)
        print(f"   backward launches: {[(getattr(l, 'kernel', None) and l.kernel.name, getattr(l, 'grid', None)) for l in bound.launches]}")
        behind_sleep("GpuLauncher.launch of the backward", lambda: runner.launcher.launch(bound, addresses, stream))
        behind_sleep("torch.empty of 1 byte", lambda: torch.empty(1, dtype=torch.uint8, device="cuda"))

    parts("direct path alone in the process")
    layernorm_forward(xd.cpu().float().numpy(), weight.cpu().float().numpy(), bias.cpu().float().numpy(),
                      device="cuda")
    parts("after an IREE cuda device ran a call in the process")
    torch.cuda.synchronize()
    torch.cuda._sleep(args.sleep_cycles * 4)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(50):
        step()
    profile.disable()
    torch.cuda.synchronize()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(15)
    print(text.getvalue())


if __name__ == "__main__":
    main()
