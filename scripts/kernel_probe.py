"""A/B probe of backward kernel variants on one GPU (docs/performance.md).

Here (with the compiler):
    kernel_probe.py build OUT LABEL DTYPE MxN [ROWS SUBGROUPS [ROWS_PER_STEP]]
compiles the backward for one shape into OUT/<label>_<dtype>_<MxN>.vmfb and
records it in OUT/variants.json; ROWS, SUBGROUPS and ROWS_PER_STEP (default 1)
override the one-pass design (M / ROWS workgroups of SUBGROUPS subgroups,
ROWS_PER_STEP rows per loop step), else the shipped choice is built. Run it with another checkout first on PYTHONPATH to build
that checkout's design as a baseline.

On the device (runtime only):
    kernel_probe.py run OUT [RESULT.json]
runs every variant of each shape with the IREE runtime on fresh random
inputs, outputs poisoned with NaN, checks dX, dgamma and dbeta against the
float64 reference (raises on any error above the dtype's tolerance), then
times the variants of a shape interleaved over three rounds (device-resident
inputs rotated over > 2x L2, warm-up, median per round) and prints a table,
fastest round per variant."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np


def build(out: Path, label: str, dtype: str, shape: str, rows: str | None = None, subgroups: str | None = None,
          rows_per_step: str = "1"):
    from lnbwd_iree import compiler
    from lnbwd_iree.kernels import LAYERNORM_BACKWARD, Specialization
    from lnbwd_iree.ops import layernorm
    from lnbwd_iree.targets import target_for

    m, n = (int(v) for v in shape.split("x"))
    target = target_for("cuda", "sm_80")
    spec = Specialization(LAYERNORM_BACKWARD, dtype, m, n)
    if rows is None:
        design = layernorm.step_blocks(spec, target)
    else:
        design = (m // int(rows), int(rows), int(subgroups), int(rows_per_step))
    start = time.perf_counter()
    # The design is the only change: step_blocks, which LayerNorm's backward asks, answers with it.
    with mock.patch.object(layernorm, "step_blocks", lambda _spec, _target: design):
        data = compiler.compile_artifact(spec, target).vmfb
    out.mkdir(parents=True, exist_ok=True)
    name = f"{label}_{dtype}_{shape}.vmfb"
    (out / name).write_bytes(data)
    index = out / "variants.json"
    variants = json.loads(index.read_text()) if index.exists() else []
    variants = [v for v in variants if v["file"] != name]
    variants.append({"file": name, "label": label, "dtype": dtype, "m": m, "n": n, "step_blocks": design})
    index.write_text(json.dumps(variants, indent=1))
    print(f"{name}: step_blocks {design}, {len(data)} bytes, {time.perf_counter() - start:.1f} s")


def run(out: Path, result_path: Path | None):
    from lnbwd_iree import bench, runtime
    from lnbwd_iree.recent import SHAPES_KEPT, RecentlyUsed
    from lnbwd_iree.reference import TOLERANCE, backward_reference, relative_error

    variants = json.loads((out / "variants.json").read_text())
    kernels = runtime.LayerNormKernels("cuda", static_shapes=True)
    # The bench's device figures: copy bandwidth through torch (None without it) and L2 size.
    figures = bench.Bench("cuda", ["torch_eager"])
    copy_gbps, l2 = figures.copy_gbps, figures.l2_bytes
    print(f"copy {copy_gbps and round(copy_gbps)} GB/s, L2 {l2 >> 20} MiB", flush=True)
    rng = np.random.default_rng()
    state = {}  # variant file -> (entries, plans) of its loaded module
    original_load = kernels.store.load

    def use(variant):
        path = out / variant["file"]
        kernels._modules, kernels._plans = state.setdefault(variant["file"], (RecentlyUsed(SHAPES_KEPT),
                                                                             RecentlyUsed(SHAPES_KEPT)))
        kernels.store.load = lambda spec, target: path.read_bytes()

    results = []
    groups: dict[tuple, list] = {}
    for variant in variants:
        groups.setdefault((variant["dtype"], variant["m"], variant["n"]), []).append(variant)
    for (dtype, m, n), group in groups.items():
        dy, x, gamma, mean, rstd = bench.make_inputs(rng, m, n, dtype)
        want = backward_reference(dy, x, gamma, mean, rstd)
        n_sets = max(2, math.ceil(2 * l2 / (2 * dy.nbytes)) + 1)
        sets = [[kernels.to_device(a) for a in ((dy, x) if i == 0 else bench.make_inputs(rng, m, n, dtype)[:2])]
                for i in range(n_sets)]
        g_dev, mean_dev, rstd_dev = (kernels.to_device(a) for a in (gamma, mean, rstd))
        outs = [tuple(kernels.allocate(s, dy.dtype) for s in ((m, n), (n,), (n,))) for _ in range(n_sets)]
        storage = runtime.STORAGE_DTYPES[dtype]
        for variant in group:
            use(variant)
            poisoned = tuple(kernels.to_device(np.full(s, np.nan, storage)) for s in ((m, n), (n,), (n,)))
            got = kernels.backward(sets[0][0], sets[0][1], g_dev, mean_dev, rstd_dev, out=poisoned)
            errors = [relative_error(np.asarray(g.to_host(), np.float64), w) for g, w in zip(got, want)]
            if not all(e <= TOLERANCE[dtype] for e in errors):  # NaN (unwritten) fails too
                raise RuntimeError(f"{variant['file']}: relative errors (dx, dgamma, dbeta) {errors} "
                                   f"exceed {TOLERANCE[dtype]}")
            variant["errors"] = errors
        moved = bench.bytes_moved(m, n, dtype, "backward")
        for round_ in range(3):
            for variant in group:
                use(variant)
                seconds = bench.time_calls(
                    lambda i: kernels.backward(sets[i][0], sets[i][1], g_dev, mean_dev, rstd_dev, out=outs[i],
                                               wait=False),
                    kernels.synchronize, n_sets)
                variant.setdefault("rounds_us", []).append(seconds * 1e6)
        for variant in group:
            best = min(variant["rounds_us"])
            variant["best_us"] = best
            variant["pct_of_copy"] = 100 * moved / (best * 1e-6) / 1e9 / copy_gbps if copy_gbps else None
            results.append(variant)
            print(f"{dtype:4s} {m}x{n:<6d} {variant['label']:12s} {str(variant['step_blocks']):18s} "
                  f"{best:8.1f} us {variant['pct_of_copy'] or 0:5.1f}% rounds "
                  f"{[round(r, 1) for r in variant['rounds_us']]} max err {max(variant['errors']):.1e}", flush=True)
        state.clear()
        kernels._modules, kernels._plans = RecentlyUsed(SHAPES_KEPT), RecentlyUsed(SHAPES_KEPT)
        del sets, outs
    kernels.store.load = original_load
    if result_path is not None:
        result_path.write_text(json.dumps({"copy_gbps": copy_gbps, "results": results}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "build":
        build(Path(sys.argv[2]), *sys.argv[3:])
    elif len(sys.argv) in (3, 4) and sys.argv[1] == "run":
        run(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) == 4 else None)
    else:
        sys.exit(__doc__)
