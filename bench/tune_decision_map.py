"""Choose the decision-map settings on synthetic pairs with ground truth (never on a test set).

    python bench/tune_decision_map.py --photos DEV_PHOTOS --model IFCNN_MAX.pth \\
        [--per-photo 6] [--seed 31] [--top 10]

Makes ``--per-photo`` pairs per photo of ``--photos`` (256 px crops, random smooth/shape
focus maps, blur radii 2-8, ``ifcnn_jax.data.synthesis`` with ``example_rng(seed, i)``),
fuses each once with the network, then scores decision-map fusion
(``ifcnn_jax.decision_map.fuse_by_decision_map``) for every combination of the grid by
the luminance PSNR of the 8-bit result against the sharp photo, averaged over pairs.
Prints the network alone, the current defaults, and the best combinations. The defaults
of ``DecisionMapSettings`` were chosen this way on the four dev photos of
docs/training_notes.md (seeds 31 and 77).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

import ifcnn_jax
from ifcnn_jax.data import synthesis
from ifcnn_jax.data.photos import FolderCollection
from ifcnn_jax.data.synthesis import example_rng
from ifcnn_jax.decision_map import DecisionMapSettings, fuse_by_decision_map, luminance
from ifcnn_jax.io.images import to_8bit

GRID = {
    "window": (1, 2, 3),
    "min_area": (0.001, 0.003, 0.01),
    "guide_radius": (0, 1, 2, 3),
    "guide_eps": (1e-4, 1e-3, 1e-2),
}


def luminance_psnr(image: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB of the 8-bit-rounded BT.601 luminance of two RGB images on 0-1."""
    a = np.round(luminance(image) * 255.0)
    b = np.round(luminance(target) * 255.0)
    mse = max(float(np.mean((a - b) ** 2)), 1e-10)
    return 10.0 * np.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", required=True, help="folder of sharp photos (not a test set)")
    parser.add_argument("--model", default="IFCNN-MAX", help="the multi-focus network")
    parser.add_argument("--per-photo", type=int, default=6)
    parser.add_argument("--seed", type=int, default=31)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()

    photos = FolderCollection(args.photos, None)
    model = ifcnn_jax.load(args.model)
    pairs = []
    for i in range(args.per_photo * len(photos)):
        photo = photos[i % len(photos)]
        example = synthesis.synthesize_example(
            photo.image, None, rng=example_rng(args.seed, i), crop_size=256
        )
        sources = [to_8bit(s).astype(np.float32) / 255.0 for s in example.sources]
        target = to_8bit(example.target).astype(np.float32) / 255.0
        network = np.asarray(ifcnn_jax.fuse(model, sources, task="multifocus"), np.float32)
        pairs.append((sources, target, network))

    def score(settings: DecisionMapSettings) -> float:
        return float(
            np.mean([luminance_psnr(fuse_by_decision_map(n, s, settings)[0], t) for s, t, n in pairs])
        )

    print(f"{len(pairs)} pairs from {len(photos)} photos, seed {args.seed}")
    print(f"network output alone: {np.mean([luminance_psnr(n, t) for _, t, n in pairs]):.2f} dB")
    print(f"defaults {DecisionMapSettings()}: {score(DecisionMapSettings()):.2f} dB")
    results = []
    for values in itertools.product(*GRID.values()):
        settings = DecisionMapSettings(**dict(zip(GRID, values)))
        results.append((score(settings), settings))
    results.sort(key=lambda r: -r[0])
    for psnr, settings in results[: args.top]:
        print(f"{psnr:.2f} dB  {settings}")


if __name__ == "__main__":
    main()
