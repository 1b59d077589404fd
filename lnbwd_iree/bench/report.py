"""A bench report written as JSON, a markdown table and (with matplotlib) a PNG plot."""

from __future__ import annotations

import io
import json
from pathlib import Path

from ..cache import atomic_write
from .cases import NORM_OPS, TIMED_OPS
from .peers import IMPLS, IREE_IMPLS


def report_paths(stem: Path) -> list[Path]:
    return [stem.with_suffix(s) for s in (".json", ".md", ".png")]


def cell(row) -> str:
    if row is None:
        return ""
    if row.get("error"):
        return "failed"
    if not row["correct"]:
        return f"WRONG ({row['max_rel_error']:.0e})"
    pct = f" ({row['pct_of_copy']:.0f}%)" if row["pct_of_copy"] is not None else ""
    return f"{row['median_us']:.1f}{pct}"


def best_time(by: dict, impls, key) -> float | None:
    """The fastest median among ``impls`` at ``key`` (op, dtype, m, n)."""
    op, *rest = key
    times = [r["median_us"] for i in impls if (r := by.get((op, i, *rest))) and r["median_us"] is not None]
    return min(times, default=None)


def op_table(op: str, rows: list, by: dict) -> list[str]:
    """The markdown section of one op: a row per dtype and shape, a column per implementation."""
    impls = [i for i in IMPLS if any(r["impl"] == i for r in rows)]
    peers = [i for i in impls if i not in IREE_IMPLS]
    ours = [i for i in impls if i in IREE_IMPLS]
    ratio = bool(peers and ours)
    lines = ["", f"## {op}", "",
             "| dtype | M x N | " + " | ".join(impls) + (" | best peer / best IREE time |" if ratio else " |"),
             "|---" * (len(impls) + 2 + ratio) + "|"]
    for dtype, m, n in dict.fromkeys((r["dtype"], r["m"], r["n"]) for r in rows):
        line = f"| {dtype} | {m}x{n} | " + " | ".join(cell(by.get((op, i, dtype, m, n))) for i in impls) + " |"
        if ratio:
            peer, iree = best_time(by, peers, (op, dtype, m, n)), best_time(by, ours, (op, dtype, m, n))
            line += f" {peer / iree:.2f} |" if peer and iree else " |"
        lines.append(line)
    lines += ["", "Builds:", ""]
    builds = {}
    for r in rows:
        if r["build"]:
            builds.setdefault((r["impl"], r["build"]), []).append(f"{r['dtype']} {r['m']}x{r['n']}")
    lines += [f"- {impl}: {text} (fastest build in {len(where)} row(s))" for (impl, text), where in builds.items()]
    return lines


def markdown(report: dict) -> str:
    rows = report["results"]
    by = {(r["op"], r["impl"], r["dtype"], r["m"], r["n"]): r for r in rows}
    copy = f"; copy bandwidth {report['copy_gbps']:.0f} GB/s" if report["copy_gbps"] else ""
    norms = [norm for norm, ops in NORM_OPS.items() if any(r["op"] in ops.values() for r in rows)]
    lines = [
        f"# {' and '.join(norms) or 'no'} benchmark: {report['device']} ({report['driver']}, {report['chip']})",
        "",
        f"IREE {report['iree_version']}, torch {report['torch_version']}, Liger {report['liger_version']},"
        f" {report['date']}{copy}; L2 {report['l2_bytes'] / 2**20:.1f} MiB.",
        "",
        f"Timing: {report['timing']}." + (f" Host threads: {report['threads']}." if report.get("threads") else ""),
        "Cells: median us per call (% of copy bandwidth); WRONG: failed the float64 check, not timed.",
    ]
    lines += [f"Skipped {note}." for note in report.get("notes", [])]
    for op in TIMED_OPS:
        op_rows = [r for r in rows if r["op"] == op]
        if op_rows:
            lines += op_table(op, op_rows, by)
    return "\n".join(lines) + "\n"


def figure(report: dict, plt):
    """A matplotlib figure of effective GB/s per dtype and shape, a panel per
    op, or None without timed results."""
    rows = [r for r in report["results"] if r["gbps"] is not None]
    ops = [op for op in TIMED_OPS.values() if any(r["op"] == op.name for r in rows)]
    if not ops:
        return None
    keys = list(dict.fromkeys((r["dtype"], r["m"], r["n"]) for r in rows))
    fig, axes = plt.subplots(len(ops), 1, figsize=(max(8, len(keys) * 1.2), 4.5 * len(ops)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops):
        gbps = {(r["impl"], r["dtype"], r["m"], r["n"]): r["gbps"] for r in rows if r["op"] == op.name}
        impls = [i for i in IMPLS if any(k[0] == i for k in gbps)]
        width = 0.8 / len(impls)
        for j, impl in enumerate(impls):
            ax.bar([i + j * width for i in range(len(keys))], [gbps.get((impl, *key), 0) for key in keys],
                   width, label=impl)
        if report["copy_gbps"]:
            ax.axhline(report["copy_gbps"], color="k", ls="--", lw=1, label="copy")
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))], [f"{d}\n{m}x{n}" for d, m, n in keys],
                      fontsize=8)
        ax.set_ylabel("effective GB/s")
        ax.set_title(f"{op.norm} {op.direction}, {report['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot(report: dict, name: str, log=print) -> bytes | None:
    """The PNG ``name`` of ``figure``, or None (``log`` says why)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log(f"matplotlib is not installed: no {name} (pip install 'lnbwd-iree[bench]')")
        return None
    fig = figure(report, plt)
    if fig is None:
        log(f"no timed results: no {name}")
        return None
    png = io.BytesIO()
    fig.savefig(png, dpi=110, format="png")
    plt.close(fig)
    return png.getvalue()


def write_report(report: dict, stem: Path, log=print) -> list[Path]:
    """JSON, a markdown table and (with matplotlib) a PNG plot beside each other,
    each written whole or not at all."""
    json_path, md_path, png_path = report_paths(stem)
    atomic_write(json_path, json.dumps(report, indent=2).encode())
    atomic_write(md_path, markdown(report).encode())
    paths = [json_path, md_path]
    png = plot(report, png_path.name, log)
    if png is not None:
        atomic_write(png_path, png)
        paths.append(png_path)
    else:
        png_path.unlink(missing_ok=True)  # an earlier run's plot would no longer match the tables
    return paths
