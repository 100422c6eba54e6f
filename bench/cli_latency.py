"""``cli_latency``: the wall and CPU time of one ``ifcnn-fuse`` call as a user runs it,
against a PyTorch script that does the same job end to end.

    python bench/cli_latency.py [--reps 5] [--json FILE] [--baseline DIR]

Each repetition runs, interleaved so that load from other processes hits all alike:

* ``help``: ``ifcnn-fuse --help``; ``eval_help``: ``ifcnn-eval --help``;
* ``first``: ``ifcnn-fuse`` on one 520x520 Lytro pair (release file ``lytro-01``) with
  an empty compilation cache (what a first call costs);
* ``repeat``: the same with the cache of an earlier call (what every later call costs);
* ``torch``: ``bench/torch_fuse.py``: import torch, load the released ``.pth``, fuse
  with the demo's multi-focus recipe, write the PNG (the anchor);
* with ``--baseline DIR`` (another checkout of this repository, e.g. a ``git worktree``
  of the commit before a change): ``base_first``, ``base_repeat`` and ``base_help``, the
  same calls with that checkout's ``ifcnn_jax`` (``PYTHONPATH=DIR``), so that a change
  is measured side by side with what it replaces.

The commands run as from an installed package: with their bytecode cached
(``PYTHONDONTWRITEBYTECODE`` is dropped; the bytecode goes to a temporary
``PYTHONPYCACHEPREFIX``), after one untimed round of every command.

It prints medians of the wall time and of the CPU time (user + sys of the child
process), the ratios to the PyTorch script (the issue's targets: repeat <= 0.5, first
<= 1.5, help < 0.5 s) and the load average before and after. Pin it to one core
(``taskset -c 0 python bench/cli_latency.py``) for numbers that do not depend on what
else runs. Needs the release folder (``../shared/ifcnn-release`` or
``$IFCNN_RELEASE_DIR``) and torch.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], env: dict[str, str], cwd: Path = REPO) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + sys) of one run of ``command`` in
    ``cwd`` (``python -m`` imports the package from there first)."""
    cpu_before = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])}... failed: {done.stderr.strip()[-300:]}")
    return elapsed, _children_cpu() - cpu_before


def _with_path(env: dict[str, str], code: Path) -> dict[str, str]:
    return dict(env, PYTHONPATH=os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write the report here")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="another checkout of this repository whose ifcnn-fuse is timed beside this one",
    )
    parser.add_argument(
        "--baseline-label",
        metavar="TEXT",
        help="what --baseline is, for the report (default: its folder's name; no machine paths)",
    )
    args = parser.parse_args(argv)
    release = release_dir()
    pair = [str(release / "datasets" / "CMFDataset" / f"lytro-01-{s}.jpg") for s in "AB"]
    weights = str(release / "snapshots" / "IFCNN-MAX.pth")
    work = Path(tempfile.mkdtemp(prefix="ifcnn-cli-latency-"))
    fuse = [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "multifocus", "--model", weights, *pair]
    help_cmd = [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--help"]
    eval_help = [sys.executable, "-m", "ifcnn_jax.cli.evaluate", "--help"]
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    clean["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    ours = _with_path(clean, REPO)
    variants = {"": (ours, REPO)}
    if args.baseline:
        base = Path(args.baseline).resolve()
        variants["base_"] = (_with_path(clean, base), base)
    warm = {}
    for prefix, (env, code) in variants.items():
        warm[prefix] = dict(env, IFCNN_COMPILATION_CACHE=str(work / f"{prefix}warm-cache"))
        # Fills the warm cache.
        timed([*fuse, "-o", str(work / f"{prefix}warm.png"), "-q"], warm[prefix], code)
    keys = ["torch", "first", "repeat", "help", "eval_help"]
    if args.baseline:
        keys += ["base_first", "base_repeat", "base_help"]
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}

    def record(key: str, command: list[str], env: dict[str, str], code: Path = REPO) -> None:
        w, c = timed(command, env, code)
        wall[key].append(w)
        cpu[key].append(c)

    load_before = os.getloadavg()
    for rep in range(-1, args.reps):  # round -1: untimed, fills the bytecode cache
        for prefix, (env, code) in variants.items():
            cold = dict(env, IFCNN_COMPILATION_CACHE=str(work / f"{prefix}cold-{rep}"))
            first_cmd = [*fuse, "-o", str(work / f"{prefix}first{rep}.png"), "-q"]
            record(f"{prefix}first", first_cmd, cold, code)
            repeat_cmd = [*fuse, "-o", str(work / f"{prefix}repeat{rep}.png"), "-q"]
            record(f"{prefix}repeat", repeat_cmd, warm[prefix], code)
            record(f"{prefix}help", help_cmd, env, code)
        record(
            "torch",
            [sys.executable, "bench/torch_fuse.py", weights, *pair, str(work / f"torch{rep}.png")],
            ours,
        )
        record("eval_help", eval_help, ours)
    outputs = {p.name: p.read_bytes() for p in work.glob("*.png") if not p.name.startswith("torch")}
    identical = len(set(outputs.values())) == 1
    for series in (*wall.values(), *cpu.values()):
        del series[0]  # round -1
    medians = {k: statistics.median(v) for k, v in wall.items()}
    cpu_medians = {k: statistics.median(v) for k, v in cpu.items()}
    ratio_keys = [k for k in keys if k.endswith(("first", "repeat"))]
    report = {
        "case": "cli_latency",
        "reps": args.reps,
        "affinity": sorted(os.sched_getaffinity(0)),
        "median_s": medians,
        "median_cpu_s": cpu_medians,
        "ratio_to_torch": {k: medians[k] / medians["torch"] for k in ratio_keys},
        "cpu_ratio_to_torch": {k: cpu_medians[k] / cpu_medians["torch"] for k in ratio_keys},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "times_s": wall,
        "cpu_s": cpu,
        "baseline": (args.baseline_label or Path(args.baseline).name) if args.baseline else None,
        "ifcnn_outputs_identical": identical,
    }
    print(f"cli_latency, {args.reps} interleaved repetitions, medians (wall / CPU seconds):")
    for key in keys:
        ratio = (
            f"  ({medians[key] / medians['torch']:.2f}x / {cpu_medians[key] / cpu_medians['torch']:.2f}x "
            "the PyTorch script)"
            if key in ratio_keys
            else ""
        )
        print(f"  {key:11s} {medians[key]:6.2f} s / {cpu_medians[key]:6.2f} s{ratio}")
    print(
        f"  load average before {load_before[0]:.2f}, after {report['load_average_after'][0]:.2f}; "
        f"CPUs {report['affinity']}; every ifcnn-fuse output identical: {identical}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
