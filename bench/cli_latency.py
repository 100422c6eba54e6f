"""``cli_latency``: the wall time of one ``ifcnn-fuse`` call as a user runs it, against
a PyTorch script that does the same job end to end.

    python bench/cli_latency.py [--reps 5] [--json FILE]

Each repetition runs, interleaved so that load from other processes hits all alike:

* ``help``: ``ifcnn-fuse --help``;
* ``first``: ``ifcnn-fuse`` on one 520x520 Lytro pair (release file ``lytro-01``) with
  an empty compilation cache (what a first call costs);
* ``repeat``: the same with the cache of an earlier call (what every later call costs);
* ``torch``: ``bench/torch_fuse.py``: import torch, load the released ``.pth``, fuse
  with the demo's multi-focus recipe, write the PNG (the anchor).

It prints medians, the ratios to the PyTorch script (the issue's targets: repeat <=
0.5, first <= 1.5, help < 0.5 s) and the load average before and after. Needs the
release folder (``../shared/ifcnn-release`` or ``$IFCNN_RELEASE_DIR``) and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def release_dir() -> Path:
    env = os.environ.get("IFCNN_RELEASE_DIR")
    return Path(env) if env else REPO.parent / "shared" / "ifcnn-release"


def wall(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed: {done.stderr.strip()[-300:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    release = release_dir()
    pair = [str(release / "datasets" / "CMFDataset" / f"lytro-01-{s}.jpg") for s in "AB"]
    weights = str(release / "snapshots" / "IFCNN-MAX.pth")
    work = Path(tempfile.mkdtemp(prefix="ifcnn-cli-latency-"))
    fuse = [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model", weights, *pair]
    warm_env = dict(os.environ, IFCNN_COMPILATION_CACHE=str(work / "warm-cache"))
    wall([*fuse, "-o", str(work / "warm.png"), "-q"], warm_env)  # fills the warm cache
    times: dict[str, list[float]] = {"help": [], "first": [], "repeat": [], "torch": []}
    load_before = os.getloadavg()
    for rep in range(args.reps):
        cold_env = dict(os.environ, IFCNN_COMPILATION_CACHE=str(work / f"cold-{rep}"))
        times["first"].append(wall([*fuse, "-o", str(work / f"first{rep}.png"), "-q"], cold_env))
        times["repeat"].append(wall([*fuse, "-o", str(work / f"repeat{rep}.png"), "-q"], warm_env))
        times["torch"].append(
            wall([sys.executable, "bench/torch_fuse.py", weights, *pair, str(work / f"torch{rep}.png")],
                 dict(os.environ))
        )  # fmt: skip
        times["help"].append(wall([sys.executable, "-m", "ifcnn_jax.cli.fuse", "--help"], dict(os.environ)))
    medians = {k: statistics.median(v) for k, v in times.items()}
    report = {
        "case": "cli_latency",
        "reps": args.reps,
        "median_s": medians,
        "ratio_to_torch": {k: medians[k] / medians["torch"] for k in ("first", "repeat")},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "times_s": times,
    }
    print(f"cli_latency, {args.reps} interleaved repetitions, median wall seconds:")
    for key in ("torch", "first", "repeat", "help"):
        ratio = (
            f" ({medians[key] / medians['torch']:.2f}x the PyTorch script)"
            if key in ("first", "repeat")
            else ""
        )
        print(f"  {key:7s} {medians[key]:6.2f} s{ratio}")
    print(f"  load average before {load_before[0]:.2f}, after {report['load_average_after'][0]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
