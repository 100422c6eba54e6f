"""Fuses one synthetic large gray pair in a fresh process and prints wall time and peak
resident memory as one JSON line. Run by ``bench/run.py`` (case ``large_pair``) so that
the peak belongs to this fusion alone.

    python bench/large_pair.py --size 8192 [--path recipe|forward] [--tile N] [--device cpu]
    python bench/large_pair.py --path stream --size 8192 16384 --model IFCNN-MAX.pth [--layout strips]

``recipe`` is the user's path, ``ifcnn_jax.fuse(model, [a, b], task="infrared")`` on
uint8 gray images; ``forward`` calls ``ifcnn_jax.inference.forward`` on the stacked,
normalised float32 sources, i.e. the network alone. The weights are random (MAX rule):
time and memory do not depend on their values, and torch is not imported.

``stream`` is the streamed path from disk to disk: the pair is written as uncompressed
TIFFs (``--layout contiguous``, memory-mapped; ``strips`` and ``tiles`` are
Deflate-compressed and read segment by segment), written band by band so that making
them costs little memory, into ``--workdir`` (default: a temporary folder, removed
afterwards). Then ``ifcnn-fuse --task infrared -q A.tif B.tif -o out.tif`` runs as a
child process; its wall time and peak RSS (``RUSAGE_CHILDREN``: the child alone) are
reported per size, with the load average sampled every 5 s while it ran, the cores
this process may use, and the time per megapixel (linear time: equal across sizes).
``--model`` is what ``ifcnn-fuse --model`` takes (a ``.pth`` file works offline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e9


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def _write_pair(folder: Path, size: int, layout: str, height: int | None = None) -> list[Path]:
    """Two ``height`` (default ``size``) x ``size`` uint8 gray TIFFs (smooth ramp plus
    noise, as the in-memory cases), written 1024 rows at a time."""
    import numpy as np  # noqa: PLC0415 - lazy: kept beside its use
    import tifffile  # noqa: PLC0415 - lazy: only the stream path writes TIFFs

    height = height or size
    ramp = np.linspace(0, 200, max(size, height), dtype=np.float32)
    band = 1024
    options = {
        "contiguous": {},
        "strips": {"rowsperstrip": 64, "compression": "zlib"},
        "tiles": {"tile": (256, 256), "compression": "zlib"},
    }[layout]
    paths = []
    for i in range(2):
        rng = np.random.default_rng(i)

        def rows(rng=rng):
            for top in range(0, height, band):
                part = ramp[top : min(top + band, height), None] * 0.5 + ramp[None, :size] * 0.5
                noise = rng.integers(0, 50, part.shape, dtype=np.uint8)
                yield part.astype(np.uint8) + noise

        path = folder / f"src{i}.tif"
        target = path if layout == "contiguous" else folder / f"raw{i}.tif"
        mapped = tifffile.memmap(target, shape=(height, size), dtype=np.uint8)
        for top, part in zip(range(0, height, band), rows()):
            mapped[top : top + band] = part
        mapped.flush()
        if layout != "contiguous":  # compressed copies, read from the map by tifffile
            tifffile.imwrite(path, mapped, bigtiff=height * size > 2**32 - 2**25, **options)
        del mapped
        if target != path:
            os.unlink(target)
        paths.append(path)
    return paths


def _stream(args) -> int:
    """The stream path: one fresh ``ifcnn-fuse`` child per size."""
    for size in args.size:
        folder = Path(tempfile.mkdtemp(prefix=f"large-pair-{size}-", dir=args.workdir))
        try:
            start = time.perf_counter()
            height = args.rows or size
            sources = _write_pair(folder, size, args.layout, height)
            write_s = time.perf_counter() - start
            output = folder / "fused.tif"
            command = [sys.executable, "-m", "ifcnn_jax.cli.fuse", "--task", "infrared", "-q"]
            command += ["--model", args.model, *map(str, sources), "-o", str(output)]
            if args.tile is not None:
                command += ["--tile", str(args.tile)]
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
            }
            loads, running = [], threading.Event()

            def sample(loads=loads, running=running):
                while not running.wait(5):
                    loads.append(os.getloadavg()[0])

            sampler = threading.Thread(target=sample, daemon=True)
            load_before = os.getloadavg()[0]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_before = before.ru_utime + before.ru_stime
            running.clear()
            sampler.start()
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            wall = time.perf_counter() - start
            running.set()
            sampler.join()
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            peak = children.ru_maxrss * 1024 / 1e9
            cpu = children.ru_utime + children.ru_stime - cpu_before
            record = {
                "size": size,
                "rows": height,
                "path": "stream",
                "layout": args.layout,
                "tile": args.tile,
                "exit": done.returncode,
                "wall_s": round(wall, 2),
                "s_per_megapixel": round(wall / (size * height / 1e6), 4),
                # CPU seconds of the child: on a shared machine a steadier measure of work
                "cpu_s": round(cpu, 1),
                "cpu_s_per_megapixel": round(cpu / (size * height / 1e6), 4),
                "peak_rss_gb": round(peak, 3),  # the largest child so far: run sizes in rising order
                "input_bytes": sum(p.stat().st_size for p in sources),
                "output_bytes": output.stat().st_size if output.exists() else None,
                "write_inputs_s": round(write_s, 1),
                "load_before": round(load_before, 2),
                "load_mean_during": round(sum(loads) / len(loads), 2) if loads else None,
                "load_max_during": round(max(loads), 2) if loads else None,
                "cores": len(os.sched_getaffinity(0)),
            }
            if done.returncode != 0:
                record["stderr"] = done.stderr.strip().splitlines()[-1:]
            print(json.dumps(record), flush=True)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[8192], help="image side(s) in pixels")
    parser.add_argument("--path", choices=("recipe", "forward", "stream"), default="recipe")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: automatic)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--model", default="IFCNN-MAX", help="stream path: ifcnn-fuse's --model")
    parser.add_argument("--layout", choices=("contiguous", "strips", "tiles"), default="contiguous")
    parser.add_argument("--workdir", default=None, help="stream path: where the TIFFs go (default: /tmp)")
    parser.add_argument("--keep", action="store_true", help="stream path: keep the TIFFs")
    parser.add_argument(
        "--rows",
        type=int,
        default=None,
        help="stream path: image height (default: --size, square); a wide, short image "
        "measures the memory a width needs in less time",
    )
    args = parser.parse_args(argv)
    if args.path == "stream":
        return _stream(args)
    if len(args.size) != 1:
        parser.error("the recipe and forward paths take one --size")
    args.size = args.size[0]

    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    import numpy as np  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    device = jax.devices(args.device)[0]
    jax.config.update("jax_default_device", device)

    import ifcnn_jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from ifcnn_jax.inference import forward  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from ifcnn_jax.model import new_ifcnn  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    model = new_ifcnn("max", seed=0)
    model.eval()
    rng = np.random.default_rng(0)
    # Smooth content plus noise, as uint8 gray: the values do not change the cost.
    ramp = np.linspace(0, 200, args.size, dtype=np.float32)
    images = [
        (ramp[:, None] * 0.5 + ramp[None, :] * 0.5).astype(np.uint8)
        + rng.integers(0, 50, (args.size, args.size), dtype=np.uint8)
        for _ in range(2)
    ]
    baseline = _rss_gb()

    start = time.perf_counter()
    if args.path == "recipe":
        fused = ifcnn_jax.fuse(model, images, task="infrared", tile=args.tile)
    else:
        stacked = np.empty((2, 1, args.size, args.size, 3), np.float32)
        for i, image in enumerate(images):
            stacked[i, 0] = (image.astype(np.float32) / 255)[:, :, None]
        fused = np.asarray(forward(model, stacked, tile=args.tile))
    wall = time.perf_counter() - start
    print(
        json.dumps(
            {
                "size": args.size,
                "path": args.path,
                "tile": args.tile,
                "device": str(device),
                "wall_s": wall,
                "peak_rss_gb": _peak_rss_gb(),
                "rss_before_gb": baseline,
                "output_shape": list(fused.shape),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
