"""Forward + backward of lnbwd_iree.torch.LayerNorm against torch.nn.LayerNorm
(torch eager), same inputs, same device; timed like `lnbwd-iree bench`
(bench.time_calls: median of trials of back-to-back steps, one
synchronisation per trial). Writes benchmarks/torch_layernorm_<device>.{json,md}.

python scripts/bench_torch.py cuda 8192x4096 4096x1024
"""

import datetime
import json
import sys
from pathlib import Path

import torch

from lnbwd_iree.bench import parse_shape, time_calls
from lnbwd_iree.torch import LayerNorm

device = sys.argv[1]
rows = []


def synchronize():
    if device == "cuda":
        torch.cuda.synchronize()


def step_time(module, x, dy):
    def step(_):
        module(x).backward(dy)

    return time_calls(step, synchronize, 1, trials=9)


for text in sys.argv[2:]:
    m, n = parse_shape(text)
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(m, n, device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn(m, n, device=device, dtype=dtype)
        for name, cls in (("lnbwd_iree", LayerNorm), ("torch_eager", torch.nn.LayerNorm)):
            module = cls(n, device=device, dtype=dtype)
            seconds = step_time(module, x, dy)
            rows.append({"impl": name, "m": m, "n": n, "dtype": str(dtype).split(".")[-1], "median_us": seconds * 1e6})
            print(f"{name:12s} {m}x{n} {rows[-1]['dtype']:8s} forward+backward {seconds * 1e6:9.1f} us", flush=True)

out = Path(__file__).resolve().parent.parent / "benchmarks"
name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
report = {"device": name, "date": datetime.date.today().isoformat(), "timing": "forward+backward steps, bench.time_calls, median of 9 trials", "results": rows}
(out / f"torch_layernorm_{device}.json").write_text(json.dumps(report, indent=2))
lines = [f"# torch LayerNorm forward+backward, {name}, {report['date']}", "", "| dtype | M x N | lnbwd_iree us | torch eager us | ratio |", "|---|---|---|---|---|"]
by = {(r["impl"], r["m"], r["n"], r["dtype"]): r["median_us"] for r in rows}
for (impl, m, n, dtype), us in by.items():
    if impl == "lnbwd_iree":
        eager = by[("torch_eager", m, n, dtype)]
        lines.append(f"| {dtype} | {m}x{n} | {us:.1f} | {eager:.1f} | {eager / us:.2f}x |")
(out / f"torch_layernorm_{device}.md").write_text("\n".join(lines) + "\n")
