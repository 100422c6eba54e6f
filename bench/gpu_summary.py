"""Summarises a ``bench/run.py --json`` report for the README and issue 16: fused
megapixels per second and training images per second, JAX (the library and each
attempt) and PyTorch (each variant), every one with its error against the float32
reference and its ratio to the PyTorch anchor.

    python bench/gpu_summary.py REPORT.json [--json SUMMARY.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _rate(case: dict, seconds: float | None) -> float | None:
    if not seconds:
        return None
    if "images_per_s" in case:
        return case["images_per_s"]["jax"] * case["jax_s"] / seconds
    if "megapixels_per_s" in case:
        return case["megapixels_per_s"]["jax"] * case["jax_s"] / seconds
    return None


def summarise(report: dict) -> dict:
    out = {
        "date": report.get("date"),
        "device": report.get("device"),
        "versions": report.get("versions"),
        "conditions": report.get("conditions"),
        "cases": {},
    }
    for name, case in report.get("cases", {}).items():
        if case.get("jax_s") is None:
            out["cases"][name] = {"error": case.get("error", "failed")}
            continue
        unit = "images/s" if "images_per_s" in case else "MP/s"
        anchor_s = case.get("torch_s")
        rows = [
            {
                "side": "jax",
                "variant": "library (HIGHEST precision)",
                "median_s": case["jax_s"],
                "rate": _rate(case, case["jax_s"]),
                "max_abs_diff_0_1": case.get("max_abs_diff_vs_torch"),
                "ratio_to_anchor": case["jax_s"] / anchor_s if anchor_s else None,
            }
        ]
        for variant, v in (case.get("jax_variants") or {}).items():
            if variant == "library":
                continue
            rows.append(
                {
                    "side": "jax",
                    "variant": variant,
                    "median_s": v.get("median_s"),
                    "rate": _rate(case, v.get("median_s")),
                    "max_abs_diff_0_1": v.get("max_abs_diff_vs_reference"),
                    "ratio_to_anchor": v["median_s"] / anchor_s if anchor_s and v.get("median_s") else None,
                    "error": v.get("error"),
                }
            )
        for variant, v in (case.get("torch_variants") or {}).items():
            rows.append(
                {
                    "side": "torch",
                    "variant": variant + (" (anchor)" if variant == case.get("torch_anchor") else ""),
                    "median_s": v.get("median_s"),
                    "rate": _rate(case, v.get("median_s")),
                    "max_abs_diff_0_1": v.get("max_abs_diff_vs_reference"),
                    "parity": v.get("parity"),
                    "ratio_to_anchor": v["median_s"] / anchor_s if anchor_s and v.get("median_s") else None,
                    "error": v.get("error"),
                }
            )
        out["cases"][name] = {
            "unit": unit,
            "anchor": case.get("torch_anchor"),
            "ratio": case.get("ratio"),
            "rows": rows,
        }
    return out


def markdown(summary: dict) -> str:
    lines = [f"{summary.get('date')}, {summary.get('device')}", ""]
    for name, case in summary["cases"].items():
        if "rows" not in case:
            lines.append(f"`{name}`: {case['error']}")
            continue
        lines += [
            f"`{name}` (anchor `{case['anchor']}`, JAX / anchor {case['ratio']:.2f})"
            if case.get("ratio")
            else f"`{name}`",
            "",
            f"| side | variant | median (s) | {case['unit']} | max abs diff (0-1) | / anchor |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in case["rows"]:

            def fmt(value, spec):
                return format(value, spec) if isinstance(value, (int, float)) else "-"

            lines.append(
                f"| {r['side']} | {r['variant']} | {fmt(r['median_s'], '.4f')} | {fmt(r['rate'], '.1f')} "
                f"| {fmt(r['max_abs_diff_0_1'], '.1e')} | {fmt(r.get('ratio_to_anchor'), '.2f')} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report")
    parser.add_argument("--json", help="write the summary here too")
    args = parser.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text())
    except (OSError, ValueError) as exc:
        print(f"bench/gpu_summary.py: error: cannot read {args.report}: {exc}", file=sys.stderr)
        return 2
    summary = summarise(report)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
