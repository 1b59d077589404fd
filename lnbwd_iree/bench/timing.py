"""How bench times: rotation of input sets beyond twice the L2 cache,
implementations taking turns trial by trial, and the device's copy bandwidth."""

from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import dataclass

import numpy as np

# Used when the device reports no L2 size (CPUs, torch absent): a large CPU L2/L3.
L2_BYTES_DEFAULT = 64 << 20
# More sets than this only happen for tiny shapes; their creation would cost
# more than the timing. A capped rotation is recorded as not beyond 2x L2.
MAX_INPUT_SETS = 4096
TRIALS = 15
# Calls before the trials, long enough for a GPU to leave its idle clocks.
WARMUP_S = 0.1


def input_sets(set_bytes: int, l2_bytes: int, max_sets: int = MAX_INPUT_SETS) -> int:
    """How many copies of ``set_bytes`` of per-call inputs to rotate among so
    that together they exceed twice ``l2_bytes`` (at most ``max_sets``)."""
    if set_bytes <= 0 or l2_bytes < 0:
        raise ValueError(f"set_bytes must be > 0 and l2_bytes >= 0, got {set_bytes}, {l2_bytes}")
    return min(max_sets, 2 * l2_bytes // set_bytes + 1)


def _calls_per_trial(call, synchronize, n_sets: int, min_trial_s: float, warmup_s: float) -> int:
    """Warms ``call`` up for ``warmup_s``; returns the calls that fill a trial of
    ``min_trial_s`` (at least one per input set, at most 2000)."""
    for i in range(3):  # the first calls may compile or load
        call(i % n_sets)
    synchronize()
    # Synchronised calls, so that no queue of slow calls builds up behind the clock.
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < warmup_s:
        call(calls % n_sets)
        synchronize()
        calls += 1
    once = max((time.perf_counter() - start) / max(calls, 1), 1e-7)
    return max(n_sets, min(2000, math.ceil(min_trial_s / once)))


def time_interleaved(timed, n_sets: int, min_trial_s=0.02, trials=TRIALS, warmup_s=WARMUP_S) -> list[list[float]]:
    """Seconds per call of each ``(call, synchronize)`` in ``timed``, one
    sample per trial: a trial queues back-to-back calls and synchronises once.
    ``call(i)`` runs on input set ``i``. Trial t of every one runs before
    trial t + 1 of any, so a drift of the device's clocks over the run is
    shared by all of them instead of falling on whichever comes first."""
    counts = [_calls_per_trial(call, synchronize, n_sets, min_trial_s, warmup_s) for call, synchronize in timed]
    samples = [[] for _ in timed]
    for _ in range(trials):
        for (call, synchronize), calls, mine in zip(timed, counts, samples):
            start = time.perf_counter()
            for i in range(calls):
                call(i % n_sets)
            synchronize()
            mine.append((time.perf_counter() - start) / calls)
    return samples


def time_calls(call, synchronize, n_sets: int, min_trial_s=0.02, trials=TRIALS) -> float:
    """Median seconds per call of one implementation (``time_interleaved``)."""
    return statistics.median(time_interleaved([(call, synchronize)], n_sets, min_trial_s, trials)[0])


def copy_gbps_of(copy, synchronize, nbytes: int) -> float:
    """Copy bandwidth (bytes read + written per second) of ``copy()``."""
    seconds = time_calls(lambda i: copy(), synchronize, 1, trials=9)
    return 2 * nbytes / seconds / 1e9


@dataclass(frozen=True)
class DeviceFigures:
    name: str
    copy_gbps: float | None  # None: not measured
    l2_bytes: int
    note: str | None = None  # why the copy bandwidth is not measured


def device_figures(driver: str, torch=None, l2_bytes: int | None = None) -> DeviceFigures:
    """The name, copy bandwidth and L2 size (``l2_bytes`` if given) of the
    device behind IREE ``driver``: a GPU's through ``torch`` (the torch module,
    given when torch runs on that GPU), the host's through NumPy."""
    if torch is not None:
        props = torch.cuda.get_device_properties(0)
        a = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
        b = torch.empty_like(a)
        copy = copy_gbps_of(lambda: b.copy_(a), torch.cuda.synchronize, a.nbytes)
        return DeviceFigures(props.name, copy, l2_bytes or int(props.L2_cache_size))
    if driver.startswith("local"):
        a = np.random.default_rng(0).random(1 << 26, dtype=np.float32)
        b = np.empty_like(a)
        copy = copy_gbps_of(lambda: np.copyto(b, a), lambda: None, a.nbytes)
        return DeviceFigures(platform.processor() or platform.machine(), copy, l2_bytes or L2_BYTES_DEFAULT)
    return DeviceFigures(driver, None, l2_bytes or L2_BYTES_DEFAULT,
                         f"copy bandwidth: not measured on {driver} without torch; % of copy left empty")
