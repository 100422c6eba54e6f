"""Helpers shared by the PyTorch converters: reading state dicts, checking names and
shapes, layout changes, and the one-line error handling of the command."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.checkpoints import check_replaceable
from ifcnn_jax.io.model_files import sha256_of
from ifcnn_jax.io.state_dicts import (
    IGNORED_SUFFIXES,
    check_state_dict,
    conv_kernel_to_hwio,
    strip_state_dict,
)

__all__ = [
    "check_state_dict",
    "conv_kernel_to_hwio",
    "load_torch_state_dict",
    "refuse_existing",
    "require_torch",
    "sha256_of",
    "IGNORED_SUFFIXES",
    "strip_state_dict",
]


def require_torch():
    """Imports torch, or explains how to install it."""
    try:
        import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    except ImportError as exc:
        raise IFCNNError("the converter needs PyTorch: pip install 'ifcnn-jax[torch]'") from exc
    return torch


def load_torch_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a PyTorch state dict with ``weights_only=True`` into float32 NumPy arrays.

    A ``module.`` prefix (from ``nn.DataParallel``) is removed, and a dict that wraps
    the weights under ``state_dict`` or ``model`` is unwrapped.
    """
    torch = require_torch()
    path = Path(path)
    if not path.exists():
        raise IFCNNError(f"{path}: no such file")
    if not path.is_file():
        raise IFCNNError(f"{path}: not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or corrupt files
        detail = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
        raise IFCNNError(
            f"{path}: not a PyTorch file that torch.load(weights_only=True) can read "
            f"({type(exc).__name__}{': ' + detail[:120] if detail else ''})"
        ) from exc
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise IFCNNError(f"{path}: not a state dict (found {type(obj).__name__})")
    state = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise IFCNNError(
                f"{path}: not a state dict (entry {key!r} is a {type(value).__name__}, not a tensor)"
            )
        state[key] = value.detach().to(torch.float32).cpu().numpy()
    return strip_state_dict(state)


def refuse_existing(out_dir: str | os.PathLike, force: bool) -> None:
    """Fails early, before any work, unless ``out_dir`` may be written: it is missing or
    empty, or it is a checkpoint and --force was given (never a file or a folder of
    other files; see ``ifcnn_jax.io.checkpoints.check_replaceable``)."""
    check_replaceable(out_dir, force=force)
