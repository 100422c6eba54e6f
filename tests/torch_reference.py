"""A PyTorch IFCNN written from the authors' semantics, used only as the tests' reference.

Follows the released ``Code/model.py``: each source runs separately through conv1
(after replicate padding 3) and conv2 (replicate padding 1, 3x3 conv, BatchNorm,
ReLU); the per-source features are folded pairwise with max / sum, or summed and
divided by N for mean; then conv3 and the 1x1 conv4. Inputs are NCHW tensors, one per
source.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class ReferenceConvBlock(nn.Module):
    def __init__(self, channels: int = 64):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))))


class ReferenceIFCNN(nn.Module):
    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=1, padding=0, bias=False)
        self.conv2 = ReferenceConvBlock()
        self.conv3 = ReferenceConvBlock()
        self.conv4 = nn.Conv2d(64, 3, kernel_size=1, padding=0, bias=True)

    def forward(self, *sources):
        feats = [self.conv2(self.conv1(F.pad(s, (3, 3, 3, 3), mode="replicate"))) for s in sources]
        out = feats[0]
        for f in feats[1:]:
            out = torch.max(out, f) if self.rule == "max" else out + f
        if self.rule == "mean":
            out = out / len(feats)
        return self.conv4(self.conv3(out))


def load_reference(pth_path, rule: str) -> ReferenceIFCNN:
    """The reference model with a released state dict, in eval mode."""
    model = ReferenceIFCNN(rule)
    model.load_state_dict(torch.load(pth_path, map_location="cpu", weights_only=True))
    return model.eval()


def run_reference(model: ReferenceIFCNN, sources_nbhwc: np.ndarray) -> np.ndarray:
    """Runs stacked NHWC sources ``(N, B, H, W, 3)``; returns ``(B, H, W, 3)`` float32."""
    with torch.no_grad():
        tensors = [torch.from_numpy(np.ascontiguousarray(s)).permute(0, 3, 1, 2) for s in sources_nbhwc]
        return model(*tensors).permute(0, 2, 3, 1).numpy()
