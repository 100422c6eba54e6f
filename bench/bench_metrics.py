"""Times every no-reference metric over the 20 Lytro pairs of the release's CMFDataset.

    python bench/bench_metrics.py                     # fused image: the mean of A and B
    python bench/bench_metrics.py --fused eval/fused/CMFDataset   # real fused results
    taskset -c 0,1 python bench/bench_metrics.py      # pin to two cores, as the issue asks

Prints the time of the first pass through ``metrics.evaluate`` (which includes
compiling every metric for 520x520), the median over ``--repeat`` further passes, and
each metric's median time per pair, as wall time and as CPU time of this process
(``time.process_time``: on a busy machine the wall time also counts other processes),
with the load average before and after. ``--opt-in`` also times ``OPT_IN_METRICS``.
Issue 15's target: the default metrics over the 20 pairs in 4-11 s once compiled.
Metric values do not depend on timing, so no fused images from a model are needed; any
image of the right size exercises the same code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_pairs(release_dir: Path, fused_dir: Path | None):
    import numpy as np  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    from ifcnn_jax.io.images import read_image  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from ifcnn_jax.metrics import to_gray_255  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    folder = release_dir / "datasets" / "CMFDataset"
    groups = []
    for i in range(1, 21):
        a, b = (to_gray_255(read_image(folder / f"lytro-{i:02d}-{s}.jpg")) for s in "AB")
        if fused_dir is not None:
            fused = to_gray_255(read_image(fused_dir / f"lytro-{i:02d}.png"))
        else:
            fused = np.floor((a + b) / 2 + 0.5)
        groups.append((np.stack([a, b]), fused))
    return groups


def evaluate_pass(groups) -> float:
    """All metrics for every pair through ``metrics.evaluate`` (the path ifcnn-eval takes:
    input checks, and SSIM_sum / MS_SSIM_sum derived from the means)."""
    from ifcnn_jax.metrics import evaluate  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    start = time.perf_counter()
    for sources, fused in groups:
        evaluate(list(sources), fused)
    return time.perf_counter() - start


def per_metric_pass(groups, names) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import jax.numpy as jnp  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    from ifcnn_jax.metrics import ALL_METRICS, OPT_IN_METRICS  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    registry = {**ALL_METRICS, **OPT_IN_METRICS}
    seconds: dict[str, list[float]] = {}
    cpu_seconds: dict[str, list[float]] = {}
    for sources, fused in groups:
        s, f = jnp.asarray(sources), jnp.asarray(fused)
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(registry[name](s, f))
            seconds.setdefault(name, []).append(time.perf_counter() - t0)
            cpu_seconds.setdefault(name, []).append(time.process_time() - c0)
    return seconds, cpu_seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--release-dir",
        type=Path,
        default=Path(os.environ.get("IFCNN_RELEASE_DIR", REPO.parent / "shared" / "ifcnn-release")),
    )
    parser.add_argument(
        "--fused",
        type=Path,
        default=None,
        help="folder with lytro-NN.png fused results (default: mean of A, B)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed passes after the first")
    parser.add_argument(
        "--opt-in",
        action="store_true",
        help="also time the opt-in metrics (OPT_IN_METRICS) one by one; the evaluate passes "
        "time the default selection",
    )
    args = parser.parse_args()
    if not (args.release_dir / "datasets" / "CMFDataset").is_dir():
        print(
            f"error: {args.release_dir}/datasets/CMFDataset not found (set --release-dir or "
            "IFCNN_RELEASE_DIR)",
            file=sys.stderr,
        )
        return 2

    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    from ifcnn_jax.metrics import NO_REFERENCE_METRICS, OPT_IN_METRICS  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    groups = load_pairs(args.release_dir, args.fused)
    names = [n for n, m in NO_REFERENCE_METRICS.items() if m.applies_to(2, 520, 520)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"{len(groups)} Lytro pairs, 520x520 gray; {len(names)} metrics; jax {jax.__version__} "
        f"on {jax.devices()[0].platform}, {cores} CPU cores available"
    )
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    cpu = time.process_time()
    cold = evaluate_pass(groups)
    print(f"first pass (compiles every metric): {cold:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
    warm = []
    for _ in range(args.repeat):
        cpu = time.process_time()
        warm.append(evaluate_pass(groups))
        print(f"  compiled pass: {warm[-1]:.1f} s wall, {time.process_time() - cpu:.1f} s CPU")
    print(
        f"median of {args.repeat} compiled passes: {statistics.median(warm):.1f} s for all "
        f"{len(names)} metrics over {len(groups)} pairs (first pass {cold:.1f} s)"
    )
    timed = names + (
        [n for n, m in OPT_IN_METRICS.items() if m.applies_to(2, 520, 520)] if args.opt_in else []
    )
    per_metric, per_metric_cpu = per_metric_pass(groups, timed)
    print("median per pair, each metric on its own (wall, CPU):")
    for name in timed:
        wall_ms, cpu_ms = (1000 * statistics.median(t[name]) for t in (per_metric, per_metric_cpu))
        print(f"  {name:14s} {wall_ms:8.1f} ms {cpu_ms:8.1f} ms")
    print("load average (1, 5, 15 min) after: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
