"""Times the IREE backward against other implementations on the same inputs.

Method (the same for every implementation): inputs are on the device before
timing; after warm-up, a trial queues ``calls`` back-to-back calls and
synchronises once; time per call = trial wall time / calls. The reported time
is the median over trials. Inputs rotate among enough copies that together
exceed twice the L2 cache, so no call finds its inputs in cache from the last.
GB/s counts the bytes that must move: dY and X read, dX written, gamma, mean,
rstd read, dgamma and dbeta written."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from . import runtime
from .kernels import ITEMSIZE
from .reference import backward_reference, relative_error

L2_BYTES_DEFAULT = 64 << 20


def bytes_moved(m: int, n: int, dtype: str) -> int:
    s = ITEMSIZE[dtype]
    return 3 * m * n * s + 3 * n * s + 2 * m * 4


def parse_shape(text: str) -> tuple[int, int]:
    try:
        m, n = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"shape must look like 8192x4096, got {text!r}") from e
    if m <= 0 or n <= 0:
        raise ValueError(f"shape dims must be positive, got {text!r}")
    return m, n


def time_calls(call, synchronize, n_sets: int, min_trial_s=0.02, trials=15) -> float:
    """Median seconds per call, see the module docstring."""
    for i in range(3):
        call(i % n_sets)
    synchronize()
    start = time.perf_counter()
    call(0)
    synchronize()
    once = max(time.perf_counter() - start, 1e-6)
    calls = max(n_sets, min(2000, math.ceil(min_trial_s / once)))
    samples = []
    for _ in range(trials):
        start = time.perf_counter()
        for i in range(calls):
            call(i % n_sets)
        synchronize()
        samples.append((time.perf_counter() - start) / calls)
    return statistics.median(samples)


def make_inputs(rng, m, n, dtype):
    storage = runtime.STORAGE_DTYPES[dtype]
    x = (rng.standard_normal((m, n), np.float32) * 2 + 0.5).astype(storage)
    dy = rng.standard_normal((m, n), np.float32).astype(storage)
    gamma = (1 + 0.5 * rng.standard_normal(n, np.float32)).astype(storage)
    xf = x.astype(np.float32)
    mean = xf.mean(axis=1)
    rstd = (1 / np.sqrt(((xf - mean[:, None]) ** 2).mean(axis=1) + 1e-5)).astype(np.float32)
    return dy, x, gamma, mean.astype(np.float32), rstd


class TorchImpls:
    """torch eager's native_layer_norm_backward and torch.compile of the same math."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.device = "cuda" if device in ("cuda", "hip") else "cpu"

        def math_backward(dy, x, gamma, mean, rstd):
            dyf, xf, gf = dy.float(), x.float(), gamma.float()
            x_hat = (xf - mean) * rstd
            g = dyf * gf
            dx = rstd * (g - g.mean(-1, keepdim=True) - x_hat * (g * x_hat).mean(-1, keepdim=True))
            return dx.to(dy.dtype), (dyf * x_hat).sum(0).to(dy.dtype), dyf.sum(0).to(dy.dtype)

        self.compiled = torch.compile(math_backward)

    def to(self, array):
        array = np.ascontiguousarray(array)
        if array.dtype == runtime.STORAGE_DTYPES["bf16"]:
            # NumPy has no bfloat16 that torch reads: pass the bits.
            return self.torch.from_numpy(array.view(np.uint16)).view(self.torch.bfloat16).to(self.device)
        return self.torch.from_numpy(array).to(self.device)

    def synchronize(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def eager(self, dy, x, gamma, mean, rstd):
        n = x.shape[-1]
        beta = self.torch.zeros_like(gamma)
        if self.device == "cpu":
            # torch's CPU kernel keeps the statistics in the input dtype (its
            # forward returns them so); CUDA keeps them in f32.
            mean, rstd = mean.to(x.dtype), rstd.to(x.dtype)
        return self.torch.ops.aten.native_layer_norm_backward(
            dy, x, [n], mean[:, None], rstd[:, None], gamma, beta, [True, True, True]
        )

    def copy_gbps(self) -> float:
        a = self.torch.empty(1 << 28, dtype=self.torch.float32, device=self.device)
        a.uniform_()
        b = self.torch.empty_like(a)
        seconds = time_calls(lambda i: b.copy_(a), self.synchronize, 1, trials=9)
        return 2 * a.numel() * 4 / seconds / 1e9

    def l2_bytes(self) -> int:
        if self.device == "cuda":
            return int(self.torch.cuda.get_device_properties(0).L2_cache_size)
        return L2_BYTES_DEFAULT

    def name(self) -> str:
        if self.device == "cuda":
            return self.torch.cuda.get_device_name(0)
        return platform.processor() or platform.machine()


def numpy_copy_gbps() -> float:
    a = np.random.default_rng(0).random(1 << 26, dtype=np.float32)
    b = np.empty_like(a)
    seconds = time_calls(lambda i: np.copyto(b, a), lambda: None, 1, trials=9)
    return 2 * a.nbytes / seconds / 1e9


def numpy_backward(dy, x, gamma, mean, rstd):
    """The same math in float32 NumPy (the CPU comparison of issue 4)."""
    dyf, xf, gf = dy.astype(np.float32), x.astype(np.float32), gamma.astype(np.float32)
    x_hat = (xf - mean[:, None]) * rstd[:, None]
    g = dyf * gf
    dx = rstd[:, None] * (g - g.mean(-1, keepdims=True) - x_hat * (g * x_hat).mean(-1, keepdims=True))
    return dx.astype(dy.dtype), (dyf * x_hat).sum(0).astype(dy.dtype), dyf.sum(0).astype(dy.dtype)


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


def run(device: str, shapes, dtypes, *, chip=None, artifact_dir=None, impls=None, seed=None, threads=None,
        log=print) -> dict:
    if threads is not None:
        limit_cpu_threads(device, threads)
    # One compile thread: inductor's default worker pool competes for the CPU
    # with the host-bound small calls timed in the same process.
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    try:
        torch_impls = TorchImpls(device)
    except ImportError:
        torch_impls = None
    if torch_impls is not None:
        copy_gbps, l2, device_name = torch_impls.copy_gbps(), torch_impls.l2_bytes(), torch_impls.name()
    elif device.startswith("local"):
        copy_gbps, l2, device_name = numpy_copy_gbps(), L2_BYTES_DEFAULT, platform.processor() or platform.machine()
    else:
        copy_gbps, l2, device_name = None, L2_BYTES_DEFAULT, device
    log(f"device {device_name}: copy {copy_gbps and round(copy_gbps, 1)} GB/s, L2 {l2 >> 20} MiB")

    variants = {
        "iree": runtime.LayerNormKernels(device, chip=chip, artifact_dir=artifact_dir, static_shapes=False),
        "iree_static": runtime.LayerNormKernels(device, chip=chip, artifact_dir=artifact_dir, static_shapes=True),
    }
    rng = np.random.default_rng(seed)
    results = []

    def measure(dtype, m, n, wanted):
        """Times the implementations in ``wanted`` on one shape, on shared fresh inputs."""
        dy, x, gamma, mean, rstd = make_inputs(rng, m, n, dtype)
        set_bytes = 2 * dy.nbytes
        n_sets = max(1, min(8, math.ceil(2 * l2 / set_bytes)))
        want = backward_reference(dy, x, gamma, mean, rstd)
        moved = bytes_moved(m, n, dtype)

        def record(impl, seconds, outputs):
            errors = [relative_error(np.asarray(o, np.float64), w) for o, w in zip(outputs, want)]
            row = {
                "impl": impl, "m": m, "n": n, "dtype": dtype,
                "median_us": seconds * 1e6, "gbps": moved / seconds / 1e9,
                "pct_of_copy": (100 * moved / seconds / 1e9 / copy_gbps) if copy_gbps else None,
                "max_rel_error": max(errors),
            }
            results.append(row)
            log(f"{impl:14s} {m}x{n} {dtype:4s} {row['median_us']:10.1f} us {row['gbps']:8.1f} GB/s"
                f" {row['pct_of_copy'] or 0:5.1f}% of copy  err {row['max_rel_error']:.1e}")

        for impl, kernels in variants.items():
            if impl not in wanted:
                continue
            sets = [
                [kernels.to_device(a) for a in (make_inputs(rng, m, n, dtype)[:2] if i else (dy, x))]
                for i in range(n_sets)
            ]
            # Results go to buffers allocated once per set, as a training loop would keep them.
            outs = [tuple(kernels.allocate(shape, dy.dtype) for shape in ((m, n), (n,), (n,))) for _ in range(n_sets)]
            g_dev, mean_dev, rstd_dev = (kernels.to_device(a) for a in (gamma, mean, rstd))
            outputs = [np.asarray(o.to_host()) for o in kernels.backward(*sets[0], g_dev, mean_dev, rstd_dev, out=outs[0])]
            seconds = time_calls(
                lambda i: kernels.backward(*sets[i], g_dev, mean_dev, rstd_dev, out=outs[i], wait=False),
                kernels.synchronize, n_sets,
            )
            record(impl, seconds, outputs)

        if torch_impls is not None:
            t = torch_impls
            tsets = [[t.to(a) for a in (make_inputs(rng, m, n, dtype)[:2] if i else (dy, x))] for i in range(n_sets)]
            tg, tmean, trstd = t.to(gamma), t.to(mean), t.to(rstd)
            for impl, fn in (("torch_eager", t.eager), ("torch_compile", t.compiled)):
                if impl not in wanted:
                    continue
                args = (tmean, trstd) if impl == "torch_eager" else (tmean[:, None], trstd[:, None])
                outputs = [o.float().cpu().numpy() for o in fn(*tsets[0], tg, *args)]
                seconds = time_calls(lambda i: fn(*tsets[i], tg, *args), t.synchronize, n_sets)
                record(impl, seconds, outputs)
        if "numpy" in wanted and device.startswith("local"):
            seconds = time_calls(lambda i: numpy_backward(dy, x, gamma, mean, rstd), lambda: None, 1, trials=5)
            record("numpy", seconds, numpy_backward(dy, x, gamma, mean, rstd))

    every = {"iree", "iree_static", "torch_eager", "torch_compile", "numpy"}
    chosen = set(impls) if impls else every
    # torch.compile last, over all shapes: its compiler leaves worker processes
    # that compete for the CPU, which host-bound small calls would feel.
    for phase in (chosen - {"torch_compile"}, chosen & {"torch_compile"}):
        for dtype in dtypes:
            for m, n in shapes:
                if phase:
                    measure(dtype, m, n, phase)

    return {
        "device": device_name,
        "driver": device,
        "chip": variants["iree"].target.chip,
        "iree_version": metadata.version("iree-base-runtime"),
        "date": datetime.date.today().isoformat(),
        "copy_gbps": copy_gbps,
        # None: each library's default (IREE and torch both use one thread per physical core).
        "threads": threads,
        "timing": "back-to-back calls, one synchronisation per trial, median over 15 trials; inputs rotated over >= 2x L2",
        "results": results,
    }


def write_report(report: dict, stem: Path) -> list[Path]:
    """JSON, a markdown table and (with matplotlib) a PNG plot beside each other."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".json")]
    paths[0].write_text(json.dumps(report, indent=2))
    rows = report["results"]
    impls = sorted({r["impl"] for r in rows}, key=lambda s: (s != "iree", s != "iree_static", s))
    keys = sorted({(r["dtype"], r["m"], r["n"]) for r in rows})
    by = {(r["impl"], r["dtype"], r["m"], r["n"]): r for r in rows}
    lines = [
        f"# Backward benchmark: {report['device']} ({report['driver']}, {report['chip']})",
        "",
        f"IREE {report['iree_version']}, {report['date']}; copy bandwidth {report['copy_gbps']:.0f} GB/s"
        if report["copy_gbps"] else f"IREE {report['iree_version']}, {report['date']}",
        "",
        f"Timing: {report['timing']}." + (f" Host threads: {report['threads']}." if report.get("threads") else ""),
        "",
        "| dtype | M x N | " + " | ".join(f"{i} us (% copy)" for i in impls) + " | best IREE vs torch eager |",
        "|---" * (len(impls) + 3) + "|",
    ]
    for dtype, m, n in keys:
        cells = []
        for impl in impls:
            r = by.get((impl, dtype, m, n))
            cells.append("" if r is None else f"{r['median_us']:.1f} ({r['pct_of_copy'] or 0:.0f}%)")
        iree_best = min((by[(i, dtype, m, n)]["median_us"] for i in ("iree", "iree_static") if (i, dtype, m, n) in by), default=None)
        eager = by.get(("torch_eager", dtype, m, n))
        ratio = f"{eager['median_us'] / iree_best:.2f}x" if eager and iree_best else ""
        lines.append(f"| {dtype} | {m}x{n} | " + " | ".join(cells) + f" | {ratio} |")
    md = stem.with_suffix(".md")
    md.write_text("\n".join(lines) + "\n")
    paths.append(md)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return paths
    fig, ax = plt.subplots(figsize=(max(8, len(keys) * 1.2), 4.5))
    width = 0.8 / len(impls)
    for k, impl in enumerate(impls):
        ax.bar([i + k * width for i in range(len(keys))],
               [by[(impl, *key)]["gbps"] if (impl, *key) in by else 0 for key in keys], width, label=impl)
    if report["copy_gbps"]:
        ax.axhline(report["copy_gbps"], color="k", ls="--", lw=1, label="copy")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], [f"{d}\n{m}x{n}" for d, m, n in keys], fontsize=8)
    ax.set_ylabel("effective GB/s")
    ax.set_title(f"LayerNorm backward, {report['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = stem.with_suffix(".png")
    fig.savefig(png, dpi=110)
    paths.append(png)
    return paths
