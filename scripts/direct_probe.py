"""On a CUDA machine: lnbwd_iree.torch's direct launch path (DirectBinding) checked and timed.

Checks each module's forward and backward against a float64 reference
(relative norm error), that calls queue behind a GPU sleep without a host
wait, and that a captured CUDA graph of a training step replays with eager's
gradients; then times a module step (fwd+bwd, 4 rotated input sets, median
of CUDA-event timings) against torch's own module. Prints one table."""

import statistics
import time

import torch

import lnbwd_iree.torch as ours


def relative(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def reference(norm, x, w, b, dy):
    x64 = x.detach().double().requires_grad_()
    w64 = w.detach().double().requires_grad_()
    if norm == "layernorm":
        y = torch.nn.functional.layer_norm(x64, (x.shape[-1],), w64, b.detach().double(), 1e-5)
    else:
        y = torch.nn.functional.rms_norm(x64, (x.shape[-1],), w64, torch.finfo(torch.float32).eps)
    y.backward(dy.double())
    return y, x64.grad, w64.grad


def modules(norm, n, dtype):
    if norm == "layernorm":
        return ours.LayerNorm(n, device="cuda", dtype=dtype), torch.nn.LayerNorm(n, device="cuda", dtype=dtype)
    return ours.RMSNorm(n, device="cuda", dtype=dtype), torch.nn.RMSNorm(n, device="cuda", dtype=dtype)


def step_time(module, xs, dys):
    for i in range(3):
        module(xs[i % len(xs)]).backward(dys[i % len(xs)])
    times = []
    for i in range(40):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        x, dy = xs[i % len(xs)], dys[i % len(xs)]
        start.record()
        module(x).backward(dy)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000)
    return statistics.median(times)


def main():
    assert ours.GPU_PATH == "direct"
    rows = []
    for norm in ("layernorm", "rmsnorm"):
        for dtype in (torch.float32, torch.bfloat16):
            for m, n in ((8192, 4096), (32768, 1024), (4096, 1024), (1024, 512)):
                mine, theirs = modules(norm, n, dtype)
                with torch.no_grad():
                    mine.weight.copy_(1 + 0.5 * torch.randn(n))
                    theirs.weight.copy_(mine.weight)
                    if norm == "layernorm":
                        mine.bias.copy_(torch.randn(n))
                        theirs.bias.copy_(mine.bias)
                xs = [(torch.randn(m, n, device="cuda") * 2 + 0.5).to(dtype).requires_grad_() for _ in range(4)]
                dys = [torch.randn(m, n, device="cuda").to(dtype) for _ in range(4)]
                y = mine(xs[0])
                y.backward(dys[0])
                y64, dx64, dw64 = reference(norm, xs[0], mine.weight, getattr(mine, "bias", None), dys[0])
                errors = (relative(y, y64), relative(xs[0].grad, dx64), relative(mine.weight.grad, dw64))
                xs[0].grad = None
                t_ours, t_torch = step_time(mine, xs, dys), step_time(theirs, xs, dys)
                rows.append((norm, str(dtype).split(".")[1], f"{m}x{n}", *errors, t_ours, t_torch))
                print(rows[-1], flush=True)

    # No host wait: a call queued behind a 50 ms GPU sleep returns long before it ends.
    ln = ours.LayerNorm(1024, device="cuda")
    x = torch.randn(4096, 1024, device="cuda", requires_grad=True)
    ln(x).sum().backward()
    torch.cuda.synchronize()
    torch.cuda._sleep(50_000_000)
    start = time.perf_counter()
    ln(x).sum().backward()
    host_ms = (time.perf_counter() - start) * 1000
    torch.cuda.synchronize()
    print(f"host time of fwd+bwd queued behind a GPU sleep: {host_ms:.2f} ms (the sleep: ~25-50 ms)")

    # CUDA graph of a training step.
    ln = ours.LayerNorm(1024, device="cuda", dtype=torch.bfloat16)
    static_x = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    static_dy = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            static_x.grad = None
            ln.weight.grad = ln.bias.grad = None
            ln(static_x).backward(static_dy)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    static_x.grad = None
    ln.weight.grad = ln.bias.grad = None
    with torch.cuda.graph(graph):
        ln(static_x).backward(static_dy)
    new_x, new_dy = torch.randn_like(static_x), torch.randn_like(static_dy)
    static_x.data.copy_(new_x)
    static_dy.copy_(new_dy)
    graph.replay()
    torch.cuda.synchronize()
    eager_x = new_x.clone().requires_grad_()
    reference_ln = torch.nn.LayerNorm(1024, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        reference_ln.weight.copy_(ln.weight)
        reference_ln.bias.copy_(ln.bias)
    reference_ln(eager_x).backward(new_dy)
    graph_errors = (relative(static_x.grad, eager_x.grad), relative(ln.weight.grad, reference_ln.weight.grad))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(100):
        graph.replay()
    end.record()
    end.synchronize()
    print(f"CUDA graph replay of a bf16 4096x1024 fwd+bwd step: dx/dweight vs eager {graph_errors}, "
          f"{start.elapsed_time(end) * 10:.1f} us per replay")

    print("\n| norm | dtype | MxN | y err | dx err | dw err | ours step us | torch step us | speedup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for norm, dt, shape, ey, ex, ew, to, tt in rows:
        print(f"| {norm} | {dt} | {shape} | {ey:.1e} | {ex:.1e} | {ew:.1e} | {to:.1f} | {tt:.1f} | {tt / to:.2f}x |")


if __name__ == "__main__":
    main()
