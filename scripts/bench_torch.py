"""lnbwd_iree.torch.LayerNorm in training, against torch's LayerNorm.

1. Forward + backward step of the module alone (y = module(x); grads of x,
   weight and bias for a random dy) for lnbwd_iree, torch eager, torch.compile
   (compiled per shape and dtype, dynamic=False, after torch._dynamo.reset())
   and Liger's LigerLayerNorm when importable; inputs on the device, rotated
   over more than 2x L2; each implementation checked once against float64.
2. What each torch <-> IREE crossing costs (a stream synchronisation, a
   DLPack import, a cached weight import, an IREE call waited for or queued).
3. A Transformer block's training step (self-attention + MLP + 2 LayerNorms,
   bf16, forward + backward + SGD step) with lnbwd_iree vs nn.LayerNorm, eager,
   and torch.compile of the block with lnbwd_iree (graph breaks reported).

Timing: lnbwd_iree.bench.time_calls (median of trials of back-to-back steps,
one synchronisation per trial). Writes benchmarks/torch_layernorm_<device>.{json,md}.

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

from lnbwd_iree.bench import Bench, parse_shape, time_calls
from lnbwd_iree.torch import LayerNorm, binding_for

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
    rows = []
    for name, make in layer_norm_impls(n, dtype, device).items():
        module = make()
        with torch.no_grad():
            module.weight.copy_(weight)
            module.bias.copy_(bias)
        params = [module.weight, module.bias]
        y = module(xs[0])
        results = (y, *torch.autograd.grad(y, [xs[0], *params], dys[0]))
        errors = {k: relative(r, ref) for k, r, ref in zip(("y", "dx", "dweight", "dbias"), results, reference)}

        def step(i):
            out = module(xs[i])
            torch.autograd.grad(out, [xs[i], *params], dys[i])

        seconds = time_calls(step, synchronize, n_sets, trials=trials)
        rows.append({"impl": name, "m": m, "n": n, "dtype": dtype_name, "median_us": seconds * 1e6,
                     "max_rel_error": max(errors.values()), "errors": errors, "input_sets": n_sets})
        log(f"{name:14s} {m}x{n} {dtype_name:5s} forward+backward {seconds * 1e6:9.1f} us"
            f"  max rel err {max(errors.values()):.1e}")
        del module
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
    """Per-crossing costs, f32 [m, n], each in a loop of its own."""
    binding = binding_for(torch.device(device))
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


def bench_block(tokens, width, heads, device, synchronize, trials):
    dtype = torch.bfloat16
    seq = min(tokens, 2048)
    batch = tokens // seq
    generator = torch.Generator(device=device).manual_seed(7)
    xs = [torch.randn(batch, seq, width, device=device, generator=generator, dtype=dtype) for _ in range(2)]
    dys = [torch.randn(batch, seq, width, device=device, generator=generator, dtype=dtype) for _ in range(2)]
    rows = []
    losses = {}
    variants = [("lnbwd_iree", LayerNorm, False), ("torch nn.LayerNorm", torch.nn.LayerNorm, False),
                ("lnbwd_iree, torch.compile", LayerNorm, True), ("torch nn.LayerNorm, torch.compile", torch.nn.LayerNorm, True)]
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

        def step(i):
            out = model(xs[i])
            out.backward(dys[i])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        # Same first-step output for every variant (same seed, same weights).
        first = model(xs[0])
        losses[name] = first.float().square().mean().item()
        del first
        start = time.perf_counter()
        step(0)
        synchronize()
        first_step_s = time.perf_counter() - start
        seconds = time_calls(step, synchronize, 2, min_trial_s=0.05, trials=trials)
        rows.append({"block": name, "tokens": tokens, "width": width, "heads": heads, "dtype": "bf16",
                     "median_us": seconds * 1e6, "first_step_s": first_step_s, "compile": graph_breaks,
                     "first_output_mean_square": losses[name]})
        log(f"block {name:34s} {tokens} tokens x {width}: training step {seconds * 1e3:8.3f} ms")
        del model, block, optimizer
        torch.cuda.empty_cache() if device == "cuda" else None
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
        "| dtype | M x N | lnbwd_iree | torch eager | torch.compile | Liger | vs eager | max rel err (ours) |",
        "|---|---|---|---|---|---|---|---|",
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

        eager = by[("torch_eager", m, n, dtype)]["median_us"]
        lines.append(f"| {dtype} | {m}x{n} | {cell('lnbwd_iree')} | {cell('torch_eager')} | {cell('torch_compile')}"
                     f" | {cell('liger')} | {eager / row['median_us']:.2f}x | {row['max_rel_error']:.1e} |")
    if report["crossings"]:
        lines += ["", "Crossings (f32, each alone in a loop, median µs per operation):", "",
                  "| M x N | crossing | µs |", "|---|---|---|"]
        lines += [f"| {r['m']}x{r['n']} | {r['crossing']} | {r['median_us']:.1f} |" for r in report["crossings"]]
    if report["block"]:
        lines += ["", "Transformer block training step (forward + backward + SGD), bf16:", "",
                  "| variant | tokens x width (heads) | step ms | first step s | graphs / breaks |", "|---|---|---|---|---|"]
        for r in report["block"]:
            c = r["compile"]
            breaks = "eager" if c is None else f"{c['graphs']} / {c['graph_breaks']}"
            lines.append(f"| {r['block']} | {r['tokens']}x{r['width']} ({r['heads']}) | {r['median_us'] / 1e3:.3f}"
                         f" | {r['first_step_s']:.1f} | {breaks} |")
    (out_dir / f"torch_layernorm_{device}.md").write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", action="append", help="MxN (repeatable); default 8192x4096 and 4096x1024")
    parser.add_argument("--dtype", action="append", choices=DTYPES, help="default f32 and bf16")
    parser.add_argument("--block", default="8192x4096x32", help="tokens x width x heads, or 'none'")
    parser.add_argument("--trials", type=int, default=9)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "benchmarks")
    args = parser.parse_args(argv)
    device = args.device
    shapes = [parse_shape(s) for s in args.shape or ["8192x4096", "4096x1024"]]
    # The copy bandwidth, L2 size and device name as `lnbwd-iree bench` measures them.
    figures = Bench("local-task" if device == "cpu" else device, ("torch_eager",))

    def synchronize():
        if device == "cuda":
            torch.cuda.synchronize()

    copy_gbps, l2 = figures.copy_gbps, figures.l2_bytes
    log(f"device {figures.name}: copy {copy_gbps:.0f} GB/s, L2 {l2 >> 20} MiB, torch {torch.__version__}")
    report = {"device": figures.name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
              "copy_gbps": copy_gbps, "timing": f"bench.time_calls, median of {args.trials} trials",
              "layer_norm": [], "crossings": [], "block": []}
    for m, n in shapes:
        for dtype_name in args.dtype or ["f32", "bf16"]:
            report["layer_norm"] += bench_layer_norm(m, n, dtype_name, device, synchronize, l2, args.trials)
    for m, n in shapes:
        report["crossings"] += crossings(m, n, device, synchronize)
    if args.block != "none":
        tokens, width, heads = (int(v) for v in args.block.split("x"))
        report["block"] = bench_block(tokens, width, heads, device, synchronize, args.trials)
    write_report(report, args.out, device)


if __name__ == "__main__":
    sys.exit(main())
