"""lnbwd_iree.torch.LayerNorm in training, against torch's LayerNorm.

1. Forward + backward step of the module alone (y = module(x); grads of x,
   weight and bias for a random dy) for lnbwd_iree, torch eager, torch.compile
   (compiled per shape and dtype, dynamic=False, after torch._dynamo.reset())
   and Liger's LigerLayerNorm when importable; inputs on the device, rotated
   over more than 2x L2; each implementation checked once against float64,
   all timed together taking turns trial by trial. Per implementation also
   the host time of a step (steps queued behind a GPU sleep, so the host never
   waits on the GPU unless the implementation does) and, on CUDA, a replay of
   the step captured in a CUDA graph (one graph per input set).
2. On IREE's runtime path only (CPU, or LNBWD_IREE_TORCH_CUDA_PATH=iree):
   what each torch <-> IREE crossing costs.
3. A Transformer block's training step (self-attention + MLP + 2 norms, bf16,
   forward + backward + SGD step) with lnbwd_iree's LayerNorm / RMSNorm
   against nn.LayerNorm / nn.RMSNorm, eager, at each --block size; with
   --block-compile also torch.compile of the block (graph breaks reported).

Timing: lnbwd_iree.bench.time_interleaved (median of trials of back-to-back
steps, one synchronisation per trial). Writes
benchmarks/torch_layernorm_<device>.{json,md}.

python scripts/bench_torch.py --device cuda --shape 8192x4096 --shape 4096x1024
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from lnbwd_iree.bench import Bench, parse_shape, time_interleaved
from lnbwd_iree.torch import GPU_PATH, IreeBinding, LayerNorm, RMSNorm, binding_for

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def log(text):
    print(text, flush=True)


def relative(a, b):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


def layer_norm_impls(n, dtype, device):
    """name -> module factory; torch.compile last (its worker processes
    compete for the CPU with host-bound calls)."""
    impls = {
        "lnbwd_iree": lambda: LayerNorm(n, device=device, dtype=dtype),
        "torch_eager": lambda: torch.nn.LayerNorm(n, device=device, dtype=dtype),
    }
    try:
        from liger_kernel.transformers import LigerLayerNorm

        impls["liger"] = lambda: LigerLayerNorm(n, eps=1e-5, bias=True).to(device=device, dtype=dtype)
    except ImportError as e:
        log(f"liger: not importable ({e})")

    def compiled():
        torch._dynamo.reset()
        return torch.compile(torch.nn.LayerNorm(n, device=device, dtype=dtype), dynamic=False)

    impls["torch_compile"] = compiled
    return impls


def host_us(step, n_sets, synchronize, device, steps=20):
    """Host µs per step with the GPU kept busy: the steps are queued behind a
    GPU sleep, so the host waits only where the implementation makes it."""
    synchronize()
    if device == "cuda":
        torch.cuda._sleep(100_000_000)  # ~50 ms at H100 clocks: longer than the steps' host time
    start = time.perf_counter()
    for i in range(steps):
        step(i % n_sets)
    seconds = time.perf_counter() - start
    synchronize()
    return seconds / steps * 1e6


def graph_replay(step, n_sets, synchronize):
    """``replay(i)``: the step on input set i, captured once per set in a CUDA
    graph (all graphs share one memory pool, replayed one at a time)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph asks
        for i in range(3):
            step(i % n_sets)
    torch.cuda.current_stream().wait_stream(side)
    synchronize()
    graphs, pool = [], None
    for i in range(n_sets):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool):
            step(i)
        pool = graph.pool()
        graphs.append(graph)
    return lambda i: graphs[i].replay()


def bench_layer_norm(m, n, dtype_name, device, synchronize, l2_bytes, trials):
    dtype = DTYPES[dtype_name]
    generator = torch.Generator(device=device).manual_seed(m * 31 + n)
    set_bytes = 4 * m * n * dtype.itemsize  # x, dy read; y, dx written
    n_sets = max(2, math.ceil(2 * l2_bytes / set_bytes) + 1)
    xs = [(torch.randn(m, n, device=device, generator=generator) * 2 + 0.5).to(dtype).requires_grad_() for _ in range(n_sets)]
    dys = [torch.randn(m, n, device=device, generator=generator).to(dtype) for _ in range(n_sets)]
    weight = (1 + 0.5 * torch.randn(n, device=device, generator=generator)).to(dtype)
    bias = torch.randn(n, device=device, generator=generator).to(dtype)
    # float64 reference on the device, for the first input set.
    x64 = xs[0].detach().double().requires_grad_()
    w64, b64 = weight.double().requires_grad_(), bias.double().requires_grad_()
    y64 = torch.nn.functional.layer_norm(x64, (n,), w64, b64, 1e-5)
    reference = (y64, *torch.autograd.grad(y64, [x64, w64, b64], dys[0].double()))
    rows, steps = [], {}
    for name, make in layer_norm_impls(n, dtype, device).items():
        module = make()
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
        params = [module.weight, module.bias]
        y = module(xs[0])
        results = (y, *torch.autograd.grad(y, [xs[0], *params], dys[0]))
        errors = {k: relative(r, ref) for k, r, ref in zip(("y", "dx", "dweight", "dbias"), results, reference)}

        def step(i, module=module, params=params):
            out = module(xs[i])
            torch.autograd.grad(out, [xs[i], *params], dys[i])

        steps[name] = step
        rows.append({"impl": name, "m": m, "n": n, "dtype": dtype_name, "max_rel_error": max(errors.values()),
                     "errors": errors, "input_sets": n_sets,
                     "host_us": host_us(step, n_sets, synchronize, device)})
    samples = time_interleaved([(step, synchronize) for step in steps.values()], n_sets, trials=trials)
    if device == "cuda":
        graphed = {name: graph_replay(step, n_sets, synchronize) for name, step in steps.items()
                   if name in ("lnbwd_iree", "torch_eager")}
        graph_samples = dict(zip(graphed, time_interleaved([(r, synchronize) for r in graphed.values()], n_sets,
                                                           trials=trials)))
    for row, times in zip(rows, samples):
        row["median_us"] = statistics.median(times) * 1e6
        if device == "cuda" and row["impl"] in graph_samples:
            row["graph_replay_us"] = statistics.median(graph_samples[row["impl"]]) * 1e6
        graph = f"  CUDA graph {row['graph_replay_us']:7.1f} us" if "graph_replay_us" in row else ""
        log(f"{row['impl']:14s} {m}x{n} {dtype_name:5s} forward+backward {row['median_us']:9.1f} us"
            f"  host {row['host_us']:6.1f} us{graph}  max rel err {row['max_rel_error']:.1e}")
    return rows


def median_us(fn, synchronize, calls=200, trials=9):
    samples = []
    for _ in range(trials):
        synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def crossings(m, n, device, synchronize):
    """Per-crossing costs, f32 [m, n], each in a loop of its own (IREE's runtime path only)."""
    binding = binding_for(torch.device(device))
    if not isinstance(binding, IreeBinding):
        return []
    kernels = binding.kernels
    x = torch.randn(m, n, device=device)
    weight, bias = torch.randn(n, device=device), torch.randn(n, device=device)
    y, mean, rstd = torch.empty_like(x), x.new_empty(m), x.new_empty(m)
    stream = torch.cuda.current_stream() if device == "cuda" else None
    arrays = [binding.array(t) for t in (x, weight, bias, y, mean, rstd)]
    gamma, beta = binding.vector(weight), binding.vector(bias)
    ops = {
        "stream synchronize (idle stream)": lambda: stream.synchronize() if stream else None,
        "DLPack import of one tensor": lambda: binding.array(x),
        "cached weight import": lambda: binding.vector(weight),
        "IREE forward, host wait each call": lambda: kernels.forward(
            arrays[0], gamma, beta, out=tuple(arrays[3:]), wait=True),
        "IREE forward, queued (one wait per trial)": lambda: kernels.forward(
            arrays[0], gamma, beta, out=tuple(arrays[3:]), wait=False),
    }
    rows = []
    for label, fn in ops.items():
        us = median_us(fn, lambda: (synchronize(), kernels.synchronize()))
        rows.append({"crossing": label, "m": m, "n": n, "median_us": us})
        log(f"crossing {m}x{n} {label:44s} {us:8.1f} us")
    return rows


class Block(torch.nn.Module):
    """Pre-norm Transformer block: self-attention (SDPA) and a 4x GELU MLP."""

    def __init__(self, width, heads, norm_class):
        super().__init__()
        self.heads = heads
        self.norm1 = norm_class(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.norm2 = norm_class(width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.GELU(), torch.nn.Linear(4 * width, width))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attention = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attention.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp(self.norm2(x))


def bench_block(tokens, width, heads, device, synchronize, trials, with_compile):
    dtype = torch.bfloat16
    seq = min(tokens, 2048)
    batch = tokens // seq
    generator = torch.Generator(device=device).manual_seed(7)
    xs = [torch.randn(batch, seq, width, device=device, generator=generator, dtype=dtype) for _ in range(2)]
    dys = [torch.randn(batch, seq, width, device=device, generator=generator, dtype=dtype) for _ in range(2)]
    rows = []
    losses = {}
    variants = [("lnbwd_iree LayerNorm", LayerNorm, False), ("torch nn.LayerNorm", torch.nn.LayerNorm, False),
                ("lnbwd_iree RMSNorm", RMSNorm, False), ("torch nn.RMSNorm", torch.nn.RMSNorm, False)]
    if with_compile:
        variants += [("lnbwd_iree LayerNorm, torch.compile", LayerNorm, True),
                     ("torch nn.LayerNorm, torch.compile", torch.nn.LayerNorm, True)]
    models = {}
    for name, norm_class, compile_block in variants:
        torch.manual_seed(0)
        block = Block(width, heads, norm_class).to(device=device, dtype=dtype)
        optimizer = torch.optim.SGD(block.parameters(), lr=1e-4)
        graph_breaks = None
        model = block
        if compile_block:
            torch._dynamo.reset()
            explanation = torch._dynamo.explain(block)(xs[0])
            graph_breaks = {"graphs": explanation.graph_count, "graph_breaks": explanation.graph_break_count,
                            "reasons": [str(r.reason) for r in explanation.break_reasons]}
            log(f"{name}: {explanation.graph_count} graph(s), {explanation.graph_break_count} graph break(s)")
            torch._dynamo.reset()
            model = torch.compile(block)

        def step(i, model=model, optimizer=optimizer):
            out = model(xs[i])
            out.backward(dys[i])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # Same first-step output for every variant of a norm (same seed, same weights).
        first = model(xs[0])
        mean_square = first.float().square().mean().item()
        del first
        start = time.perf_counter()
        step(0)
        synchronize()
        models[name] = step
        rows.append({"block": name, "tokens": tokens, "width": width, "heads": heads, "dtype": "bf16",
                     "first_step_s": time.perf_counter() - start, "compile": graph_breaks,
                     "first_output_mean_square": mean_square})
    samples = time_interleaved([(step, synchronize) for step in models.values()], 2, min_trial_s=0.05, trials=trials)
    for row, times in zip(rows, samples):
        row["median_us"] = statistics.median(times) * 1e6
        log(f"block {row['block']:36s} {tokens} tokens x {width}: training step {row['median_us'] / 1e3:8.3f} ms"
            f"  (first output mean square {row['first_output_mean_square']:.6f})")
    del models
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def write_report(report, out_dir, device):
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"torch_layernorm_{device}.json").write_text(json.dumps(report, indent=2))
    copy = report["copy_gbps"]
    lines = [
        f"# lnbwd_iree.torch in training, {report['device']}, {report['date']}",
        "",
        f"torch {report['torch']}; copy bandwidth {copy:.0f} GB/s. Module forward+backward step (y, then grads",
        "of x, weight, bias), median µs; % of copy counts 5·M·N elements (x read twice, y, dy, dx).",
        "",
        "Host µs: a step's time on the host with the GPU kept busy (steps queued behind a GPU sleep).",
        "CUDA graph: the step captured once per input set, replays timed the same way.",
        "",
        "| dtype | M x N | lnbwd_iree | torch eager | torch.compile | Liger | vs eager | host µs (ours / eager)"
        " | CUDA graph µs (ours / eager) | max rel err (ours) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["impl"], r["m"], r["n"], r["dtype"]): r for r in report["layer_norm"]}
    for (impl, m, n, dtype), row in by.items():
        if impl != "lnbwd_iree":
            continue
        nbytes = 5 * m * n * DTYPES[dtype].itemsize

        def cell(name):
            r = by.get((name, m, n, dtype))
            if r is None:
                return "—"
            return f"{r['median_us']:.0f} ({100 * nbytes / (r['median_us'] * 1e-6) / 1e9 / copy:.0f}%)"

        eager = by[("torch_eager", m, n, dtype)]
        graphs = " / ".join(f"{r['graph_replay_us']:.0f}" if "graph_replay_us" in r else "—" for r in (row, eager))
        lines.append(f"| {dtype} | {m}x{n} | {cell('lnbwd_iree')} | {cell('torch_eager')} | {cell('torch_compile')}"
                     f" | {cell('liger')} | {eager['median_us'] / row['median_us']:.2f}x"
                     f" | {row['host_us']:.0f} / {eager['host_us']:.0f} | {graphs} | {row['max_rel_error']:.1e} |")
    if report["crossings"]:
        lines += ["", "Crossings (f32, each alone in a loop, median µs per operation):", "",
                  "| M x N | crossing | µs |", "|---|---|---|"]
        lines += [f"| {r['m']}x{r['n']} | {r['crossing']} | {r['median_us']:.1f} |" for r in report["crossings"]]
    if report["block"]:
        lines += ["", "Transformer block training step (forward + backward + SGD), bf16:", "",
                  "| variant | tokens x width (heads) | step ms | vs torch's norm | first step s | graphs / breaks |",
                  "|---|---|---|---|---|---|"]
        times = {(r["block"], r["tokens"], r["width"]): r["median_us"] for r in report["block"]}
        for r in report["block"]:
            c = r["compile"]
            breaks = "eager" if c is None else f"{c['graphs']} / {c['graph_breaks']}"
            theirs = times.get((r["block"].replace("lnbwd_iree ", "torch nn."), r["tokens"], r["width"]))
            versus = f"{theirs / r['median_us']:.3f}x" if theirs and r["block"].startswith("lnbwd_iree") else ""
            lines.append(f"| {r['block']} | {r['tokens']}x{r['width']} ({r['heads']}) | {r['median_us'] / 1e3:.3f}"
                         f" | {versus} | {r['first_step_s']:.1f} | {breaks} |")
    (out_dir / f"torch_layernorm_{device}.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", action="append", help="MxN (repeatable); default: the six of issue 21's table")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="default f32 and bf16")
    parser.add_argument("--block", action="append",
                        help="tokens x width x heads (repeatable), or 'none'; default 8192x4096x32 and 32768x1024x16")
    parser.add_argument("--block-compile", action="store_true", help="also torch.compile of the LayerNorm blocks")
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "benchmarks")
    args = parser.parse_args(argv)
    device = args.device
    shapes = [parse_shape(s) for s in args.shape or
              ["8192x4096", "32768x1024", "16384x8192", "65536x768", "1024x512", "4096x1024"]]
    # The copy bandwidth, L2 size and device name as `lnbwd-iree bench` measures them.
    figures = Bench("local-task" if device == "cpu" else device, ("torch_eager",))

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    copy_gbps, l2 = figures.copy_gbps, figures.l2_bytes
    log(f"device {figures.name}: copy {copy_gbps:.0f} GB/s, L2 {l2 >> 20} MiB, torch {torch.__version__}")
    report = {"device": figures.name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "copy_gbps": copy_gbps, "gpu_path": GPU_PATH if device == "cuda" else None,
              "timing": f"bench.time_interleaved, median of {args.trials} trials",
              "layer_norm": [], "crossings": [], "block": []}
    for m, n in shapes:
        for dtype_name in args.dtype or ["f32", "bf16"]:
            report["layer_norm"] += bench_layer_norm(m, n, dtype_name, device, synchronize, l2, args.trials)
    for m, n in shapes:
        report["crossings"] += crossings(m, n, device, synchronize)
    for block in args.block or ["8192x4096x32", "32768x1024x16"]:
        if block != "none":
            tokens, width, heads = (int(v) for v in block.split("x"))
            report["block"] += bench_block(tokens, width, heads, device, synchronize, args.trials, args.block_compile)
    write_report(report, args.out, device)


if __name__ == "__main__":
    sys.exit(main())
