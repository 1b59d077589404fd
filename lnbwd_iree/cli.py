"""lnbwd-iree (also python -m lnbwd_iree): run, compile, bench, cache, info.

With no command, or with options only, it runs `run`: lnbwd-iree --m 64 is lnbwd-iree run --m 64."""

from __future__ import annotations

import argparse
import datetime
import re
import statistics
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

from . import bench, cache, compiler, targets
from .kernels import DTYPES, OPS, Specialization
from .reference import TOLERANCE, backward_reference, relative_error, rmsnorm_backward_reference
from .runtime import STORAGE_DTYPES, LayerNormKernels

TIMING_TRIALS = 15
COLUMNS = """output columns:
  relative error  ||got - want|| / ||want|| against a float64 NumPy reference on the same inputs
  effective GB/s  bytes the backward must move (dY and X read, dX written, gamma, mean, rstd
                  read, dgamma and dbeta written) / median time per call
  % of copy       (bench) effective GB/s as a share of a device copy's bandwidth measured in
                  the same run; docs/performance.md explains the benchmark tables"""


def versions() -> str:
    return (
        f"lnbwd-iree {metadata.version('lnbwd-iree')} (iree-base-runtime {metadata.version('iree-base-runtime')}, "
        f"iree-base-compiler {compiler.compiler_version() or 'not installed'})"
    )


@dataclass(frozen=True)
class RunOp:
    """What `run --op` runs: the forward for its saved statistics, then the
    backward from them, checked against its float64 reference."""

    title: str
    statistics: Callable  # (kernels, x, gamma, beta) -> the forward's statistics
    backward: Callable  # (kernels, dy, x, gamma, *statistics, **options) -> gradients
    reference: Callable  # (dy, x, gamma, *statistics) -> float64 gradients
    gradients: tuple[str, ...]
    bench_op: str  # the backward's name in bench.OPS


RUN_OPS = {
    "layernorm": RunOp("layernorm2d_bwd", lambda k, x, gamma, beta: k.forward(x, gamma, beta)[1:],
                       lambda k, *a, **kw: k.backward(*a, **kw), backward_reference, ("dx", "dgamma", "dbeta"),
                       "backward"),
    "rmsnorm": RunOp("rmsnorm2d_bwd", lambda k, x, gamma, beta: k.rmsnorm_forward(x, gamma, eps=bench.EPS)[1:],
                     lambda k, *a, **kw: k.rmsnorm_backward(*a, **kw), rmsnorm_backward_reference, ("dx", "dgamma"),
                     "rmsnorm_backward"),
}


def cmd_run(args) -> int:
    """CK example 53's driver: verify init time."""
    op = RUN_OPS[args.op]
    kernels = LayerNormKernels(args.device, chip=args.chip, backend=args.backend, artifact_dir=args.artifact_dir)
    rng = np.random.default_rng(args.seed)
    storage = STORAGE_DTYPES[args.dtype]
    if args.init == 1:  # CK's integer init
        draw = lambda shape: rng.integers(-5, 6, shape).astype(np.float32)  # noqa: E731
    else:
        draw = lambda shape: rng.standard_normal(shape, np.float32)  # noqa: E731
    draw_rows = lambda: (draw((args.m, args.n)).astype(storage), (draw((args.m, args.n)) * 2 + 0.5).astype(storage))  # noqa: E731
    dy, x = draw_rows()
    gamma = (1 + 0.5 * draw(args.n)).astype(storage)
    beta = draw(args.n).astype(storage)
    print(f"{op.title} M={args.m} N={args.n} dtype={args.dtype} device={args.device} target={kernels.target.name}")
    if args.m == 0:
        # torch's convention, which the kernels follow.
        print(f"  M=0: an empty batch; dX is empty and {', '.join(op.gradients[1:])} are zero")
    stats = op.statistics(kernels, x, gamma, beta)
    out = None
    if args.m:
        # Results land in NaN-filled buffers, so an output the kernel leaves unwritten fails the check.
        shapes = [(args.m, args.n)] + [args.n] * (len(op.gradients) - 1)
        out = tuple(kernels.to_device(np.full(shape, np.nan, storage)) for shape in shapes)
    grads = op.backward(kernels, dy, x, gamma, *stats, out=out)
    status = 0
    if args.verify:
        want = op.reference(dy, x, gamma, *(s.to_host() for s in stats))
        for name, got, ref in zip(op.gradients, grads, want):
            error = relative_error(np.asarray(got.to_host()), ref)
            ok = error < TOLERANCE[args.dtype]
            status |= not ok
            print(f"  {name:7s} relative error {error:.2e} (bound {TOLERANCE[args.dtype]:.1e}) {'PASS' if ok else 'FAIL'}")
        print("PASS" if status == 0 else "FAIL")
    if args.time and args.m == 0:
        print("  time: nothing to time for M=0")
    elif args.time:
        time_backward(kernels, op, args, (dy, x), draw_rows, (gamma, *stats), out)
    return status


def time_backward(kernels, op: RunOp, args, rows, draw_rows, fixed, out) -> None:
    """Prints the backward's median time per call and its spread, timed as
    `bench` times it: inputs on the device, outputs preallocated, row inputs
    rotated over twice a 64 MiB cache, back-to-back calls per trial."""
    set_bytes = sum(a.nbytes for a in rows)
    n_sets = bench.input_sets(set_bytes, bench.L2_BYTES_DEFAULT, max_sets=64)
    sets = [[kernels.to_device(a) for a in (rows if i == 0 else draw_rows())] for i in range(n_sets)]
    fixed = [kernels.to_device(a) for a in fixed]
    # One bench.time_calls trial per sample, so that the spread can be shown.
    samples = sorted(
        bench.time_calls(lambda i: op.backward(kernels, *sets[i], *fixed, out=out, wait=False), kernels.synchronize,
                         n_sets, trials=1)
        for _ in range(TIMING_TRIALS)
    )
    median = statistics.median(samples)
    moved = bench.bytes_moved(args.m, args.n, args.dtype, op.bench_op)
    print(
        f"  backward ({', '.join(op.gradients)} from the saved statistics): median {median * 1e6:.1f} us per call over "
        f"{TIMING_TRIALS} trials (min {samples[0] * 1e6:.1f}, max {samples[-1] * 1e6:.1f} us); "
        f"{moved / median / 1e9:.1f} GB/s effective ({moved} bytes)"
    )
    print(f"  timed: back-to-back calls into preallocated outputs, {n_sets} input set(s) rotated, inputs on the device")


def cmd_compile(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder (created if missing)")
    chosen = [t for t in targets.TARGET_MATRIX if not args.target or t.name in args.target]
    # dict.fromkeys: a shape given twice is built once, in the order given.
    shapes = [(None, None)] + list(dict.fromkeys(bench.parse_shape(s) for s in args.shape or []))
    built = up_to_date = 0
    for target in chosen:
        for dtype in dict.fromkeys(args.dtype or DTYPES):
            if (target.backend, dtype) in targets.UNSUPPORTED_DTYPES:
                print(f"skip {target.name} {dtype}: {targets.UNSUPPORTED_DTYPES[target.backend, dtype]}")
                continue
            for kernel in (k for name in args.op or OPS for k in OPS[name].KERNELS):
                # Shapes that share N share a per-N kernel's artifact.
                for spec in dict.fromkeys(Specialization.serving(kernel, dtype, m, n) for m, n in shapes):
                    try:
                        cache.check_artifact(out / cache.artifact_name(spec, target), spec, target)
                        up_to_date += 1
                    except cache.RejectedArtifact:
                        cache.ArtifactStore.build(spec, target, out)
                        built += 1
    manifest = cache.write_manifest(out)
    listed = len(cache.stored_artifacts(out))
    print(f"built {built}, {up_to_date} already up to date; {manifest} lists {listed} artifacts")
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
    ops = tuple(bench.NORM_OPS[args.norm][op] for op in (("backward", "forward") if args.op == "both" else (args.op,)))
    report = bench.run(args.device, shapes, args.dtype, ops=ops, chip=args.chip, artifact_dir=args.artifact_dir,
                       impls=args.impl, seed=args.seed, threads=args.threads, l2_bytes=args.l2_bytes)
    for path in bench.write_report(report, stem):
        print(f"wrote {path}")
    bad = [r for r in report["results"] if not r["correct"]]
    if bad:
        print(f"{len(bad)} result(s) failed the float64 check or raised; see the WRONG/FAILED lines", file=sys.stderr)
    return 1 if bad else 0


def driver_problem(error: Exception) -> str:
    """The first line of a driver's start-up error, whole, without IREE's source location
    (the lines after it list each library path tried)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return re.sub(r"^(Error creating driver: )?\S+\.c:\d+: ", "", first).rstrip(": ")


def cmd_info(args) -> int:
    from iree import runtime as ireert

    print(f"lnbwd-iree {metadata.version('lnbwd-iree')}")
    print(f"iree-base-runtime {metadata.version('iree-base-runtime')}")
    print(f"iree-base-compiler {compiler.compiler_version() or 'not installed (runtime-only: prebuilt artifacts only)'}")
    stored = cache.stored_artifacts(cache.default_cache_dir())
    print(f"cache folder {cache.default_cache_dir()}: {len(stored)} artifacts, {human_bytes(sum(a.size for a in stored))}"
          f" (override with {cache.CACHE_ENV}; see `lnbwd-iree cache list`)")
    for driver in ireert.query_available_drivers():
        try:
            devices = ireert.get_driver(driver).query_available_devices()
            found = ", ".join(d.get("name", "?") if isinstance(d, dict) else str(d) for d in devices) or "no device"
        except (RuntimeError, ValueError) as e:
            found = f"unavailable: {driver_problem(e)}"
        print(f"driver {driver}: {found}")
    return 0


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(text: str) -> int:
    """Bytes from "500M", "2G", "64k" or a plain number (binary units)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?", text.strip().lower())
    if not found:
        raise argparse.ArgumentTypeError(f"size must look like 500M, 2G or 1048576, got {text!r}")
    return int(float(found[1]) * _SIZE_UNITS[found[2]])


def parse_age(text: str) -> float:
    """Seconds from "30d", "12h", "45m" or "90s"."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip().lower())
    if not found:
        raise argparse.ArgumentTypeError(f"age must look like 30d, 12h, 45m or 90s, got {text!r}")
    return float(found[1]) * _AGE_UNITS[found[2]]


def cmd_cache(args) -> int:
    folder = Path(args.dir) if args.dir else cache.default_cache_dir()
    if args.action == "list":
        artifacts = cache.stored_artifacts(folder)
        print(f"{folder}: {len(artifacts)} artifacts, {human_bytes(sum(a.size for a in artifacts))}")
        for a in artifacts:
            used = datetime.datetime.fromtimestamp(a.last_used).strftime("%Y-%m-%d %H:%M")
            print(f"  {human_bytes(a.size):>10}  used {used}  {a.purpose()}  {a.path.name}")
        return 0
    if args.action == "clear":
        removed = cache.clear(folder)
    else:
        if args.max_size is None and args.older_than is None:
            raise ValueError("cache prune needs --max-size and/or --older-than")
        removed = cache.prune(folder, max_bytes=args.max_size, older_than_s=args.older_than)
    left = cache.stored_artifacts(folder)
    print(f"removed {len(removed)} artifacts ({human_bytes(sum(a.size for a in removed))}) from {folder}; "
          f"{len(left)} left ({human_bytes(sum(a.size for a in left))})")
    return 0


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (where it has one), and the description and epilog as written."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lnbwd-iree", description=__doc__, epilog=COLUMNS, formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=versions())
    sub = p.add_subparsers(dest="command", metavar="{run,compile,bench,cache,info}")
    add = lambda name, **kw: sub.add_parser(name, formatter_class=_HelpFormatter, **kw)  # noqa: E731
    devices = sorted(targets.DRIVER_BACKEND)

    run = add("run", help="CK-style example: [verify init time], PASS/FAIL vs float64", epilog=COLUMNS,
              description="Runs the forward, then the backward, on random inputs; compares with a float64 reference.")
    run.add_argument("verify", nargs="?", type=int, default=1, choices=(0, 1), metavar="verify",
                     help="1: check against the float64 reference and print PASS/FAIL; 0: skip")
    run.add_argument("init", nargs="?", type=int, default=2, choices=(0, 1, 2), metavar="init",
                     help="1: integer inputs in [-5, 5]; 0 or 2: normal decimals")
    run.add_argument("time", nargs="?", type=int, default=0, choices=(0, 1), metavar="time",
                     help="1: also time the backward (median and spread over trials)")
    run.add_argument("--op", choices=tuple(RUN_OPS), default="layernorm", help="the normalisation to run")
    run.add_argument("--m", type=non_negative_int, default=1024, help="rows (0: an empty batch)")
    run.add_argument("--n", type=positive_int, default=512, help="row length, the normalised dim")
    run.add_argument("--dtype", choices=DTYPES, default="f32", help="storage dtype (f64 on CPUs only)")
    run.add_argument("--device", choices=devices, default="local-task", help="IREE driver")
    run.add_argument("--chip", help="GPU architecture for cuda/hip, e.g. sm_89 or gfx90a (default: sm_80 / gfx942)")
    run.add_argument("--backend", choices=("llvm-cpu", "vmvx"),
                     help="local drivers: vmvx runs IREE's portable VM backend (default: llvm-cpu)")
    run.add_argument("--artifact-dir", help="folder made by `lnbwd-iree compile --out`, searched before the cache")
    run.add_argument("--seed", type=int, help="random seed (default: fresh inputs each run)")
    run.set_defaults(fn=cmd_run)

    comp = add("compile", help="build the target matrix into a folder with manifest.json",
               description="Builds artifacts into --out (skipping those already up to date there) and\n"
                           "rewrites manifest.json to list every artifact in the folder.")
    comp.add_argument("--out", required=True, help="folder to write (created if missing)")
    comp.add_argument("--target", action="append", choices=[t.name for t in targets.TARGET_MATRIX],
                      help="repeatable (default: all)")
    comp.add_argument("--dtype", action="append", choices=DTYPES, help="repeatable (default: all)")
    comp.add_argument("--op", action="append", choices=tuple(OPS), help="the ops to build, repeatable (default: all)")
    comp.add_argument("--shape", action="append", help="also build static artifacts for MxN, e.g. 8192x4096 (repeatable)")
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
    b.add_argument("--norm", choices=tuple(bench.NORM_OPS), default="layernorm",
                   help="the normalisation to time (`run` and `compile` call it --op)")
    b.add_argument("--op", choices=("backward", "forward", "both"), default="backward",
                   help="which pass of --norm to time")
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

    c = add("cache", help="list, clear or prune compiled artifacts",
            description="Artifacts are compiled on first use into the cache folder, one per kernel,\n"
                        "dtype, shape and target. A load from the cache marks an artifact used.")
    c.add_argument("action", choices=("list", "clear", "prune"),
                   help="list: sizes and what each artifact is for; clear: remove all; "
                        "prune: remove by --older-than / --max-size")
    c.add_argument("--dir", help=f"folder (default: {cache.default_cache_dir()}, or ${cache.CACHE_ENV})")
    c.add_argument("--max-size", type=parse_size, help="prune: then remove the least recently used down to this, e.g. 500M")
    c.add_argument("--older-than", type=parse_age, help="prune: remove artifacts unused for this long, e.g. 30d or 12h")
    c.set_defaults(fn=cmd_cache)

    info = add("info", help="versions, drivers and devices, cache folder")
    info.set_defaults(fn=cmd_info)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command, or run's options or positionals first: `run` (CK's example takes them bare).
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")) or argv[0].isdigit():
        argv = ["run", *argv]
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except MemoryError as e:
        print(f"lnbwd-iree: error: out of memory ({e or 'no details'})", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"lnbwd-iree: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
