"""Helpers shared by the PyTorch converters: reading state dicts, checking names and
shapes, layout changes, and the one-line error handling of the command."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ifcnn_jax.errors import IFCNNError

# BatchNorm counters carry no weights; torchvision files have them, the IFCNN release not.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def require_torch():
    """Imports torch, or explains how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise IFCNNError("the converter needs PyTorch: pip install 'ifcnn-jax[torch]'") from exc
    return torch


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
        raise IFCNNError(f"{path}: not a PyTorch file that torch.load(weights_only=True) can read "
                         f"({type(exc).__name__}{': ' + detail[:120] if detail else ''})") from exc
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
            raise IFCNNError(f"{path}: not a state dict (entry {key!r} is a {type(value).__name__}, "
                             "not a tensor)")
        if key.endswith(IGNORED_SUFFIXES):
            continue
        name = key[len("module."):] if key.startswith("module.") else key
        state[name] = value.detach().to(torch.float32).cpu().numpy()
    return state


def check_state_dict(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple[int, ...]],
                     source: str | os.PathLike, model_name: str) -> None:
    """Raises ``IFCNNError`` unless ``state`` has exactly the expected keys and shapes.

    Keys are checked in the order of ``expected``, so the first mismatch named is the
    first one in the network.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short_list(unexpected)}")
        raise IFCNNError(f"{source}: not a state dict of {model_name}: " + "; ".join(parts))
    for key, shape in expected.items():
        got = tuple(state[key].shape)
        if got != tuple(shape):
            raise IFCNNError(f"{source}: {key} has shape {got} in the file, expected {tuple(shape)} "
                             f"for {model_name}")


def _short_list(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def conv_kernel_to_hwio(weight: np.ndarray) -> np.ndarray:
    """PyTorch OIHW convolution weights to Flax HWIO."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def set_in_tree(tree: dict[str, Any], path: tuple[str, ...], value: np.ndarray) -> None:
    """Sets ``tree[path[0]][path[1]]... = value``, creating dicts on the way."""
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def refuse_existing(out_dir: str | os.PathLike, force: bool) -> None:
    """Fails early, before any work, when the output exists and --force was not given."""
    if Path(out_dir).exists() and not force:
        raise IFCNNError(f"{out_dir} already exists; pass --force to replace it")
