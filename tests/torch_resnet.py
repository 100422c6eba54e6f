"""Test helpers: a torchvision ResNet-101 with randomised BatchNorm, its converted
checkpoint, and reference features computed with torchvision itself.

Building, saving and converting ResNet-101 takes seconds and ~350 MB of disk, so it is
done once per test process (cached here) rather than once per test module.
"""

from __future__ import annotations

import atexit
import functools
import io
import shutil
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import torch
import torchvision

from convert.from_torch import main
from ifcnn_jax.resnet import load_resnet101


def randomise_batchnorm(net: torch.nn.Module, seed: int) -> None:
    """Random running means/variances and affine parameters: the defaults (0, 1, 1, 0)
    would hide swapped or transposed BatchNorm fields."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))


@functools.cache
def torch_resnet101() -> torch.nn.Module:
    """``torchvision.models.resnet101(weights=None)`` with randomised BatchNorm, eval mode."""
    torch.manual_seed(0)
    net = torchvision.models.resnet101(weights=None)
    randomise_batchnorm(net, seed=1)
    net.requires_grad_(False)  # references differentiate with respect to images only
    return net.eval()


@functools.cache
def _workdir() -> Path:
    path = Path(tempfile.mkdtemp(prefix="ifcnn-resnet-test-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def run_converter(argv: list[str]) -> tuple[int, str, str]:
    """``convert/from_torch.py`` in this process: (exit status, stdout, stderr)."""

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as exc:  # argparse errors
            status = exc.code
    return status, out.getvalue(), err.getvalue()


@functools.cache
def saved_state_dict() -> Path:
    """The randomised ResNet-101's state dict saved as a .pth file."""
    path = _workdir() / "resnet101-random.pth"
    torch.save(torch_resnet101().state_dict(), path)
    return path


@functools.cache
def converted_checkpoint() -> tuple[Path, str]:
    """(checkpoint directory, converter stdout) from ``from_torch.py resnet101 --verify``."""
    out_dir = _workdir() / "resnet101-ckpt"
    status, stdout, stderr = run_converter(["resnet101", str(saved_state_dict()), str(out_dir), "--verify"])
    assert status == 0, stderr
    return out_dir, stdout


@functools.cache
def loaded_resnet101():
    """The converted checkpoint loaded with ``ifcnn_jax.resnet.load_resnet101``."""

    return load_resnet101(converted_checkpoint()[0])


def torch_features(images_nhwc: np.ndarray | torch.Tensor) -> dict[str, torch.Tensor]:
    """Every tap of the randomised torchvision model, NCHW tensors (autograd kept)."""
    net = torch_resnet101()
    x = (
        images_nhwc
        if isinstance(images_nhwc, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(images_nhwc))
    )
    x = x.permute(0, 3, 1, 2)
    features = {}
    x = net.conv1(x)
    features["conv1"] = x
    x = net.relu(net.bn1(x))
    features["relu"] = x
    x = net.maxpool(x)
    for name in ("layer1", "layer2", "layer3", "layer4"):
        x = getattr(net, name)(x)
        features[name] = x
    return features


def relative_error(ours, reference) -> float:
    """max |ours - reference| / max |reference|."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))
