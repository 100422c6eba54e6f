"""Multi-focus quality: ifcnn-jax (released weights, own weights, decision map) against
classical tools, on the Lytro pairs of the release and on ground-truth pairs made from
held-out photos.

    python bench/compare_multifocus.py --tools-python TOOLS_VENV/bin/python \\
        [--own-model MODEL] [--heldout PHOTOS_DIR] [--json FILE]

The classical tools are run through their command lines from a separate environment
(``--tools-python``: a venv with ``pip install openfocus focusweave``); they are never
imported here nor dependencies of this project. OpenCV's Mertens exposure fusion
(``cv2.createMergeMertens``, contrast weight only) comes from this environment.

Scores. On Lytro (no ground truth): Qabf, VIF, FMI_pixel, Qy and Qcb of
``ifcnn_jax.metrics`` (SSIM and PSNR against the sources reward blur: the plain
average wins them, so they are not used to rank). On the ground-truth set: PSNR and
SSIM of the luminance against the sharp photo. The ground-truth pairs are synthesised
with ``ifcnn_jax.data.synthesis`` (random smooth/shape focus maps, blur radii 2-8, 256 px
crops, seed 2027) from the photos of ``--heldout`` (default: scikit-image's chelsea and
coffee, which no setting of this project was chosen on).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ifcnn_jax  # noqa: E402
from ifcnn_jax import metrics  # noqa: E402
from ifcnn_jax.data import synthesis  # noqa: E402
from ifcnn_jax.io.images import read_image, to_8bit, write_image  # noqa: E402
from ifcnn_jax.recipes import fuse_with_focus_map  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LYTRO_METRICS = ("Qabf", "VIF", "FMI_pixel", "Qy", "Qcb")
TOOL_METHODS = {
    "openfocus StackMFF-V3": ["--method", "stackmffv3", "--cpu"],
    "openfocus guided filter": ["--method", "guided_filter"],
    "openfocus DCT": ["--method", "dct"],
}


def release_dir() -> Path:
    return REPO.parent / "shared" / "ifcnn-release"


def run_tool(tools_python: str, tool: str, args: list[str], sources: list[Path], out: Path) -> np.ndarray:
    binary = str(Path(tools_python).parent / tool)
    if tool == "openfocus":
        command = [binary, "--input", *map(str, sources), "--output", str(out), "--align", "none", *args]
    else:  # focusweave stacks a folder
        folder = out.parent / f"{out.stem}-stack"
        folder.mkdir(exist_ok=True)
        for k, src in enumerate(sources):
            (folder / f"{k}{src.suffix}").write_bytes(src.read_bytes())
        command = [binary, str(folder), "--output", str(out), "--no-align", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{tool} failed: {done.stderr.strip()[-300:]}")
    return read_image(out)


def mertens(sources: list[np.ndarray]) -> np.ndarray:
    merge = cv2.createMergeMertens(contrast_weight=1.0, saturation_weight=0.0, exposure_weight=0.0)
    fused = merge.process([cv2.cvtColor(s, cv2.COLOR_RGB2BGR) for s in sources])
    return cv2.cvtColor(np.clip(fused * 255 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)


def methods(models: dict, tools_python: str | None, work: Path):
    """name -> fuse(list of uint8 RGB arrays, list of their files) -> uint8 RGB."""
    table = {
        "source average": lambda images, files: (
            np.mean(np.stack(images).astype(np.float32), 0).round().astype(np.uint8)
        ),
        "OpenCV Mertens (contrast)": lambda images, files: mertens(images),
    }
    for label, model in models.items():
        table[f"{label}, network output"] = lambda images, files, m=model: ifcnn_jax.fuse(m, images)
        table[f"{label}, decision map"] = lambda images, files, m=model: fuse_with_focus_map(m, images)[0]
    if tools_python:
        for label, args in TOOL_METHODS.items():
            table[label] = lambda images, files, a=args: run_tool(
                tools_python, "openfocus", a, files, work / f"of-{time.monotonic_ns()}.png"
            )
        table["focusweave"] = lambda images, files: run_tool(
            tools_python, "focusweave", [], files, work / f"fw-{time.monotonic_ns()}.png"
        )
    return table


def ground_truth_pairs(heldout: Path | None, work: Path) -> list[tuple[list[Path], np.ndarray]]:
    if heldout:
        photos = [read_image(p) for p in sorted(heldout.iterdir()) if p.suffix.lower() in (".png", ".jpg")]
    else:
        import skimage.data  # noqa: PLC0415 - lazy: only the default held-out photos need it

        photos = [skimage.data.chelsea(), skimage.data.coffee()]
    pairs = []
    for i, photo in enumerate(photos):
        for j in range(3):
            example = synthesis.synthesize_example(
                synthesis.to_rgb(photo).astype(np.uint8),
                rng=np.random.default_rng([2027, i, j]),
                crop_size=256,
                radius_range=(2, 8),
            )
            files = [
                write_image(work / f"gt{i}-{j}-{k}.png", to_8bit(s)) for k, s in enumerate(example.sources)
            ]
            pairs.append((files, to_8bit(example.target)))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tools-python", help="python of the venv with openfocus and focusweave")
    parser.add_argument("--own-model", help="this project's trained multi-focus model")
    parser.add_argument("--heldout", type=Path, help="folder of held-out sharp photos")
    parser.add_argument("--json", help="also write the scores here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ifcnn-compare-"))
    models = {"IFCNN-MAX (released)": ifcnn_jax.load(str(release_dir() / "snapshots" / "IFCNN-MAX.pth"))}
    if args.own_model:
        models["ifcnn-jax own weights"] = ifcnn_jax.load(args.own_model)
    table = methods(models, args.tools_python, work)
    cmf = release_dir() / "datasets" / "CMFDataset"
    lytro = [[cmf / f"lytro-{i:02d}-{s}.jpg" for s in "AB"] for i in range(1, 21)]
    gt = ground_truth_pairs(args.heldout, work)
    scores: dict[str, dict[str, float]] = {}
    for name, fuse in table.items():
        start = time.perf_counter()
        rows = []
        for files in lytro:
            images = [read_image(f) for f in files]
            rows.append(metrics.evaluate(images, fuse(images, files), names=list(LYTRO_METRICS)))
        result = {m: statistics.mean(r[m] for r in rows) for m in LYTRO_METRICS}
        gt_rows = []
        for files, target in gt:
            images = [read_image(f) for f in files]
            gt_rows.append(
                metrics.evaluate(
                    images, fuse(images, files), reference=target, names=["PSNR_ref", "SSIM_ref"]
                )
            )
        result.update({m: statistics.mean(r[m] for r in gt_rows) for m in ("PSNR_ref", "SSIM_ref")})
        result["seconds"] = time.perf_counter() - start
        scores[name] = result
        print(name, {k: round(v, 4) for k, v in result.items()}, flush=True)
    header = "| method | " + " | ".join([*LYTRO_METRICS, "GT PSNR dB", "GT SSIM"]) + " |"
    print("\n" + header + "\n|" + " --- |" * (len(LYTRO_METRICS) + 3))
    for name, result in scores.items():
        cells = [f"{result[m]:.3f}" for m in LYTRO_METRICS] + [
            f"{result['PSNR_ref']:.2f}",
            f"{result['SSIM_ref']:.4f}",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
