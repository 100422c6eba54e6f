"""The one PyTorch IFCNN of the project, written from the authors' semantics: the
reference of the converter's ``--verify``, of the parity tests and of ``bench/``.

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


def reference_from_state(state: dict[str, np.ndarray], rule: str) -> ReferenceIFCNN:
    """The reference model holding a released state dict given as NumPy arrays (eval mode)."""
    model = ReferenceIFCNN(rule)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return model.eval()


def run_reference(model: ReferenceIFCNN, sources_nbhwc: np.ndarray) -> np.ndarray:
    """Runs stacked NHWC sources ``(N, B, H, W, 3)``; returns ``(B, H, W, 3)`` float32."""
    with torch.no_grad():
        tensors = [torch.from_numpy(np.ascontiguousarray(s)).permute(0, 3, 1, 2) for s in sources_nbhwc]
        return model(*tensors).permute(0, 2, 3, 1).numpy()


def random_reference(rule: str, seed: int) -> ReferenceIFCNN:
    """A randomly initialised reference model with non-trivial BatchNorm statistics and
    affine parameters (the defaults 0/1 would hide layout mistakes)."""
    torch.manual_seed(seed)
    model = ReferenceIFCNN(rule)
    with torch.no_grad():
        for block in (model.conv2, model.conv3):
            block.bn.running_mean.uniform_(-0.5, 0.5)
            block.bn.running_var.uniform_(0.5, 2.0)
            block.bn.weight.uniform_(0.5, 1.5)
            block.bn.bias.uniform_(-0.5, 0.5)
    return model


def params_from_reference(reference: ReferenceIFCNN) -> dict:
    """The reference's weights in ifcnn_jax's parameter tree, mapped here independently of
    the converter (OIHW -> HWIO; BatchNorm weight/bias/running stats -> scale/bias/mean/var)."""
    w = {k: v.detach().numpy().copy() for k, v in reference.state_dict().items()}

    def hwio(a):
        return np.transpose(a, (2, 3, 1, 0))

    def block(n):
        return {
            "conv": {"kernel": hwio(w[f"{n}.conv.weight"])},
            "bn": {
                "scale": w[f"{n}.bn.weight"],
                "bias": w[f"{n}.bn.bias"],
                "mean": w[f"{n}.bn.running_mean"],
                "var": w[f"{n}.bn.running_var"],
            },
        }

    return {
        "conv1": {"kernel": hwio(w["conv1.weight"])},
        "conv2": block("conv2"),
        "conv3": block("conv3"),
        "conv4": {"kernel": hwio(w["conv4.weight"]), "bias": w["conv4.bias"]},
    }
