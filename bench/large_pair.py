"""Fuses one synthetic large gray pair in a fresh process and prints wall time and peak
resident memory as one JSON line. Run by ``bench/run.py`` (case ``large_pair``) so that
the peak belongs to this fusion alone.

    python bench/large_pair.py --size 8192 [--path recipe|forward] [--tile N] [--device cpu]

``recipe`` is the user's path, ``ifcnn_jax.fuse(model, [a, b], task="infrared")`` on
uint8 gray images; ``forward`` calls ``ifcnn_jax.inference.forward`` on the stacked,
normalised float32 sources, i.e. the network alone. The weights are random (MAX rule):
time and memory do not depend on their values, and torch is not imported.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e9


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side in pixels")
    parser.add_argument("--path", choices=("recipe", "forward"), default="recipe")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: automatic)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)

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
