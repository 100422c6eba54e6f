"""IFCNN in JAX against the PyTorch reference, side by side on the same machine.

    python bench/run.py [--device cpu|gpu] [--json FILE] [--quick] [--cases a,b]

Cases (see the README's performance table and bench/NOTES.md):
  fuse_pair   one 520x520 RGB pair, MAX model, float32, batch 1 (model time only)
  fuse_batch  8 pairs of 256x256
  train_step  one training step, batch 8, 128x128 crops, pixel + perceptual loss: the
              project's train step (train.step.make_train_step), run on the CPU in a
              worker process with the settings that `python -m train.main` applies to
              itself (one XLA CPU device per core, malloc keeping freed memory; see
              train/main.py), so that it measures what training users get;
              --keep-freed-memory gives the PyTorch side the same allocator settings
  large_pair  a synthetic 8192x8192 gray pair: wall time and peak resident memory,
              in a fresh process (PyTorch cannot hold this image; no ratio)
  fuse_big    one 2048x2048 RGB pair (not run by default: for accelerators)
  align_pair  registering one 520x520 pair (ifcnn_jax.align, homography), as
              ifcnn-fuse --align does before fusing; OpenCV only, no PyTorch side
              (compare with fuse_pair from the same run)

PyTorch runs in every variant of bench/torch_variants.py (eager, inference_mode,
channels_last, TorchScript freeze, oneDNN graph fusion, torch.compile with and without
freezing, bf16 autocast; on CPU each also in a worker process with train.main's
allocator settings, "+keep_freed"). Each variant is first checked against the float32
reference (max abs diff <= 1e-4 on 0-1 outputs); the fastest that agrees (median wall
time) is the anchor of the ratios, named in the report as ``torch_anchor``, and the
ratio against the plain ``default`` variant is reported beside it. ``--jax-attempts``
adds bench-only JAX paths (bench/attempts.py) beside the library.

All runners (JAX, every PyTorch variant) are interleaved, one repetition each per round
in rotating order, after warm-up and compilation, so that load from other processes
hits all alike; the report gives medians of wall and CPU time (``time.process_time``;
a worker's own) and the ratio JAX / PyTorch (below 1: JAX is faster). The load average
is recorded before and after: compare ratios, not absolute times, from a busy machine.
For a 1-core comparison run it under ``taskset -c 0``: PyTorch then gets 1 thread and
XLA one core.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CASES = ("fuse_pair", "fuse_batch", "train_step", "large_pair", "align_pair", "fuse_big")
DEFAULT_CASES = CASES[:5]  # fuse_big (one 2048x2048 pair) is for accelerators: --cases fuse_big
FUSION_CASES = {
    "fuse_pair": ("one 520x520 RGB pair, MAX, float32, batch 1", 1, 520),
    "fuse_batch": ("8 pairs of 256x256 RGB, MAX, float32", 8, 256),
    "fuse_big": ("one 2048x2048 RGB pair, MAX, float32, batch 1", 1, 2048),
}


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1e6, 1)
    except OSError:
        pass
    return None


def machine_info() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gb": _memory_gb(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def versions() -> dict:
    import flax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import jaxlib  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import numpy  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import optax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }


def _clock(run) -> tuple[float, float]:
    """(wall, CPU) seconds of one repetition. A runner in a worker process returns its
    own clocks as a dict; otherwise this process's are read."""
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    result = run()
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    if isinstance(result, dict) and "cpu_s" in result:
        return result["wall_s"], result["cpu_s"]
    return wall, cpu


def interleaved(runs: dict, reps: int, warmup: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU times of ``reps`` rounds over all ``runs`` (name -> callable), one
    repetition of each per round, after ``warmup`` rounds. The order within a round
    rotates, so that no runner always follows the same one."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    times = {name: {"wall": [], "cpu": []} for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = _clock(runs[name])
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return times


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def timed_case(case, reps: int, warmup: int) -> dict:
    """Times JAX and every PyTorch variant of ``case`` interleaved; the anchor is the
    fastest PyTorch variant (median wall time) among those that agree with the
    reference."""
    jax_names = list(case.jax_runs)
    torch_names = list(case.torch_runs)
    runs = {f"jax:{n}": r for n, r in case.jax_runs.items()}
    runs.update({f"torch:{n}": r for n, r in case.torch_runs.items()})
    times = interleaved(runs, reps, warmup)
    main_jax = jax_names[0]
    jax_t = times[f"jax:{main_jax}"]
    jax_s, jax_cpu_s = _median(jax_t["wall"]), _median(jax_t["cpu"])
    variants = {}
    for name, info in case.torch_info.items():
        entry = dict(info)
        t = times.get(f"torch:{name}")
        if t is not None:
            entry.update(
                median_s=_median(t["wall"]),
                median_cpu_s=_median(t["cpu"]),
                times=t["wall"],
                cpu_times=t["cpu"],
            )
            if jax_s:
                entry["jax_ratio"] = jax_s / entry["median_s"]
        variants[name] = entry
    eligible = [n for n in torch_names if variants.get(n, {}).get("parity", True)]
    anchor = min(eligible, key=lambda n: variants[n]["median_s"]) if eligible else None
    # On a loaded machine CPU time is the steadier clock: the fastest by CPU time too.
    anchor_cpu = min(eligible, key=lambda n: variants[n]["median_cpu_s"]) if eligible else None
    torch_s = variants[anchor]["median_s"] if anchor else None
    default_s = variants.get("default", {}).get("median_s")
    result = {
        "description": case.description,
        "jax_s": jax_s,
        "jax_cpu_s": jax_cpu_s,
        "torch_anchor": anchor,
        "torch_s": torch_s,
        "torch_cpu_s": variants[anchor]["median_cpu_s"] if anchor else None,
        "ratio": jax_s / torch_s if torch_s else None,
        "torch_anchor_by_cpu": anchor_cpu,
        "ratio_cpu": jax_cpu_s / variants[anchor_cpu]["median_cpu_s"] if anchor_cpu else None,
        "torch_default_s": default_s,
        "ratio_vs_default": jax_s / default_s if default_s else None,
        "jax_times": jax_t["wall"],
        "jax_cpu_times": jax_t["cpu"],
        "torch_variants": variants,
    }
    if len(jax_names) > 1:
        result["jax_variants"] = {
            n: dict(
                case.jax_info.get(n, {}),
                median_s=_median(times[f"jax:{n}"]["wall"]),
                median_cpu_s=_median(times[f"jax:{n}"]["cpu"]),
                times=times[f"jax:{n}"]["wall"],
            )
            for n in jax_names
        }
    if case.megapixels:
        result["megapixels_per_s"] = {
            "jax": case.megapixels / jax_s,
            "torch": case.megapixels / torch_s if torch_s else None,
        }
    if case.images:
        result["images_per_s"] = {
            "jax": case.images / jax_s,
            "torch": case.images / torch_s if torch_s else None,
        }
    if case.max_abs_diff is not None:
        result["max_abs_diff_vs_torch"] = case.max_abs_diff
    return result


def large_pair(size: int, device: str, paths: list[str]) -> dict:
    """Runs bench/large_pair.py once per path, each in a fresh process."""
    runs = {}
    for path in paths:
        command = [
            sys.executable,
            str(REPO_ROOT / "bench" / "large_pair.py"),
            "--size",
            str(size),
            "--path",
            path,
            "--device",
            device,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            runs[path] = {"error": done.stderr.strip().splitlines()[-1:] or ["failed"]}
            continue
        runs[path] = json.loads(done.stdout.strip().splitlines()[-1])
    main = runs.get("recipe") or runs.get("forward") or {}
    jax_s = main.get("wall_s")
    result = {
        "description": f"synthetic {size}x{size} gray pair, wall time and peak RSS "
        f"(fresh process, tiling automatic); PyTorch not run",
        "jax_s": jax_s,
        "torch_s": None,
        "ratio": None,
        "peak_rss_gb": main.get("peak_rss_gb"),
        "runs": runs,
    }
    if jax_s:
        result["megapixels_per_s"] = {"jax": size * size / 1e6 / jax_s, "torch": None}
    return result


def markdown_table(report: dict) -> str:
    lines = [
        "| case | JAX (s) | PyTorch anchor | PyTorch (s) | JAX / PyTorch | same, CPU time "
        "| JAX / PyTorch default | throughput (JAX) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in report["cases"].items():
        if "jax_s" not in r or r["jax_s"] is None:
            lines.append(f"| `{name}` | failed | | | | | | |")
            continue
        torch_s = f"{r['torch_s']:.3f}" if r.get("torch_s") else "-"
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "-"
        ratio_default = f"{r['ratio_vs_default']:.2f}" if r.get("ratio_vs_default") else "-"
        ratio_cpu = f"{r['ratio_cpu']:.2f}" if r.get("ratio_cpu") else "-"
        anchor = f"`{r['torch_anchor']}`" if r.get("torch_anchor") else "-"
        if "images_per_s" in r:
            throughput = f"{r['images_per_s']['jax']:.1f} images/s"
        elif "megapixels_per_s" in r:
            throughput = f"{r['megapixels_per_s']['jax']:.2f} MP/s"
        else:
            throughput = ""
        if r.get("peak_rss_gb") is not None:
            throughput += f", peak RSS {r['peak_rss_gb']:.2f} GB"
        cells = (
            f"`{name}`",
            f"{r['jax_s']:.3f}",
            anchor,
            torch_s,
            ratio,
            ratio_cpu,
            ratio_default,
            throughput,
        )
        lines.append("| " + " | ".join(cells) + " |")
    m = report["machine"]
    lines.append("")
    lines.append(
        f"{report['date'][:10]}, {report['device']}: {m['cpu']}, {m['cores']} cores; "
        f"jax {report['versions']['jax']}, torch {report['versions']['torch']} "
        f"({report['settings']['torch_threads']} threads); load average "
        f"{report['conditions']['loadavg_start'][0]:.1f} -> "
        f"{report['conditions']['loadavg_end'][0]:.1f}. The anchor is the fastest PyTorch "
        f"variant that agrees with the reference (max abs diff <= 1e-4 on 0-1 outputs)."
    )
    variant_lines = []
    for name, r in report["cases"].items():
        for kind, table in (("torch", r.get("torch_variants")), ("jax", r.get("jax_variants"))):
            for variant, v in (table or {}).items():
                median = f"{v['median_s']:.3f}" if v.get("median_s") is not None else "-"
                cpu = f"{v['median_cpu_s']:.3f}" if v.get("median_cpu_s") is not None else "-"
                diff = v.get("max_abs_diff_vs_reference")
                diff = f"{diff:.1e}" if diff is not None else "-"
                mark = " (anchor)" if kind == "torch" and variant == r.get("torch_anchor") else ""
                note = v.get("error", "")
                variant_lines.append(
                    f"| `{name}` | {kind} `{variant}`{mark} | {median} | {cpu} | {diff} | {note} |"
                )
    if variant_lines:
        lines += [
            "",
            "| case | variant | median wall (s) | median CPU (s) | max abs diff (0-1) | note |",
            "| --- | --- | --- | --- | --- | --- |",
            *variant_lines,
        ]
    return "\n".join(lines)


class TrainStepWorker:
    """The JAX train step in a worker process (``--worker train_step``), one
    repetition per call, so that it runs under ``train.main``'s process settings while
    the PyTorch repetitions still interleave with it."""

    def __init__(self, device: str):
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            "train_step",
            "--device",
            device,
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
        )
        self.info = self._reply()
        self.times: list[dict] = []  # the worker's own wall and CPU time per repetition

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"train_step worker exited with {self.process.wait()}")
        return json.loads(line)

    def __call__(self) -> dict:
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        self.times.append(self._reply())
        return self.times[-1]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def train_step_worker(device: str) -> int:
    """Worker side of :class:`TrainStepWorker`: reads ``run`` lines, answers JSON."""
    from train.process import keep_freed_memory, one_cpu_device_per_core  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    # Before JAX starts, as python -m train.main does (batch 8: the case's batch).
    applied = keep_freed_memory()
    devices = one_cpu_device_per_core(8) if device == "cpu" else 1
    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    from bench.cases import jax_train_step  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    run = jax_train_step(jax.devices(device)[0])
    run()  # compile outside the timed repetitions
    print(
        json.dumps(
            {
                "ready": True,
                "keep_freed_memory": applied,
                "cpu_devices": devices,
                "devices": jax.device_count(device),
            }
        ),
        flush=True,
    )
    for line in sys.stdin:
        if line.strip() != "run":
            break
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run()
        print(
            json.dumps(
                {"wall_s": time.perf_counter() - start_wall, "cpu_s": time.process_time() - start_cpu}
            ),
            flush=True,
        )
    return 0


def _fail(message: str) -> int:
    print(f"bench/run.py: error: {message}", file=sys.stderr)
    return 2


def _torch_plans(args, threads: int):
    """``plan_for(kind)`` -> the TorchPlan for 'fusion' or 'train' cases."""
    from bench import torch_variants  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    from bench.cases import TorchPlan  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    bases = {"fusion": torch_variants.FUSION_VARIANTS, "train": torch_variants.TRAIN_VARIANTS}

    def names(text: str | None, default: tuple[str, ...]) -> tuple[str, ...]:
        if text is None:
            return default
        return tuple(n for n in text.split(",") if n and n != "none")

    def plan_for(kind: str) -> TorchPlan:
        allowed = torch_variants.DEFAULT_VARIANTS[(args.device, kind)]
        in_process = names(args.torch_variants, allowed)
        if args.torch_variants is not None:  # one list for both kinds: keep what applies
            in_process = tuple(n for n in in_process if torch_variants.split_precision(n)[0] in bases[kind])
        # The allocator worker: CPU only (CUDA has its own caching allocator), and not
        # when this process already has the settings.
        keep_freed = () if args.device != "cpu" or args.keep_freed_memory else in_process
        if args.keep_freed_variants is not None and args.device == "cpu":
            keep_freed = tuple(
                n
                for n in names(args.keep_freed_variants, ())
                if torch_variants.split_precision(n)[0] in bases[kind]
            )
        suffix = torch_variants.KEEP_FREED if args.keep_freed_memory else ""
        return TorchPlan(in_process, keep_freed, threads, suffix)

    return plan_for


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--json", metavar="FILE", help="write the full report here")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (3 instead of 10)")
    parser.add_argument(
        "--cases",
        default=",".join(DEFAULT_CASES),
        help=f"comma-separated subset of {','.join(CASES)} (default {','.join(DEFAULT_CASES)})",
    )
    parser.add_argument("--reps", type=int, help="timed repetitions per side (default 10, quick 3)")
    parser.add_argument(
        "--torch-threads", type=int, help="PyTorch intra-op threads (default: the cores available)"
    )
    parser.add_argument("--large-size", type=int, default=8192, help="side of the large pair")
    parser.add_argument(
        "--large-paths",
        default="recipe,forward",
        help="large_pair: 'recipe' (ifcnn_jax.cli.fuse), 'forward' (network only)",
    )
    parser.add_argument(
        "--train-step-in-process",
        action="store_true",
        help="train_step: run the JAX step in this process (default allocator)",
    )
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="apply train.main's allocator settings to this process too (PyTorch and the fusion cases)",
    )
    parser.add_argument(
        "--torch-variants",
        help="PyTorch variants run in this process, comma-separated (default: all for the "
        "device; see bench/torch_variants.py)",
    )
    parser.add_argument(
        "--keep-freed-variants",
        help="PyTorch variants also run in a worker process with train.main's allocator "
        "settings (default on CPU: the same as --torch-variants; 'none' for none)",
    )
    parser.add_argument(
        "--jax-attempts",
        default="",
        help="bench-only JAX fusion attempts timed beside the library (bench/attempts.py), comma-separated",
    )
    parser.add_argument("--worker", choices=("train_step",), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return train_step_worker(args.device)
    if args.keep_freed_memory:
        from train.process import keep_freed_memory  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

        if not keep_freed_memory():
            parser.error("--keep-freed-memory: not applied (not glibc, or MALLOC_*/GLIBC_TUNABLES set)")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {CASES}")
    reps = args.reps or (3 if args.quick else 10)
    warmup = 1 if args.quick else 2

    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    machine = machine_info()
    torch_threads = args.torch_threads or machine["cores"]
    torch.set_num_threads(torch_threads)
    try:
        jax_device = jax.devices(args.device)[0]
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return _fail(f"--device {args.device}: no {args.device.upper()} visible to JAX ({reason})")
    if args.device == "gpu" and not torch.cuda.is_available():
        return _fail("--device gpu: JAX sees a GPU but PyTorch does not (a CPU-only torch build?)")
    jax.config.update("jax_default_device", jax_device)
    torch_device = "cuda" if args.device == "gpu" else "cpu"
    plan_for = _torch_plans(args, torch_threads)
    jax_attempts = {}
    if args.jax_attempts:
        from bench import attempts  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

        names = [n for n in args.jax_attempts.split(",") if n]
        bad = [n for n in names if n not in attempts.FUSION_ATTEMPTS]
        if bad:
            return _fail(f"--jax-attempts: unknown {bad}; choose from {sorted(attempts.FUSION_ATTEMPTS)}")
        jax_attempts = {n: attempts.FUSION_ATTEMPTS[n] for n in names}

    from bench import cases as bench_cases  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    report = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": f"{args.device} ({jax_device.device_kind})",
        "machine": machine,
        "versions": versions(),
        "settings": {
            "reps": reps,
            "warmup": warmup,
            "torch_threads": torch_threads,
            "torch_device": torch_device,
            "keep_freed_memory_in_this_process": args.keep_freed_memory,
        },
        "conditions": {"loadavg_start": list(os.getloadavg())},
        "cases": {},
    }
    models = None
    for name in cases:
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        if name in FUSION_CASES and models is None:
            models = bench_cases.load_models(torch_device)
            report["settings"]["weights"] = models.weights
        if name in FUSION_CASES:
            description, batch, size = FUSION_CASES[name]
            case = bench_cases.fusion_case(
                name,
                description,
                models,
                2,
                batch,
                size,
                jax_device,
                torch_device,
                plan_for("fusion"),
                jax_extra={n: make(models.jax_model) for n, make in jax_attempts.items()},
            )
            try:
                report["cases"][name] = timed_case(case, reps, warmup)
            finally:
                case.close()
        elif name == "train_step":
            worker = None
            if args.device == "cpu" and not args.train_step_in_process:
                worker = TrainStepWorker(args.device)
                report["settings"]["train_step_worker"] = worker.info
            case = None
            try:
                case = bench_cases.train_step_case(
                    jax_device, torch_device, plan_for("train"), run_jax=worker
                )
                report["cases"][name] = timed_case(case, reps, warmup)
            finally:
                if case is not None:
                    case.close()
                if worker is not None:
                    worker.close()
            if worker is not None:  # the worker's own clocks, timed repetitions only
                report["cases"][name]["jax_worker_times"] = worker.times[warmup:]
        elif name == "align_pair":
            report["cases"][name] = timed_case(bench_cases.align_case(), reps, warmup)
        else:
            report["cases"][name] = large_pair(args.large_size, args.device, args.large_paths.split(","))
        r = report["cases"][name]
        if r["ratio"] is None and r.get("jax_s") is not None:
            print(f"[bench] {name}: {r['jax_s']:.3f} s", file=sys.stderr, flush=True)
        if r["ratio"] is not None:
            print(
                f"[bench] {name}: jax {r['jax_s']:.3f} s, torch {r['torch_s']:.3f} s "
                f"({r['torch_anchor']}), ratio {r['ratio']:.2f}",
                file=sys.stderr,
                flush=True,
            )
        if args.json:  # after every case, so that a run cut short keeps what it measured
            report["conditions"]["loadavg_now"] = list(os.getloadavg())
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    report["conditions"]["loadavg_end"] = list(os.getloadavg())
    report["conditions"].pop("loadavg_now", None)

    table = markdown_table(report)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
