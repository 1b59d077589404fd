"""One bench run: which implementations can run on the device, each checked
against float64 on every case, then the correct ones timed together."""

from __future__ import annotations

import datetime
import os
import statistics
from importlib import metadata
from typing import Callable

import numpy as np

from .. import targets
from ..reference import TOLERANCE, relative_error
from .cases import TIMED_OPS, Case, bytes_moved
from .inputs import cases
from .peers import DIRECT_IMPLS, IMPLS, IREE_IMPLS, TORCH_IMPLS, Candidate, DirectImpl, IreeImpl, LigerPeer, \
    TorchPeers, default_impls, numpy_candidates, torch_device
from .timing import TRIALS, WARMUP_S, device_figures, time_interleaved


def limit_cpu_threads(device: str, threads: int) -> None:
    """Runs the host implementations on ``threads`` cores: IREE's local-task
    worker count (a runtime flag, read when the device is created, so this must
    come before the first LayerNormKernels of the process) and torch's."""
    if not device.startswith("local"):
        raise ValueError(f"threads applies to the local-task and local-sync devices, not {device!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    from iree import runtime as ireert

    ireert.flags.parse_flags(f"--task_topology_max_group_count={threads}")
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(threads)


def torch_peers(device: str, wanted, notes: list) -> TorchPeers | None:
    """The torch peers beside IREE ``device``, or None with the reason in ``notes``."""
    if not wanted:
        return None
    where = torch_device(device)
    try:
        import torch
    except ImportError:
        notes.append(f"{', '.join(wanted)}: torch is not installed (pip install 'lnbwd-iree[torch]')")
        return None
    if where is None:
        notes.append(f"{', '.join(wanted)}: torch has no device that shares hardware with {device}")
        return None
    if where == "cuda" and not torch.cuda.is_available():
        notes.append(f"{', '.join(wanted)}: this torch ({torch.__version__}, CUDA build {torch.version.cuda},"
                     f" HIP build {torch.version.hip}) sees no GPU")
        return None
    # One compile thread: inductor's worker pool would compete for the CPU
    # with the host-bound small calls timed in the same process.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    return TorchPeers(torch, where)


def record(impl: str, case: Case, l2_bytes: int) -> dict:
    """The record of ``impl`` on ``case`` before it is checked and timed."""
    rotated = case.n_sets * case.set_bytes
    return {
        "impl": impl, "op": case.op.name, "m": case.m, "n": case.n, "dtype": case.dtype,
        "median_us": None, "gbps": None, "pct_of_copy": None, "build": None,
        "correct": False, "max_rel_error": None, "tolerance": TOLERANCE[case.dtype],
        "input_sets": case.n_sets, "rotated_bytes": rotated, "rotated_beyond_2x_l2": rotated > 2 * l2_bytes,
    }


def check(prepare, case: Case, row: dict) -> list[tuple[Candidate, float]]:
    """``prepare``'s candidates for ``case`` with their errors against float64,
    all of them if all are within the tolerance, else none (``row`` says why)."""
    checked = []
    try:
        candidates = prepare(case)
    except NotImplementedError as e:  # a peer without this kernel: not compared, not a failure
        row["unsupported"] = str(e)
        return []
    try:
        for candidate in candidates:
            outputs = candidate.check()
            if len(outputs) != len(case.want):
                raise ValueError(f"{candidate.build} returned {len(outputs)} outputs, the reference {len(case.want)}")
            error = max(relative_error(np.asarray(o, np.float64).reshape(w.shape), w)
                        for o, w in zip(outputs, case.want))
            row.update(build=candidate.build, max_rel_error=error)
            if not error <= TOLERANCE[case.dtype]:  # NaN (an unwritten output) fails too
                return []
            checked.append((candidate, error))
    except Exception as e:  # noqa: BLE001 - a peer failing on one shape is a result, not the end of the run
        row["error"] = f"{type(e).__name__}: {e}"
        return []
    return checked


def add_timing(row: dict, timed: list, moved: int, copy_gbps: float | None) -> None:
    """Fills ``row`` from its candidates' ``timed`` (candidate, error, samples): the fastest by median."""
    results = [(statistics.median(s), s, c, e) for c, e, s in timed]
    seconds, samples, candidate, error = min(results, key=lambda r: r[0])
    row.update(build=candidate.build, correct=True, max_rel_error=error, median_us=seconds * 1e6,
               trial_range_us=[min(samples) * 1e6, max(samples) * 1e6], gbps=moved / seconds / 1e9)
    if copy_gbps:
        row["pct_of_copy"] = 100 * row["gbps"] / copy_gbps
    if candidate.setup_s is not None:
        row["compile_s"] = candidate.setup_s
    if len(results) > 1:
        row["alternatives"] = [{"build": c.build, "median_us": t * 1e6, "compile_s": c.setup_s}
                               for t, _, c, _ in results]


class Bench:
    """Which implementations can run on ``device``, and the device's copy bandwidth and L2."""

    def __init__(self, device, impls, *, chip=None, artifact_dir=None, l2_bytes=None):
        unknown = sorted(set(impls) - set(IMPLS))
        if unknown:
            raise ValueError(f"unknown implementation(s) {unknown}; known: {', '.join(IMPLS)}")
        self.device = device
        self.notes: list[str] = []  # why a requested implementation is not in the results
        self.chip = targets.target_for(device, chip).chip
        found: dict[str, Callable[[Case], list[Candidate]]] = {}
        for impl in IREE_IMPLS:
            if impl in impls and impl not in DIRECT_IMPLS:
                iree = IreeImpl(device, static=impl == "iree_static", chip=chip, artifact_dir=artifact_dir)
                found[impl] = iree.prepare
        self.torch = torch_peers(device, [i for i in impls if i in TORCH_IMPLS + DIRECT_IMPLS], self.notes)
        if "iree_direct" in impls:
            found.update(self.direct(artifact_dir))
        if self.torch is not None:
            found.update({i: p for i, p in (("torch_eager", self.torch.eager), ("torch_compile", self.torch.compiled))
                          if i in impls})
            if "liger" in impls:
                found.update(self.liger())
        if "numpy" in impls:
            if device.startswith("local"):
                found["numpy"] = numpy_candidates
            else:
                self.notes.append(f"numpy: runs on the host CPU, not compared on {device}")
        if not found:
            raise RuntimeError(f"nothing to time on {device}: " + "; ".join(self.notes))
        self.impls = {i: found[i] for i in IMPLS if i in found}
        gpu_torch = self.torch.torch if self.torch is not None and self.torch.device == "cuda" else None
        figures = device_figures(device, gpu_torch, l2_bytes)
        if figures.note:
            self.notes.append(figures.note)
        self.copy_gbps, self.l2_bytes, self.name = figures.copy_gbps, figures.l2_bytes, figures.name

    def direct(self, artifact_dir) -> dict:
        if self.torch is None:  # torch_peers said why
            return {}
        if self.torch.device != "cuda" or self.device not in ("cuda", "hip"):
            self.notes.append("iree_direct: launches on torch's CUDA stream, so it runs with --device cuda"
                              " (or hip, with a ROCm build of torch) only")
            return {}
        return {"iree_direct": DirectImpl(self.torch, targets.target_for(self.device, self.chip), artifact_dir).prepare}

    def liger(self) -> dict:
        if self.torch.device != "cuda":
            self.notes.append("liger: its Triton kernels run on GPUs only")
            return {}
        try:
            return {"liger": LigerPeer(self.torch).prepare}
        except ImportError as e:
            self.notes.append(f"liger: not importable ({e}); pip install 'lnbwd-iree[peers]'")
            return {}

    def cases(self, rng, dtype, m, n, ops):
        """The cases of one shape and dtype, on one draw of inputs."""
        return cases(rng, dtype, m, n, [TIMED_OPS[op] for op in ops], self.l2_bytes)

    def measure(self, case: Case) -> list[dict]:
        """One record per implementation: each checked on the case, then the
        correct ones timed together, taking turns trial by trial
        (``time_interleaved``); an implementation with several candidates
        reports its fastest."""
        rows = {impl: record(impl, case, self.l2_bytes) for impl in self.impls}
        checked = [(impl, candidate, error) for impl, prepare in self.impls.items()
                   for candidate, error in check(prepare, case, rows[impl])]
        samples = time_interleaved([(c.call, c.synchronize) for _, c, _ in checked], case.n_sets) if checked else []
        moved = bytes_moved(case.m, case.n, case.dtype, case.op.name)
        for impl, row in rows.items():
            timed = [(c, e, s) for (i, c, e), s in zip(checked, samples) if i == impl]
            if timed:
                add_timing(row, timed, moved, self.copy_gbps)
        for row in rows.values():
            if "unsupported" in row and row["unsupported"] not in self.notes:
                self.notes.append(row["unsupported"])
        return [row for row in rows.values() if "unsupported" not in row]


def log_row(log, row: dict) -> None:
    head = f"{row['op']:8s} {row['impl']:13s} {row['dtype']:4s} {row['m']}x{row['n']}"
    if row.get("error"):
        log(f"{head} FAILED: {row['error']}")
    elif not row["correct"]:
        log(f"{head} WRONG: relative error {row['max_rel_error']:.1e} > {row['tolerance']:.1e} ({row['build']});"
            " not timed")
    else:
        pct = f" {row['pct_of_copy']:5.1f}% of copy" if row["pct_of_copy"] is not None else ""
        log(f"{head} {row['median_us']:10.1f} us {row['gbps']:8.1f} GB/s{pct}  err {row['max_rel_error']:.1e}"
            f"  [{row['input_sets']} sets]")


def versions() -> dict:
    found = {}
    for package in ("iree-base-runtime", "torch", "liger-kernel"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def run(device: str, shapes, dtypes, *, ops=("backward",), chip=None, artifact_dir=None, impls=None, seed=None,
        threads=None, l2_bytes=None, log=print) -> dict:
    """Checks and times ``impls`` (default: all that run beside the device) for
    each op (``TIMED_OPS`` names), dtype and shape; returns the report."""
    if threads is not None:
        limit_cpu_threads(device, threads)
    bench = Bench(device, impls or default_impls(device), chip=chip, artifact_dir=artifact_dir, l2_bytes=l2_bytes)
    for note in bench.notes:
        log(f"skipped {note}")
    copy = f"{bench.copy_gbps:.1f} GB/s" if bench.copy_gbps else "not measured"
    log(f"device {bench.name}: copy {copy}, L2 {bench.l2_bytes / 2**20:.1f} MiB; timing {', '.join(bench.impls)}")
    rng = np.random.default_rng(seed)
    results = []
    for dtype in dtypes:
        for m, n in shapes:
            for case in bench.cases(rng, dtype, m, n, ops):
                for row in bench.measure(case):
                    log_row(log, row)
                    results.append(row)
    found = versions()
    return {
        "device": bench.name,
        "driver": device,
        "chip": bench.chip,
        "iree_version": found["iree-base-runtime"],
        "torch_version": found["torch"],
        "liger_version": found["liger-kernel"],
        "date": datetime.date.today().isoformat(),
        "copy_gbps": bench.copy_gbps,
        "l2_bytes": bench.l2_bytes,
        # None: each library's default (IREE and torch both use one thread per physical core).
        "threads": threads,
        "timing": f"checked against float64 first; {WARMUP_S} s warm-up each; back-to-back calls, one synchronisation"
                  f" per trial, implementations taking turns trial by trial, median over {TRIALS} trials; each"
                  " implementation rotates its own copies of the row inputs, > 2x L2 together",
        "notes": bench.notes,
        "results": results,
    }
