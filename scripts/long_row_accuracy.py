"""The f32 forward's statistics on long rows (issue 25, item 4): the kernel's
error against float64, beside NumPy models of summation orders, to tell which
order the compiled reduction follows and what another one would give.

    .venv/bin/python scripts/long_row_accuracy.py 131072 262144 1048576

Findings: docs/performance.md, "Long rows in f32"."""

import sys

import numpy as np

from lnbwd_iree import kernels_for


def relative(got, want) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def chained_sums(terms: np.ndarray, chains: int) -> np.ndarray:
    """f32 row sums of ``terms`` [M, N] in ``chains`` sequential chains (chain c adds
    terms c, c + chains, ... in order), then the chains added."""
    partial = np.zeros((terms.shape[0], chains), np.float32)
    for j in range(0, terms.shape[1], chains):
        partial += terms[:, j:j + chains]
    return partial.sum(axis=1, dtype=np.float32)


def main(lengths: list[int]) -> None:
    kernels = kernels_for("local-task")
    rng = np.random.default_rng(0)
    for n in lengths:
        x = rng.standard_normal((4, n)).astype(np.float32)
        ones, zeros = np.ones(n, np.float32), np.zeros(n, np.float32)
        y, mean, rstd = (a.to_host() for a in kernels.forward(x, ones, zeros))
        rms_rstd = kernels.rmsnorm_forward(x, ones, eps=1e-6)[1].to_host()
        x64 = x.astype(np.float64)
        mean64, rstd64 = x64.mean(1), 1 / np.sqrt(x64.var(1) + 1e-5)
        y64 = (x64 - mean64[:, None]) * rstd64[:, None]
        squares64 = (x64 ** 2).sum(1)
        print(f"N={n}: kernel y {relative(y, y64):.1e}, |mean error| {np.abs(mean - mean64).max():.1e}, "
              f"rstd {relative(rstd, rstd64):.1e}, RMSNorm rstd {relative(rms_rstd, 1 / np.sqrt(squares64 / n + 1e-6)):.1e}")
        pivot = x[:, :1]  # row_statistics.mlir sums x - x[i, 0]
        for chains in (1, 16):
            shifted = pivot[:, 0] + chained_sums(x - pivot, chains) / np.float32(n)
            plain = chained_sums(x, chains) / np.float32(n)
            print(f"  {chains:2d} chain(s): |mean error| shifted {np.abs(shifted - mean64).max():.1e}, unshifted "
                  f"{np.abs(plain - mean64).max():.1e}; sum of squares {relative(chained_sums(x * x, chains), squares64):.1e}")
        print(f"  pairwise (np.sum): |mean error| {np.abs(x.sum(1, dtype=np.float32) / n - mean64).max():.1e}; "
              f"sum of squares {relative((x * x).sum(1, dtype=np.float32), squares64):.1e}")
        corrected = mean + chained_sums(x - mean[:, None], 1) / np.float32(n)
        print(f"  kernel mean + sum(x - mean)/N in 1 chain: |mean error| {np.abs(corrected - mean64).max():.1e}")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [131072, 262144, 1048576])
