"""The authors' demo recipes (``Code/IFCNN_Main.py``) re-expressed with PyTorch,
torchvision transforms, PIL and OpenCV, as the tests' reference for ``ifcnn_jax.cli.fuse``.

Only the decoder is shared with the code under test: each function takes the decoded
arrays (``ifcnn_jax.read_image``) and goes through PIL from there, as the demo does.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import transforms

from convert.torch_reference import ReferenceIFCNN

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def _denormalise_in_place(tensor, mean, std):
    for channel, m, s in zip(tensor, mean, std):
        channel.mul_(s).add_(m)
    return tensor


def network_to_uint8(model: ReferenceIFCNN, tensors, mean, std) -> np.ndarray:
    with torch.no_grad():
        out = model(*[t.unsqueeze(0) for t in tensors])[0]
    out = _denormalise_in_place(out, mean, std).clamp(0, 1) * 255
    return out.numpy().astype("uint8").transpose(1, 2, 0)


def reference_pair_recipe(model: ReferenceIFCNN, arrays: list[np.ndarray], colour: bool) -> np.ndarray:
    """CMF (colour, ImageNet normalisation) or IV/MD (gray, mean 0 std 1) as in the demo."""
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if colour else ([0, 0, 0], [1, 1, 1])
    to_input = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean=mean, std=std)])
    tensors = [to_input(Image.fromarray(a).convert("RGB")) for a in arrays]
    fused = network_to_uint8(model, tensors, mean, std)
    return fused if colour else cv2.cvtColor(fused, cv2.COLOR_RGB2GRAY)


def reference_exposure_recipe(model: ReferenceIFCNN, arrays: list[np.ndarray]) -> np.ndarray:
    """The demo's multi-exposure recipe (MEAN model) on RGB uint8 arrays."""
    images = [transforms.ToTensor()(Image.fromarray(a).convert("YCbCr")) for a in arrays]
    count = len(images)
    _, height, width = images[0].shape
    cbs = torch.zeros(count, height, width)
    crs = torch.zeros(count, height, width)
    lumas = []
    for k, image in enumerate(images):
        cbs[k] = image[1]
        crs[k] = image[2]
        lumas.append(image[0].unsqueeze(0).repeat(3, 1, 1))
    cbs *= 255
    crs *= 255
    cb_weight = abs(cbs - 128)
    cr_weight = abs(crs - 128)
    cb_new = sum((cbs * cb_weight) / sum(cb_weight).repeat(count, 1, 1))
    cr_new = sum((crs * cr_weight) / sum(cr_weight).repeat(count, 1, 1))
    cb_new[torch.isnan(cb_new)] = 128
    cr_new[torch.isnan(cr_new)] = 128

    fused = network_to_uint8(model, lumas, [0, 0, 0], [1, 1, 1])
    y = cv2.cvtColor(fused, cv2.COLOR_RGB2GRAY) / 255
    y = (y * 235 + (1 - y) * 16).astype("uint8")
    y = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(y)
    ycrcb = np.zeros([height, width, 3], dtype="uint8")
    ycrcb[:, :, 0] = y
    ycrcb[:, :, 1] = cr_new
    ycrcb[:, :, 2] = cb_new
    return cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB)
