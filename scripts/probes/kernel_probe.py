"""Question: is a backward variant (another one-pass grid or rows per loop
step than ``layernorm.step_blocks`` ships, or another checkout's design)
faster on one GPU than the shipped one, for one shape and dtype? An A/B
probe with float64 checks first (docs/performance.md, changes 29-40).

Here (with the compiler):

    kernel_probe.py build OUT LABEL DTYPE MxN [--rows R --subgroups S [--rows-per-step P]]

builds LayerNorm's backward for one shape into OUT/<label>_<dtype>_<MxN>/
and records it in OUT/variants.json: with --rows and --subgroups, the one
pass over M / R workgroups of S subgroups, P (default 1) rows per loop step,
through the op's public seam (``layernorm.backward_fields`` and
``backward_library_for`` at that grid); else the shipped design. Run it with
another checkout first on PYTHONPATH to build that checkout's design as a
baseline.

On the device (runtime only):

    kernel_probe.py run OUT [RESULT.json]

runs every variant of each shape on fresh random inputs, outputs poisoned
with NaN, checks dX, dgamma and dbeta against the float64 reference (raises
on any error above the dtype's tolerance), then times the variants of a
shape interleaved over three rounds (device-resident inputs rotated over > 2x
L2, warm-up, median per round) and prints a table, fastest round per variant."""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from pathlib import Path

import numpy as np
from variants import build, open_variant, variant

from lnbwd_iree.dtypes import STORAGE_DTYPES
from lnbwd_iree.kernels import LAYERNORM_BACKWARD, Specialization
from lnbwd_iree.ops import layernorm
from lnbwd_iree.targets import target_for

TARGET = target_for("cuda")


def backward_variant(one_pass: list[int] | None):
    """LayerNorm's backward over the one-pass grid ``one_pass`` (G, R, S, P), or its shipped design (None)."""
    if one_pass is None:
        return LAYERNORM_BACKWARD
    blocks = layernorm.SteppedBlocks(*one_pass)
    return variant(LAYERNORM_BACKWARD, functools.partial(layernorm.backward_fields, one_pass=blocks),
                   functools.partial(layernorm.backward_library_for, one_pass=blocks))


def build_variant(out: Path, label: str, dtype: str, shape: str, rows: int | None, subgroups: int | None,
                  rows_per_step: int) -> None:
    m, n = (int(v) for v in shape.split("x"))
    if (rows is None) != (subgroups is None):
        raise SystemExit("--rows and --subgroups go together")
    one_pass = None if rows is None else [m // rows, rows, subgroups, rows_per_step]
    shipped = layernorm.step_blocks(Specialization(LAYERNORM_BACKWARD, dtype, m, n), TARGET)
    folder = f"{label}_{dtype}_{shape}"
    start = time.perf_counter()
    path = build(backward_variant(one_pass), dtype, m, n, TARGET, out / folder)
    index = out / "variants.json"
    entries = [v for v in (json.loads(index.read_text()) if index.exists() else []) if v["folder"] != folder]
    entries.append({"folder": folder, "label": label, "dtype": dtype, "m": m, "n": n, "one_pass": one_pass,
                    "step_blocks": one_pass or (list(shipped) if shipped else None)})
    index.write_text(json.dumps(entries, indent=1))
    print(f"{folder}: step_blocks {entries[-1]['step_blocks']}, {path.stat().st_size} bytes, "
          f"{time.perf_counter() - start:.1f} s")


def run(out: Path, result_path: Path | None) -> None:
    from lnbwd_iree import bench
    from lnbwd_iree.reference import TOLERANCE, backward_reference, relative_error

    entries = json.loads((out / "variants.json").read_text())
    # The bench's device figures: copy bandwidth through torch (None without it) and L2 size.
    figures = bench.Bench("cuda", ["torch_eager"])
    copy_gbps, l2 = figures.copy_gbps, figures.l2_bytes
    print(f"copy {copy_gbps and round(copy_gbps)} GB/s, L2 {l2 >> 20} MiB", flush=True)
    rng = np.random.default_rng()
    results = []
    groups: dict[tuple, list] = {}
    for entry in entries:
        groups.setdefault((entry["dtype"], entry["m"], entry["n"]), []).append(entry)
    for (dtype, m, n), group in groups.items():
        probes = [(entry, backward_variant(entry["one_pass"]), open_variant(out / entry["folder"])) for entry in group]
        first = probes[0][2]
        dy, x, gamma, mean, rstd = bench.make_inputs(rng, m, n, dtype)
        want = backward_reference(dy, x, gamma, mean, rstd)
        n_sets = max(2, math.ceil(2 * l2 / (2 * dy.nbytes)) + 1)
        sets = [[first.to_device(a) for a in ((dy, x) if i == 0 else bench.make_inputs(rng, m, n, dtype)[:2])]
                for i in range(n_sets)]
        g_dev, mean_dev, rstd_dev = (first.to_device(a) for a in (gamma, mean, rstd))
        outs = [tuple(first.allocate(s, dy.dtype) for s in ((m, n), (n,), (n,))) for _ in range(n_sets)]
        storage = STORAGE_DTYPES[dtype]

        def backward(kernels, kernel, i, **options):
            return kernels.call(kernel, "layernorm_backward", (sets[i][0], sets[i][1], g_dev, mean_dev, rstd_dev),
                                **options)

        for entry, kernel, kernels in probes:
            poisoned = tuple(kernels.to_device(np.full(s, np.nan, storage)) for s in ((m, n), (n,), (n,)))
            got = backward(kernels, kernel, 0, out=poisoned)
            errors = [relative_error(np.asarray(g.to_host(), np.float64), w) for g, w in zip(got, want)]
            if not all(e <= TOLERANCE[dtype] for e in errors):  # NaN (unwritten) fails too
                raise RuntimeError(f"{entry['folder']}: relative errors (dx, dgamma, dbeta) {errors} "
                                   f"exceed {TOLERANCE[dtype]}")
            entry["errors"] = errors
        moved = bench.bytes_moved(m, n, dtype, "backward")
        for _ in range(3):
            for entry, kernel, kernels in probes:
                seconds = bench.time_calls(lambda i: backward(kernels, kernel, i, out=outs[i], wait=False),
                                           kernels.synchronize, n_sets)
                entry.setdefault("rounds_us", []).append(seconds * 1e6)
        for entry, _, _ in probes:
            best = min(entry["rounds_us"])
            entry["best_us"] = best
            entry["pct_of_copy"] = 100 * moved / (best * 1e-6) / 1e9 / copy_gbps if copy_gbps else None
            results.append(entry)
            print(f"{dtype:4s} {m}x{n:<6d} {entry['label']:12s} {str(entry['step_blocks']):18s} "
                  f"{best:8.1f} us {entry['pct_of_copy'] or 0:5.1f}% rounds "
                  f"{[round(r, 1) for r in entry['rounds_us']]} max err {max(entry['errors']):.1e}", flush=True)
        del sets, outs, probes
    if result_path is not None:
        result_path.write_text(json.dumps({"copy_gbps": copy_gbps, "results": results}, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    b = modes.add_parser("build", help="build one variant (needs the compiler)")
    b.add_argument("out", type=Path)
    b.add_argument("label")
    b.add_argument("dtype", choices=("f32", "f16", "bf16"))
    b.add_argument("shape", help="MxN")
    b.add_argument("--rows", type=int, help="rows per block R (with --subgroups): the one pass over M / R blocks")
    b.add_argument("--subgroups", type=int, help="subgroups per workgroup S")
    b.add_argument("--rows-per-step", type=int, default=1, help="rows per loop step P")
    r = modes.add_parser("run", help="check and time every variant (on the GPU)")
    r.add_argument("out", type=Path)
    r.add_argument("result", type=Path, nargs="?")
    args = parser.parse_args(argv)
    if args.mode == "build":
        build_variant(args.out, args.label, args.dtype, args.shape, args.rows, args.subgroups, args.rows_per_step)
    else:
        run(args.out, args.result)


if __name__ == "__main__":
    main()
