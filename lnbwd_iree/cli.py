"""lnbwd-iree (also python -m lnbwd_iree): run, compile, bench, cache, info.

With no command, or with options only, it runs `run`: lnbwd-iree --m 64 is lnbwd-iree run --m 64."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import logging
import os
import re
import signal
import statistics
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from . import bench, cache, compiler, targets
from .bench import inputs
from .kernels import DTYPES, OPS, Specialization
from .reference import TOLERANCE, relative_error
from .runtime import LayerNormKernels
from .specialization import Role

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


def cmd_run(args) -> int:
    """CK example 53's driver: verify init time. Runs the op's forward for its
    statistics, then its backward from them, checked against its float64 reference."""
    forward, backward = (bench.TIMED_OPS[bench.NORM_OPS[args.op][direction]] for direction in ("forward", "backward"))
    kernels = LayerNormKernels(args.device, chip=args.chip, backend=args.backend, artifact_dir=args.artifact_dir)
    rng = np.random.default_rng(args.seed)
    # init 1: CK's integer inputs.
    drawn = inputs.draw(rng, args.m, args.n, args.dtype, integers=args.init == 1)
    outputs = backward.entry.outputs
    print(f"{args.op}2d_bwd M={args.m} N={args.n} dtype={args.dtype} device={args.device} target={kernels.target.name}")
    if args.m == 0:
        # torch's convention, which the kernels follow.
        empty, zero = ([a.name for a in outputs if a.role is role] for role in (Role.ROWS, Role.COLUMNS))
        print(f"  M=0: an empty batch; {', '.join(empty)} empty and {', '.join(zero)} zero")
    results = kernels.call(forward.kernel, forward.entry.name, inputs.arguments(forward, drawn), **forward.scalars)
    stats = {a.name: r for a, r in zip(forward.entry.outputs, results) if a.name in backward.statistics}
    args_in = inputs.arguments(backward, {**drawn, **stats})
    out = None
    if args.m:
        # Results land in NaN-filled buffers, so an output the kernel leaves unwritten fails the check.
        out = tuple(kernels.to_device(np.full(shape, np.nan, dtype))
                    for shape, dtype in zip(backward.output_shapes(args.m, args.n), backward.output_dtypes(args.dtype)))
    grads = kernels.call(backward.kernel, backward.entry.name, args_in, out=out, **backward.scalars)
    if args.m:
        served = (kernels.specialization(op.kernel, args.dtype, (args.m, args.n)) for op in (forward, backward))
        print(f"  artifacts: {', '.join(f'{spec.kernel.name} {spec.kind} ({spec.signature})' for spec in served)}")
    status = 0
    if args.verify:
        host_stats = {name: a.to_host() for name, a in stats.items()}
        want = backward.reference(*inputs.arguments(backward, {**drawn, **host_stats}), **backward.scalars)
        for arg, got, ref in zip(outputs, grads, want):
            error = relative_error(np.asarray(got.to_host()), ref)
            ok = error < TOLERANCE[args.dtype]
            status |= not ok
            print(f"  {arg.name:7s} relative error {error:.2e} (bound {TOLERANCE[args.dtype]:.1e})"
                  f" {'PASS' if ok else 'FAIL'}")
        print("PASS" if status == 0 else "FAIL")
    if args.time and args.m == 0:
        print("  time: nothing to time for M=0")
    elif args.time:
        rotated = [a.name for a in backward.entry.inputs[:backward.rotated]]
        draw_rows = lambda: tuple(inputs.draw(rng, args.m, args.n, args.dtype, integers=args.init == 1,  # noqa: E731
                                              names=rotated).values())
        time_backward(kernels, backward, args, args_in[:backward.rotated], draw_rows, args_in[backward.rotated:], out)
    return status


def time_backward(kernels, op: bench.TimedOp, args, rows, draw_rows, fixed, out) -> None:
    """Prints the backward's median time per call and its spread, timed as
    `bench` times it: inputs on the device, outputs preallocated, row inputs
    rotated over twice a 64 MiB cache, back-to-back calls per trial."""
    n_sets = bench.input_sets(sum(a.nbytes for a in rows), bench.L2_BYTES_DEFAULT, max_sets=64)
    sets = [tuple(kernels.to_device(a) for a in (rows if i == 0 else draw_rows())) for i in range(n_sets)]
    fixed = tuple(kernels.to_device(a) for a in fixed)
    call = functools.partial(kernels.call, op.kernel, op.entry.name, **op.scalars)
    # One bench.time_calls trial per sample, so that the spread can be shown.
    samples = sorted(
        bench.time_calls(lambda i: call(sets[i] + fixed, out=out, wait=False), kernels.synchronize, n_sets, trials=1)
        for _ in range(TIMING_TRIALS)
    )
    median = statistics.median(samples)
    moved = bench.bytes_moved(args.m, args.n, args.dtype, op.name)
    print(
        f"  backward ({', '.join(a.name for a in op.entry.outputs)} from the saved statistics): median"
        f" {median * 1e6:.1f} us per call over {TIMING_TRIALS} trials (min {samples[0] * 1e6:.1f}, max"
        f" {samples[-1] * 1e6:.1f} us); {moved / median / 1e9:.1f} GB/s effective ({moved} bytes)"
    )
    print(f"  timed: back-to-back calls into preallocated outputs, {n_sets} input set(s) rotated, inputs on the device")


def cmd_compile(args) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; give a folder (created if missing)")
    chosen = [t for t in targets.TARGET_MATRIX if not args.target or t.name in args.target]
    # dict.fromkeys: a shape given twice is built once, in the order given.
    shapes = [(None, None)] + list(dict.fromkeys(bench.parse_shape(s) for s in args.shape or []))
    # A line per artifact (ArtifactStore.build logs one per compile at INFO)
    # only with --verbose: the whole matrix is about a hundred.
    detail = print if args.verbose else lambda line: None
    built = up_to_date = skipped = 0
    with _lnbwd_log_level(logging.INFO if args.verbose else logging.WARNING):
        for target in chosen:
            for dtype in dict.fromkeys(args.dtype or DTYPES):
                if (target.backend, dtype) in targets.UNSUPPORTED_DTYPES:
                    detail(f"skip {target.name} {dtype}: {targets.UNSUPPORTED_DTYPES[target.backend, dtype]}")
                    skipped += 1
                    continue
                for kernel in (k for name in args.op or OPS for k in OPS[name].KERNELS):
                    # Shapes that share N share a per-N kernel's artifact.
                    for spec in dict.fromkeys(Specialization.serving(kernel, dtype, m, n) for m, n in shapes):
                        path = out / cache.artifact_name(spec, target)
                        try:
                            cache.check_artifact(path, spec, target)
                            detail(f"up to date: {path.name}")
                            up_to_date += 1
                        except cache.RejectedArtifact:
                            cache.ArtifactStore.build(spec, target, out)
                            built += 1
    manifest = cache.write_manifest(out)
    listed = len(json.loads(manifest.read_text())["artifacts"])
    unsupported = f", {skipped} target/dtype pairs skipped (unsupported)" if skipped else ""
    print(f"built {built}, {up_to_date} already up to date{unsupported} in {out}; {manifest.name} lists {listed}"
          f" artifacts{'' if args.verbose else ' (-v: one line per artifact)'}")
    unusable = [f"{a.path.name} ({a.unusable()})" for a in cache.stored_artifacts(out) if a.unusable()]
    if unusable:
        print(f"not listed, unusable: {'; '.join(unusable)} (`lnbwd-iree cache prune --dir {out}` with any limit"
              " removes them)")
    return 0


@contextlib.contextmanager
def _lnbwd_log_level(level: int):
    """The lnbwd_iree logger at ``level`` for the block (compiler warnings stay above WARNING's cut)."""
    logger = logging.getLogger("lnbwd_iree")
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def cmd_bench(args) -> int:
    shapes = [bench.parse_shape(s) for s in args.shape]
    if args.json:
        stem = Path(args.json).with_suffix("")
    else:
        stem = Path.cwd() / f"bench_{args.device}_{datetime.datetime.now():%Y%m%d-%H%M%S}"
    existing = [str(p) for p in bench.report_paths(stem) if p.exists()]
    if existing and not args.force:
        raise ValueError(f"{', '.join(existing)} already exist(s); pass --force to replace, or another --json")
    ops = tuple(bench.NORM_OPS[args.norm][op] for op in (("backward", "forward") if args.op == "both" else (args.op,)))
    report = bench.run(args.device, shapes, args.dtype or ["f32"], ops=ops, chip=args.chip, artifact_dir=args.artifact_dir,
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
        # A flag (store_true) has no default worth showing.
        return action.help if action.default is None or action.nargs == 0 else super()._get_help_string(action)


CHIP_HELP = "GPU architecture for cuda/hip, e.g. sm_89 or gfx90a (default: {} / {})".format(
    targets.DRIVERS["cuda"].default_chip, targets.DRIVERS["hip"].default_chip
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lnbwd-iree", description=__doc__, epilog=COLUMNS, formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=versions())
    sub = p.add_subparsers(dest="command", metavar="{run,compile,bench,cache,info}")
    add = lambda name, **kw: sub.add_parser(name, formatter_class=_HelpFormatter, **kw)  # noqa: E731
    devices = sorted(targets.DRIVERS)

    run = add("run", help="CK-style example: [verify init time], PASS/FAIL vs float64", epilog=COLUMNS,
              description="Runs the forward, then the backward, on random inputs; compares with a float64 reference.")
    run.add_argument("verify", nargs="?", type=int, default=1, choices=(0, 1), metavar="verify",
                     help="1: check against the float64 reference and print PASS/FAIL; 0: skip")
    run.add_argument("init", nargs="?", type=int, default=2, choices=(0, 1, 2), metavar="init",
                     help="1: integer inputs in [-5, 5]; 0 or 2: normal decimals")
    run.add_argument("time", nargs="?", type=int, default=0, choices=(0, 1), metavar="time",
                     help="1: also time the backward (median and spread over trials)")
    run.add_argument("--op", choices=tuple(bench.NORM_OPS), default="layernorm", help="the normalisation to run")
    run.add_argument("--m", type=non_negative_int, default=1024, help="rows (0: an empty batch)")
    run.add_argument("--n", type=positive_int, default=512, help="row length, the normalised dim")
    run.add_argument("--dtype", choices=DTYPES, default="f32", help="storage dtype (f64 on CPUs only)")
    run.add_argument("--device", choices=devices, default="local-task", help="IREE driver")
    run.add_argument("--chip", help=CHIP_HELP)
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
    comp.add_argument("-v", "--verbose", action="store_true",
                      help="a line per artifact (built, with its time; up to date; skipped), not only the counts")
    comp.set_defaults(fn=cmd_compile)

    b = add(
        "bench",
        help="time backward/forward against torch eager, torch.compile, Liger (and NumPy on CPUs)",
        description="Checks each implementation against float64, then times it on device-resident inputs\n"
                    "rotated over more than twice the L2 cache, with the copy bandwidth measured in the same\n"
                    "run. Writes JSON, a markdown table and (with matplotlib, the 'bench' extra) a PNG.",
        epilog=f"implementations: {', '.join(bench.IMPLS)}.\n"
               "  iree_static: the artifact specialised to each shape; iree_direct: the same kernels launched\n"
               "  on torch's CUDA stream without IREE's runtime (what lnbwd_iree.torch does on cuda:N);\n"
               "  iree: the dynamic-shape artifact;\n"
               "  liger (GPUs) needs the 'peers' extra; numpy runs on local devices.\n"
               "  Default: all that run beside the device.\n"
               "Exit status 1 when a result fails its float64 check.",
    )
    b.add_argument("--device", choices=devices, default="local-task", help="IREE driver")
    b.add_argument("--shape", action="append", required=True, help="MxN, e.g. 8192x4096 (repeatable)")
    # No default= with append: argparse would add the given dtypes to it.
    b.add_argument("--dtype", action="append", choices=DTYPES,
                   help="storage dtype (repeatable; default: f32, as for `run`)")
    b.add_argument("--norm", choices=tuple(bench.NORM_OPS), default="layernorm",
                   help="the normalisation to time (`run` and `compile` call it --op)")
    b.add_argument("--op", choices=("backward", "forward", "both"), default="backward",
                   help="which pass of --norm to time")
    b.add_argument("--chip", help=CHIP_HELP)
    b.add_argument("--artifact-dir", help="folder made by `lnbwd-iree compile --out`, searched before the cache")
    b.add_argument("--impl", action="append", choices=bench.IMPLS, metavar="IMPL",
                   help="time only these (repeatable; names below; default: all that run beside the device)")
    b.add_argument("--json", help="output path (.md and .png beside it); default: a new"
                   " bench_<device>_<date-time>.json in the current folder. Existing files are never replaced"
                   " without --force")
    b.add_argument("--force", action="store_true", help="replace existing output files")
    b.add_argument("--l2-bytes", type=positive_int, help="L2 size the input rotation must exceed twice (default: the"
                   f" GPU's, read through torch; {bench.L2_BYTES_DEFAULT >> 20} MiB without it)")
    b.add_argument("--seed", type=int, help="random seed (default: fresh inputs each run)")
    b.add_argument("--threads", type=positive_int,
                   help="local devices: run IREE and torch on this many cores (default: each library's own)")
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
        status = args.fn(args)
        sys.stdout.flush()  # so that a closed pipe shows here, not at interpreter exit
        return status
    except KeyboardInterrupt:
        print("lnbwd-iree: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader (e.g. `| head`) has gone: stop quietly, as tools killed by
        # SIGPIPE do; stdout goes to devnull so that the exit flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except MemoryError as e:
        print(f"lnbwd-iree: error: out of memory ({e or 'no details'})", file=sys.stderr)
        return 2
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        print(f"lnbwd-iree: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
