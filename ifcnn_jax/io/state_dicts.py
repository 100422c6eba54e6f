"""The authors' released IFCNN state dicts: their names, shapes, and our parameter tree.

Shared by the converter (``convert/from_torch.py ifcnn``, which reads the file with
torch) and by ``ifcnn_jax.load("IFCNN-MAX.pth")`` (which reads it without torch).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.torch_files import read_state_dict

# torch key -> (path in our parameter tree, is a conv kernel that needs OIHW -> HWIO)
KEY_MAP: dict[str, tuple[tuple[str, ...], bool]] = {"conv1.weight": (("conv1", "kernel"), True)}
for _block in ("conv2", "conv3"):
    KEY_MAP[f"{_block}.conv.weight"] = ((_block, "conv", "kernel"), True)
    KEY_MAP[f"{_block}.bn.weight"] = ((_block, "bn", "scale"), False)
    KEY_MAP[f"{_block}.bn.bias"] = ((_block, "bn", "bias"), False)
    KEY_MAP[f"{_block}.bn.running_mean"] = ((_block, "bn", "mean"), False)
    KEY_MAP[f"{_block}.bn.running_var"] = ((_block, "bn", "var"), False)
KEY_MAP["conv4.weight"] = (("conv4", "kernel"), True)
KEY_MAP["conv4.bias"] = (("conv4", "bias"), False)

EXPECTED_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (64, 3, 7, 7),
    **{
        f"{b}.{k}": s
        for b in ("conv2", "conv3")
        for k, s in (
            ("conv.weight", (64, 64, 3, 3)),
            ("bn.weight", (64,)),
            ("bn.bias", (64,)),
            ("bn.running_mean", (64,)),
            ("bn.running_var", (64,)),
        )
    },
    "conv4.weight": (3, 64, 1, 1),
    "conv4.bias": (3,),
}

# BatchNorm counters carry no weights; PyTorch writes them, the IFCNN release does not.
IGNORED_SUFFIXES = ("num_batches_tracked",)


def rule_from_filename(path: str | Path) -> str | None:
    """'max', 'sum' or 'mean' when the file name says so (IFCNN-MAX.pth), else None."""
    match = re.search(r"(max|sum|mean)", Path(path).stem, flags=re.IGNORECASE)
    return match.group(1).lower() if match else None


def conv_kernel_to_hwio(weight: np.ndarray) -> np.ndarray:
    """PyTorch OIHW convolution weights to Flax HWIO."""
    return np.ascontiguousarray(np.transpose(weight, (2, 3, 1, 0)))


def check_state_dict(
    state: Mapping[str, np.ndarray],
    expected: Mapping[str, tuple[int, ...]],
    source: str | Path,
    model_name: str,
) -> None:
    """Raises ``IFCNNError`` unless ``state`` has exactly the expected keys and shapes
    and every value is finite (a NaN or infinite weight only makes garbage images).

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
            raise IFCNNError(
                f"{source}: {key} has shape {got} in the file, expected {tuple(shape)} for {model_name}"
            )
    for key in expected:
        values = np.asarray(state[key])
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise IFCNNError(
                f"{source}: {key} holds {int((~np.isfinite(values)).sum())} NaN or infinite values"
            )


def _short_list(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def strip_state_dict(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drops BatchNorm counters and a ``module.`` prefix (``nn.DataParallel``)."""
    out = {}
    for key, value in state.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        out[key[len("module.") :] if key.startswith("module.") else key] = value
    return out


def state_dict_to_params(
    state: Mapping[str, np.ndarray], key_map: Mapping[str, tuple[tuple[str, ...], bool]] = KEY_MAP
) -> dict:
    """Maps a checked state dict to our parameter tree: each ``key_map`` entry gives a
    torch key's path in the tree and whether it is a conv kernel (OIHW -> HWIO). The
    default map is IFCNN's (the tree of ``ifcnn_jax.IFCNN``)."""
    params: dict = {}
    for key, (path, is_kernel) in key_map.items():
        value = np.asarray(state[key], np.float32)
        node = params
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = conv_kernel_to_hwio(value) if is_kernel else value
    return params


def params_from_release_file(path: str | Path) -> dict:
    """Reads a released ``.pth`` without torch and returns our parameter tree."""

    state = strip_state_dict(read_state_dict(path))
    check_state_dict(state, EXPECTED_SHAPES, path, "IFCNN")
    return state_dict_to_params(state)
