"""Tables of ``ifcnn-eval``: number formatting, mean +/- std summaries, text, Markdown
and CSV tables, and the ranks of several methods per metric."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

import numpy as np

from ifcnn_jax.cli.common import LazyModule

# Imported on first use: the metrics import JAX, which ifcnn-eval --help must not wait for.
metrics = LazyModule("ifcnn_jax.metrics")


def format_value(value: float) -> str:
    """4 decimals; ``inf``/``n/a`` for infinite and missing (NaN) values."""
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def summarise(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof=1; 0 for one value) and count of the
    finite values; NaN mean when there are none. Infinite values (a fused image equal
    to its sources) count as missing."""
    finite = np.asarray([v for v in values if math.isfinite(v)], np.float64)
    if finite.size == 0:
        return math.nan, math.nan, 0
    std = float(np.std(finite, ddof=1)) if finite.size > 1 else 0.0
    return float(np.mean(finite)), std, int(finite.size)


def mean_std_text(values: Sequence[float]) -> str:
    mean, std, count = summarise(values)
    if count == 0:
        return "n/a"
    return f"{format_value(mean)} ± {format_value(std)}"


def text_table(rows: list[dict], names: Sequence[str], title: str) -> str:
    """A plain-text table: one line per group and a mean +/- std line."""
    header = ["group", *names]
    body = [[row["group"], *(format_value(row[n]) for n in names)] for row in rows]
    stats = [summarise([row[n] for row in rows]) for n in names]
    means = ["mean", *(format_value(m) if c else "n/a" for m, _, c in stats)]
    stds = ["± std", *(format_value(s) if c else "n/a" for _, s, c in stats)]
    table = [header, *body, means, stds]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *map(line, body), rule, line(means), line(stds)])


def markdown_table(rows: list[dict], names: Sequence[str]) -> str:
    lines = ["| group | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for row in rows:
        lines.append(f"| {row['group']} | " + " | ".join(format_value(row[n]) for n in names) + " |")
    lines.append(
        "| **mean ± std** | " + " | ".join(mean_std_text([row[n] for row in rows]) for n in names) + " |"
    )
    return "\n".join(lines)


def markdown_report(
    by_collection: dict[str, list[dict]], names: Sequence[str], command: str, notes: Sequence[str]
) -> str:
    parts = ["# Fusion metrics", "", f"Command: `{command}`", ""]
    parts += [f"- {note}" for note in notes]
    parts += [
        "",
        "Values per group; the last row is the mean ± sample standard deviation "
        "over the groups. Definitions: docs/metrics.md.",
        "",
    ]
    if len(by_collection) > 1:
        parts += [
            "## Summary",
            "",
            "| collection | groups | " + " | ".join(names) + " |",
            "|---|---:|" + "---:|" * len(names),
        ]
        for collection, rows in by_collection.items():
            parts.append(
                f"| {collection} | {len(rows)} | "
                + " | ".join(mean_std_text([r[n] for r in rows]) for n in names)
                + " |"
            )
        parts.append("")
    for collection, rows in by_collection.items():
        parts += [f"## {collection}", "", markdown_table(rows, names), ""]
    return "\n".join(parts)


def csv_text(rows: list[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in columns])
    return buffer.getvalue()


def _csv_cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def summary_rows(by_collection: dict[str, list[dict]], names: Sequence[str]) -> list[dict]:
    out = []
    for collection, rows in by_collection.items():
        entry: dict[str, object] = {"collection": collection, "groups": len(rows)}
        for n in names:
            mean, std, _ = summarise([r[n] for r in rows])
            entry[f"{n}_mean"], entry[f"{n}_std"] = mean, std
        out.append(entry)
    return out


def rank_values(values: dict[str, float], higher_is_better: bool) -> dict[str, int | None]:
    """Competition ranks (1 = best; ties share the better rank, as 1, 2, 2, 4) of the
    finite values; None for the missing ones (NaN)."""
    finite = {k: v for k, v in values.items() if math.isfinite(v)}
    ranks: dict[str, int | None] = {}
    for key, value in values.items():
        if key not in finite:
            ranks[key] = None
            continue
        better = [v for v in finite.values() if (v > value if higher_is_better else v < value)]
        ranks[key] = 1 + len(better)
    return ranks


def comparison_rows(rows_by_method: dict[str, list[dict]], names: Sequence[str]) -> list[dict]:
    """Per collection and method: the mean of every metric over the groups and its rank
    among the methods (by the metric's direction), and the mean of those ranks."""
    collections: list[str] = []
    for rows in rows_by_method.values():
        for row in rows:
            if row["collection"] not in collections:
                collections.append(row["collection"])
    out = []
    for collection in collections:
        means = {
            method: {n: summarise([r[n] for r in rows if r["collection"] == collection])[0] for n in names}
            for method, rows in rows_by_method.items()
        }
        ranks = {
            n: rank_values(
                {m: means[m][n] for m in rows_by_method}, metrics.KNOWN_METRICS[n].higher_is_better
            )
            for n in names
        }
        for method in rows_by_method:
            entry: dict[str, object] = {"collection": collection, "method": method}
            own = [ranks[n][method] for n in names if ranks[n][method] is not None]
            for n in names:
                entry[f"{n}_mean"] = means[method][n]
                entry[f"{n}_rank"] = ranks[n][method] if ranks[n][method] is not None else math.nan
            entry["mean_rank"] = float(np.mean(own)) if own else math.nan
            out.append(entry)
    return out


def _rank_cell(entry: dict, name: str) -> str:
    rank = entry[f"{name}_rank"]
    if isinstance(rank, float) and math.isnan(rank):
        return format_value(entry[f"{name}_mean"])
    return f"{format_value(entry[f'{name}_mean'])} ({rank})"


def comparison_markdown(comparison: list[dict], names: Sequence[str]) -> str:
    arrows = [f"{n} {'↑' if metrics.KNOWN_METRICS[n].higher_is_better else '↓'}" for n in names]
    parts = []
    for collection in dict.fromkeys(e["collection"] for e in comparison):
        parts += [
            f"### {collection}",
            "",
            "| method | " + " | ".join(arrows) + " | mean rank |",
            "|---|" + "---:|" * (len(names) + 1),
        ]
        for entry in (e for e in comparison if e["collection"] == collection):
            cells = [_rank_cell(entry, n) for n in names]
            parts.append(
                f"| {entry['method']} | " + " | ".join(cells) + f" | {format_value(entry['mean_rank'])} |"
            )
        parts.append("")
    return "\n".join(parts)


def comparison_text(comparison: list[dict], names: Sequence[str]) -> str:
    blocks = []
    for collection in dict.fromkeys(e["collection"] for e in comparison):
        header = [
            "method",
            *(f"{n}{'+' if metrics.KNOWN_METRICS[n].higher_is_better else '-'}" for n in names),
        ]
        body = [
            [e["method"], *(_rank_cell(e, n) for n in names)]
            for e in comparison
            if e["collection"] == collection
        ]
        header.append("mean rank")
        for line, entry in zip(body, (e for e in comparison if e["collection"] == collection)):
            line.append(format_value(entry["mean_rank"]))
        table = [header, *body]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
            for cells in table
        ]
        blocks.append(
            "\n".join([f"\n{collection}: mean over the groups (rank; + higher / - lower is better)", *lines])
        )
    return "\n".join(blocks)
