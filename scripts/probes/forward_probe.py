"""Question: which schedule of the forward's one row dispatch is fastest on
a GPU, per shape and dtype: (subgroups, step, rows per workgroup) variants
around the shipped one (``schedules.forward_schedule``) and IREE's own choice,
static or dynamic M, against torch eager, Liger and optionally torch.compile?
(Answered in docs/performance.md, "Forward": four vectors a thread, the whole
row a step, one row a workgroup.)

Two steps. Here (with the compiler), each variant is built through the op's
public seam (``layernorm.forward_fields`` at its schedule) into a folder of
its own:

    python scripts/probes/forward_probe.py compile OUT_DIR

On the GPU machine (runtime only): every variant is checked against a
float64 reference on fresh inputs with NaN-poisoned outputs (fails loudly),
then the variants and peers are timed interleaved, inputs rotated over > 2x
L2, median of trials:

    python scripts/probes/forward_probe.py run OUT_DIR [--compile] [--rounds 3]

Prints a short table last and writes every number to $OUT/forward_probe.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import sys
from pathlib import Path

import numpy as np
from variants import build, open_variant, variant

from lnbwd_iree.dtypes import ITEMSIZE, STORAGE_DTYPES
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.ops import layernorm, schedules
from lnbwd_iree.targets import target_for

CUDA = target_for("cuda")
LARGE = [(8192, 4096), (32768, 1024), (16384, 8192), (4096, 16384), (65536, 768)]
SMALL = [(1024, 512), (4096, 1024)]


def variants(m: int, n: int, dtype: str) -> list[tuple[str, int | None, tuple | None]]:
    """(label, static M or None, schedule or None for IREE's choice) to try."""
    spec = Specialization(LAYERNORM_FORWARD, dtype, m, n)
    per_subgroup = CUDA.subgroup_size * spec.vector
    shipped = schedules.forward_schedule(spec, CUDA)
    out = [("default", m, None), ("shipped", m, shipped), ("shipped_dynM", None, shipped)]
    # The whole row in registers with 2 to 8 vectors per thread; four rows per
    # workgroup where a row takes one subgroup.
    for subgroups in range(1, 33):
        vectors, rest = divmod(n, subgroups * per_subgroup)
        schedule = (subgroups, n, 1)
        if rest == 0 and 2 <= vectors <= 8 and schedule != shipped:
            out.append((f"s{subgroups}k{vectors}", m, schedule))
        if rest == 0 and subgroups == 1 and vectors <= 8:
            out.append((f"s1k{vectors}r4", m, (1, n, 4)))
    return out


def forward_variant(static_m: int | None, schedule):
    """LayerNorm's forward at ``schedule`` (None: IREE's choice), one
    artifact per (M, N) or, for a dynamic M, per N."""
    schedule = tuple(schedule) if schedule is not None else None
    return variant(LAYERNORM_FORWARD, functools.partial(layernorm.forward_fields, schedule=schedule),
                   per_n=static_m is None)


def compile_variants(out_dir: Path, shapes, dtypes) -> None:
    index = []
    for dtype in dtypes:
        for m, n in shapes:
            for label, static_m, schedule in variants(m, n, dtype):
                folder = f"{dtype}_{m}x{n}_{label}"
                path = build(forward_variant(static_m, schedule), dtype, m, n, CUDA, out_dir / folder)
                index.append({"folder": folder, "dtype": dtype, "m": m, "n": n, "label": label,
                              "static_m": static_m, "schedule": schedule})
                print(folder, path.stat().st_size, flush=True)
    (out_dir / "index.json").write_text(json.dumps(index, indent=1))


class Variant:
    """A built variant on the GPU: its kernels and a forward call."""

    def __init__(self, variant_dir: Path, record: dict):
        self.kernel = forward_variant(record["static_m"], record["schedule"])
        self.kernels = open_variant(variant_dir / record["folder"])

    def forward(self, x, gamma, beta, **options):
        return self.kernels.call(self.kernel, "layernorm_forward", (x, gamma, beta), eps=1e-5, **options)


def profile(variant_dir: Path, labels: list[str]) -> None:
    """A few calls of each named variant and of torch eager and Liger per
    shape, for ncu to time kernel by kernel."""
    import torch
    from liger_kernel.ops.layer_norm import layer_norm_forward as liger_forward

    for record in json.loads((variant_dir / "index.json").read_text()):
        if record["label"] not in labels:
            continue
        dtype, m, n = record["dtype"], record["m"], record["n"]
        probe = Variant(variant_dir, record)
        x = probe.kernels.to_device(np.random.default_rng(0).standard_normal((m, n), np.float32).astype(STORAGE_DTYPES[dtype]))
        gamma = probe.kernels.to_device(np.ones(n, STORAGE_DTYPES[dtype]))
        for _ in range(3):
            probe.forward(x, gamma, gamma)
        if record["label"] == labels[0]:
            tx = torch.randn(m, n, device="cuda", dtype={"f32": torch.float32, "bf16": torch.bfloat16}[dtype])
            tg = torch.ones(n, device="cuda", dtype=tx.dtype)
            for _ in range(3):
                torch.native_layer_norm(tx, [n], tg, tg, 1e-5)
                liger_forward(tx, tg, tg, 1e-5)
            torch.cuda.synchronize()
        print(f"profiled {dtype} {m}x{n} {record['label']}", flush=True)


def run(variant_dir: Path, rounds: int, with_compile: bool, labels: list[str] | None) -> None:
    import torch

    from lnbwd_iree.bench import time_calls
    from lnbwd_iree.reference import TOLERANCE, forward_reference, relative_error

    try:
        from liger_kernel.ops.layer_norm import layer_norm_forward as liger_forward
    except ImportError as e:
        print(f"liger not importable: {e}")
        liger_forward = None

    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    index = [r for r in json.loads((variant_dir / "index.json").read_text()) if not labels or r["label"] in labels]
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    a = torch.empty(1 << 28, device="cuda").uniform_()
    b = torch.empty_like(a)
    copy_gbps = 2 * a.nbytes / time_calls(lambda i: b.copy_(a), torch.cuda.synchronize, 1, trials=9) / 1e9
    del a, b
    print(f"copy {copy_gbps:.0f} GB/s, L2 {l2 >> 20} MiB", flush=True)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}
    results, failures = [], []
    groups: dict[tuple, list] = {}
    for record in index:
        groups.setdefault((record["dtype"], record["m"], record["n"]), []).append(record)
    for (dtype, m, n), records in groups.items():
        storage = STORAGE_DTYPES[dtype]
        set_bytes = 2 * m * n * ITEMSIZE[dtype]
        n_sets = max(2, math.ceil(2.2 * l2 / set_bytes))
        host_x = []
        for _ in range(n_sets):
            x = rng.standard_normal((m, n), np.float32) * 2 + 0.5
            # A few rows on a large common offset: the statistics' hard case.
            x[: m // 16] += 1000.0
            host_x.append(x.astype(storage))
        gamma = (1 + 0.5 * rng.standard_normal(n, np.float32)).astype(storage)
        beta = (0.5 * rng.standard_normal(n, np.float32)).astype(storage)
        base = Variant(variant_dir, records[0]).kernels
        dev_x = [base.to_device(x) for x in host_x]
        dev_gamma, dev_beta = base.to_device(gamma), base.to_device(beta)
        outs = [tuple(base.allocate(s, d) for s, d in (((m, n), storage), ((m,), np.float32), ((m,), np.float32)))
                for _ in range(n_sets)]
        ref = forward_reference(host_x[0].astype(np.float64), gamma.astype(np.float64), beta.astype(np.float64))
        impls = {}
        for record in records:
            probe = Variant(variant_dir, record)
            poison = tuple(probe.kernels.to_device(np.full(s, np.nan, d)) for s, d in (((m, n), storage), ((m,), np.float32), ((m,), np.float32)))
            got = probe.forward(dev_x[0], dev_gamma, dev_beta, out=poison)
            errors = [relative_error(g.to_host().astype(np.float64), r) for g, r in zip(got, ref)]
            bound = TOLERANCE[dtype]
            ok = all(e <= bound for e in errors)
            print(f"check {dtype} {m}x{n} {record['label']}: y {errors[0]:.2e} mean {errors[1]:.2e} rstd {errors[2]:.2e} "
                  f"{'ok' if ok else 'FAIL'}", flush=True)
            if not ok:
                failures.append((dtype, m, n, record["label"], errors))
                continue

            def call(i, probe=probe):
                probe.forward(dev_x[i], dev_gamma, dev_beta, out=outs[i], wait=False)

            impls[record["label"]] = (call, probe.kernels.synchronize)
        tx = [torch.from_numpy(x.view(np.uint16) if dtype == "bf16" else x).cuda() for x in host_x]
        if dtype == "bf16":
            tx = [t.view(torch.bfloat16) for t in tx]
        tg = torch.from_numpy(gamma.astype(np.float32)).cuda().to(torch_dtype[dtype])
        tb = torch.from_numpy(beta.astype(np.float32)).cuda().to(torch_dtype[dtype])
        impls["torch_eager"] = (lambda i: torch.native_layer_norm(tx[i], [n], tg, tb, 1e-5), torch.cuda.synchronize)
        if liger_forward is not None:
            impls["liger"] = (lambda i: liger_forward(tx[i], tg, tb, 1e-5), torch.cuda.synchronize)
        if with_compile:
            torch._dynamo.reset()
            compiled = torch.compile(lambda x, g, b: torch.native_layer_norm(x, [n], g, b, 1e-5), dynamic=False)
            impls["torch_compile"] = (lambda i: compiled(tx[i], tg, tb), torch.cuda.synchronize)
        samples = {label: [] for label in impls}
        for _ in range(rounds):
            for label, (call, sync) in impls.items():
                samples[label].append(time_calls(call, sync, n_sets) * 1e6)
        moved = 2 * m * n * ITEMSIZE[dtype] + 8 * m
        for label, times in samples.items():
            us = statistics.median(times)
            pct = moved / (us * 1e-6) / 1e9 / copy_gbps * 100
            results.append({"dtype": dtype, "m": m, "n": n, "impl": label, "median_us": us, "rounds_us": times,
                            "pct_of_copy": pct})
        del tx, dev_x, outs
    (out / "forward_probe.json").write_text(json.dumps({"copy_gbps": copy_gbps, "results": results,
                                                        "failures": failures}, indent=1))
    print(f"\ncopy {copy_gbps:.0f} GB/s")
    for r in results:
        print(f"{r['dtype']:5} {r['m']:>6}x{r['n']:<6} {r['impl']:14} {r['median_us']:8.1f} us {r['pct_of_copy']:5.1f}%  "
              + " ".join(f"{t:.1f}" for t in r["rounds_us"]))
    if failures:
        print(f"FAILED checks: {failures}")
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["compile", "run", "profile"])
    parser.add_argument("dir", type=Path)
    parser.add_argument("--dtype", action="append")
    parser.add_argument("--small", action="store_true", help="the small shapes too")
    parser.add_argument("--compile", action="store_true", help="time torch.compile too (slow to build)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--label", action="append", help="variants to run (profile: the first also runs the peers)")
    args = parser.parse_args()
    if args.mode == "compile":
        compile_variants(args.dir, LARGE + (SMALL if args.small else []), args.dtype or ["f32", "bf16"])
    elif args.mode == "profile":
        profile(args.dir, args.label or ["shipped"])
    else:
        run(args.dir, args.rounds, args.compile, args.label)
