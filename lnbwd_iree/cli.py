"""``lnbwd-iree`` (also ``python -m lnbwd_iree``): run, compile, bench, info."""

from __future__ import annotations

import argparse
import datetime
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from . import bench, cache, compiler, targets
from .kernels import DTYPES, KERNELS, Specialization
from .reference import TOLERANCE, backward_reference, relative_error
from .runtime import STORAGE_DTYPES, LayerNormKernels



def cmd_run(args) -> int:
    """CK example 53's driver: verify init time."""
    kernels = LayerNormKernels(args.device, chip=args.chip, backend=args.backend, artifact_dir=args.artifact_dir)
    rng = np.random.default_rng(args.seed)
    storage = STORAGE_DTYPES[args.dtype]
    if args.init == 1:  # CK's integer init
        draw = lambda shape: rng.integers(-5, 6, shape).astype(np.float32)  # noqa: E731
    else:
        draw = lambda shape: rng.standard_normal(shape, np.float32)  # noqa: E731
    dy, x = draw((args.m, args.n)).astype(storage), (draw((args.m, args.n)) * 2 + 0.5).astype(storage)
    gamma = (1 + 0.5 * draw(args.n)).astype(storage)
    beta = draw(args.n).astype(storage)
    y, mean, rstd = kernels.forward(x, gamma, beta)
    dx, dgamma, dbeta = kernels.backward(dy, x, gamma, mean, rstd)
    print(f"layernorm2d_bwd M={args.m} N={args.n} dtype={args.dtype} device={args.device} target={kernels.target.name}")
    status = 0
    if args.verify:
        want = backward_reference(dy, x, gamma, mean.to_host(), rstd.to_host())
        for name, got, ref in zip(("dx", "dgamma", "dbeta"), (dx, dgamma, dbeta), want):
            error = relative_error(np.asarray(got.to_host()), ref)
            ok = error < TOLERANCE[args.dtype]
            status |= not ok
            print(f"  {name:7s} relative error {error:.2e} (bound {TOLERANCE[args.dtype]:.1e}) {'PASS' if ok else 'FAIL'}")
        print("PASS" if status == 0 else "FAIL")
    if args.time:
        dy_d, x_d, g_d = (kernels.to_device(a) for a in (dy, x, gamma))
        seconds = bench.time_calls(
            lambda i: kernels.backward(dy_d, x_d, g_d, mean, rstd, wait=False), kernels.synchronize, 1
        )
        moved = bench.bytes_moved(args.m, args.n, args.dtype)
        print(f"  backward median {seconds * 1e6:.1f} us, {moved / seconds / 1e9:.1f} GB/s effective ({moved} bytes)")
    return status


def cmd_compile(args) -> int:
    out = Path(args.out)
    wanted = set(args.target or [t.name for t in targets.TARGET_MATRIX])
    chosen = [t for t in targets.TARGET_MATRIX if t.name in wanted]
    unknown = wanted - {t.name for t in chosen}
    if unknown:
        raise SystemExit(f"unknown target(s) {sorted(unknown)}; known: {[t.name for t in targets.TARGET_MATRIX]}")
    shapes = [(None, None)] + [bench.parse_shape(s) for s in args.shape or []]
    paths = []
    for target in chosen:
        for dtype in args.dtype or DTYPES:
            if (target.backend, dtype) in targets.UNSUPPORTED_DTYPES:
                print(f"skip {target.name} {dtype}: {targets.UNSUPPORTED_DTYPES[target.backend, dtype]}")
                continue
            for kernel in KERNELS:
                for m, n in shapes:
                    spec = Specialization(kernel, dtype, m, n)
                    path = cache.ArtifactStore.build(spec, target, out)
                    paths.append(path)
                    print(f"{path.name}")
    manifest = cache.write_manifest(out, paths)
    print(f"{len(paths)} artifacts, manifest {manifest}")
    return 0


def cmd_bench(args) -> int:
    shapes = [bench.parse_shape(s) for s in args.shape]
    if args.json:
        stem = Path(args.json).with_suffix("")
    else:
        stem = Path.cwd() / f"bench_{args.device}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    existing = [str(p) for p in bench.report_paths(stem) if p.exists()]
    if existing and not args.force:
        raise ValueError(f"{', '.join(existing)} already exist(s); pass --force to replace, or another --json")
    if args.l2_bytes is not None and args.l2_bytes <= 0:
        raise ValueError(f"--l2-bytes must be positive, got {args.l2_bytes}")
    ops = bench.OPS if args.op == "both" else (args.op,)
    report = bench.run(args.device, shapes, args.dtype, ops=ops, chip=args.chip, artifact_dir=args.artifact_dir,
                       impls=args.impl, seed=args.seed, threads=args.threads, l2_bytes=args.l2_bytes)
    for path in bench.write_report(report, stem):
        print(f"wrote {path}")
    bad = [r for r in report["results"] if not r["correct"]]
    if bad:
        print(f"{len(bad)} result(s) failed the float64 check or raised; see the WRONG/FAILED lines", file=sys.stderr)
    return 1 if bad else 0


def cmd_info(args) -> int:
    from iree import runtime as ireert

    print(f"lnbwd-iree {metadata.version('lnbwd-iree')}")
    print(f"iree-base-runtime {metadata.version('iree-base-runtime')}")
    print(f"iree-base-compiler {compiler.compiler_version() or 'not installed (runtime-only: prebuilt artifacts only)'}")
    print(f"cache folder {cache.default_cache_dir()} (override with {cache.CACHE_ENV})")
    for driver in ireert.query_available_drivers():
        try:
            devices = ireert.get_driver(driver).query_available_devices()
            found = ", ".join(d.get("name", "?") if isinstance(d, dict) else str(d) for d in devices) or "no device"
        except (RuntimeError, ValueError) as e:
            found = f"unavailable ({str(e).splitlines()[0][:100]})"
        print(f"driver {driver}: {found}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lnbwd-iree", description=__doc__)
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="CK-style example: [verify init time], PASS/FAIL vs float64")
    run.add_argument("verify", nargs="?", type=int, default=1, choices=(0, 1))
    run.add_argument("init", nargs="?", type=int, default=2, choices=(0, 1, 2), help="1: integers, 0/2: decimals")
    run.add_argument("time", nargs="?", type=int, default=0, choices=(0, 1))
    run.add_argument("--m", type=int, default=1024)
    run.add_argument("--n", type=int, default=512)
    run.add_argument("--dtype", choices=DTYPES, default="f32")
    run.add_argument("--device", default="local-task")
    run.add_argument("--chip")
    run.add_argument("--backend", help="vmvx to run IREE's portable backend on local-task")
    run.add_argument("--artifact-dir")
    run.add_argument("--seed", type=int)
    run.set_defaults(fn=cmd_run)

    comp = sub.add_parser("compile", help="build the target matrix into a folder with manifest.json")
    comp.add_argument("--out", required=True)
    comp.add_argument("--target", action="append", help="e.g. rocm-gfx942 (repeatable; default: all)")
    comp.add_argument("--dtype", action="append", choices=DTYPES)
    comp.add_argument("--shape", action="append", help="also build static artifacts for MxN (repeatable)")
    comp.set_defaults(fn=cmd_compile)

    b = sub.add_parser(
        "bench",
        help="time backward/forward against torch eager, torch.compile, Liger (and NumPy on CPUs)",
        description="Checks each implementation against float64, then times it on device-resident inputs"
        " rotated over more than twice the L2 cache, with the copy bandwidth measured in the same run."
        " Writes JSON, a markdown table and (with matplotlib, the 'bench' extra) a PNG.",
        epilog=f"implementations: {', '.join(bench.IMPLS)}. iree_static: the artifact specialised to each shape;"
        " iree: the dynamic-shape one; liger (GPUs) needs the 'peers' extra; numpy runs on local devices."
        " Default: all that run beside the device. Exit status 1 when a result fails its float64 check.",
    )
    b.add_argument("--device", default="local-task")
    b.add_argument("--shape", action="append", required=True, help="MxN, e.g. 8192x4096 (repeatable)")
    b.add_argument("--dtype", action="append", choices=DTYPES, required=True)
    b.add_argument("--op", choices=("backward", "forward", "both"), default="backward", help="default: backward")
    b.add_argument("--chip")
    b.add_argument("--artifact-dir")
    b.add_argument("--impl", action="append", choices=bench.IMPLS, metavar="IMPL",
                   help="time only these (repeatable; names below)")
    b.add_argument("--json", help="output path (.md and .png beside it); default: a new"
                   " bench_<device>_<date-time>.json in the current folder. Existing files are never replaced"
                   " without --force")
    b.add_argument("--force", action="store_true", help="replace existing output files")
    b.add_argument("--l2-bytes", type=int, help="L2 size the input rotation must exceed twice (default: the"
                   f" GPU's, read through torch; {bench.L2_BYTES_DEFAULT >> 20} MiB without it)")
    b.add_argument("--seed", type=int)
    b.add_argument("--threads", type=int, help="local devices: run IREE and torch on this many cores")
    b.set_defaults(fn=cmd_bench)

    info = sub.add_parser("info", help="versions, drivers and devices, cache folder")
    info.set_defaults(fn=cmd_info)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.command is None:
        args = parser().parse_args(["run", *(argv or [])])
    try:
        return args.fn(args)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"lnbwd-iree: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
