"""The PyTorch anchor of ``bench/cli_latency.py``: what a PyTorch user's end-to-end
script does for one multi-focus pair (import torch, load the released ``.pth``, the
demo's recipe, write a PNG).

    python bench/torch_fuse.py IFCNN-MAX.pth A.jpg B.jpg OUT.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convert.torch_reference import load_reference  # noqa: E402

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def main(weights: str, a: str, b: str, out: str) -> int:
    torch.set_grad_enabled(False)
    model = load_reference(weights, "max")
    tensors = []
    for path in (a, b):
        unit = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        normalised = (unit - IMAGENET_MEAN) / IMAGENET_STD
        tensors.append(torch.from_numpy(normalised).permute(2, 0, 1)[None])
    with torch.inference_mode():
        fused = model(*tensors)[0].permute(1, 2, 0).numpy()
    unit = np.clip(fused * IMAGENET_STD + IMAGENET_MEAN, 0, 1)
    Image.fromarray((unit * 255).astype(np.uint8)).save(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
