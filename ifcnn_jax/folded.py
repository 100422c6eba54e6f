"""IFCNN for inference as plain arrays: BatchNorm folded into the convolutions, no Flax.

:class:`FoldedIFCNN` holds what an inference-mode :class:`ifcnn_jax.model.IFCNN`
computes with, as float32 NumPy arrays: conv1's kernel, conv2 and conv3 with their
BatchNorm folded in (``w * s`` and ``beta - mu * s`` with ``s = gamma / sqrt(var +
eps)``, computed in float64), and conv4. The recipes (:func:`ifcnn_jax.fuse`) take it
wherever they take an ``IFCNN``, with the same result; the program that runs it is
:mod:`ifcnn_jax.network` (JAX, no Flax), or its compiled form cached on disk by
:mod:`ifcnn_jax.aot`.

:func:`load_folded` reads the same files as :func:`ifcnn_jax.load` (a released name,
a ``.pth``, a ``.npz``, a checkpoint directory). Importing this module imports NumPy
only, and reading a ``.pth`` or ``.npz`` file imports neither JAX nor Flax: this is
what lets ``ifcnn-fuse`` start without them (an Orbax checkpoint directory still needs
JAX to be read).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any

import numpy as np

from ifcnn_jax.errors import IFCNNError

FUSE_RULES: tuple[str, ...] = ("max", "sum", "mean")
FEATURES = 64
BN_EPSILON = 1e-5
# The order of the folded weights (the arguments of the compiled program).
WEIGHT_NAMES: tuple[str, ...] = ("bias2", "bias3", "bias4", "conv1", "conv2", "conv3", "conv4")


def _bn_shapes() -> dict[str, tuple[int, ...]]:
    return {name: (FEATURES,) for name in ("bias", "mean", "scale", "var")}


def param_shapes() -> dict[str, Any]:
    """IFCNN's parameter tree (the pure-dict layout of ``nnx.state``) with shapes as leaves."""
    block = {"bn": _bn_shapes(), "conv": {"kernel": (3, 3, FEATURES, FEATURES)}}
    return {
        "conv1": {"kernel": (7, 7, 3, FEATURES)},
        "conv2": block,
        "conv3": {key: dict(value) for key, value in block.items()},
        "conv4": {"bias": (3,), "kernel": (1, 1, FEATURES, 3)},
    }


def _shapes_of(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {key: _shapes_of(value) for key, value in tree.items()}
    return tuple(np.shape(tree))


def _leaves(tree: dict, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in tree.items():
        name = f"{prefix}['{key}']"
        out.extend(_leaves(value, name) if isinstance(value, dict) else [(name, value)])
    return out


def check_params(params: dict) -> None:
    """Raises ``ValueError`` if ``params`` is not IFCNN's tree (names and shapes) or holds
    NaN or infinite values (the messages of :func:`ifcnn_jax.model.model_from_params`)."""
    expected, got = param_shapes(), _shapes_of(params)
    if expected != got:
        raise ValueError(f"parameter tree does not match IFCNN (expected {expected}, got {got})")
    bad = [name for name, value in _leaves(params) if not np.isfinite(np.asarray(value)).all()]
    if bad:
        raise ValueError(f"parameters {', '.join(bad)} hold NaN or infinite values")


def read_params(path: str | os.PathLike, fuse_rule: str | None = None) -> tuple[dict, str]:
    """``(params, fuse_rule)`` of the model at ``path``, as :func:`ifcnn_jax.load` takes it
    (a released or shipped name, a ``.npz``, a ``.pth``, a checkpoint directory); the
    params are NumPy arrays in the pure-dict layout. Raises ``IFCNNError`` for a missing
    path, a model of another kind, or an unknown fusion rule."""
    from ifcnn_jax.io.model_files import released_name, released_weights  # noqa: PLC0415 - lazy: only loading needs it
    from ifcnn_jax.io.state_dicts import params_from_release_file, rule_from_filename  # noqa: PLC0415 - lazy
    from ifcnn_jax.io.weight_files import load_npz, shipped_path  # noqa: PLC0415 - lazy

    path = str(path)
    if not os.path.exists(path) and shipped_path(path) is not None:
        path = str(shipped_path(path))
    elif not os.path.exists(path) and released_name(path):
        path = str(released_weights(path))

    if path.lower().endswith(".npz") and not os.path.isdir(path):
        params, metadata = load_npz(path)
        if metadata.get("kind") != "ifcnn":
            raise IFCNNError(f"{path}: weights of kind {metadata.get('kind')!r}, not an IFCNN model")
        rule = fuse_rule or metadata.get("fuse_rule")
    elif path.lower().endswith((".pth", ".pt")) and not os.path.isdir(path):
        params = params_from_release_file(path)
        rule = fuse_rule or rule_from_filename(path)
        if rule is None:
            raise IFCNNError(
                f"{path}: cannot tell the fusion rule from the file name; pass fuse_rule='max'|'sum'|'mean'"
            )
    else:
        from ifcnn_jax.io.checkpoints import load_params  # noqa: PLC0415 - lazy: Orbax imports JAX

        params, metadata = load_params(path)
        kind = metadata.get("kind")
        if kind != "ifcnn":
            raise IFCNNError(f"{path}: checkpoint kind is {kind!r}, not an IFCNN model")
        rule = fuse_rule or metadata.get("fuse_rule")
    if rule not in FUSE_RULES:
        raise IFCNNError(f"{path}: fuse rule {rule!r} is not one of {FUSE_RULES}")
    return params, rule


def model_weight_arrays(model) -> tuple:
    """The arrays of an :class:`ifcnn_jax.model.IFCNN` that the folded weights derive from,
    in the order :func:`fold_arrays` takes (conv1; conv2 and its BatchNorm scale, bias,
    mean, var; the same for conv3; conv4's kernel and bias). Reads attributes only, so
    this module still imports no Flax."""
    return (
        model.conv1.kernel[...],
        model.conv2.conv.kernel[...],
        model.conv2.bn.scale[...],
        model.conv2.bn.bias[...],
        model.conv2.bn.mean[...],
        model.conv2.bn.var[...],
        model.conv3.conv.kernel[...],
        model.conv3.bn.scale[...],
        model.conv3.bn.bias[...],
        model.conv3.bn.mean[...],
        model.conv3.bn.var[...],
        model.conv4.kernel[...],
        model.conv4.bias[...],
    )


def fold_arrays(arrays, eps2: float = BN_EPSILON, eps3: float = BN_EPSILON) -> dict[str, np.ndarray]:
    """The folded float32 weights from IFCNN's 13 inference arrays, in this order:
    conv1 kernel; conv2 kernel, BN scale, bias, mean, var; the same for conv3; conv4
    kernel and bias. Folding is done in float64, then rounded once to float32."""
    (k1, k2, g2, b2, m2, v2, k3, g3, b3, m3, v3, k4, b4) = (np.asarray(a, np.float64) for a in arrays)
    s2 = g2 / np.sqrt(v2 + eps2)
    s3 = g3 / np.sqrt(v3 + eps3)
    folded = {
        "conv1": k1,
        "conv2": k2 * s2,
        "bias2": b2 - m2 * s2,
        "conv3": k3 * s3,
        "bias3": b3 - m3 * s3,
        "conv4": k4[0, 0],
        "bias4": b4,
    }
    return {name: np.ascontiguousarray(value, np.float32) for name, value in folded.items()}


def _arrays_of_params(params: dict) -> tuple:
    c2, c3 = params["conv2"], params["conv3"]
    return (
        params["conv1"]["kernel"],
        c2["conv"]["kernel"],
        c2["bn"]["scale"],
        c2["bn"]["bias"],
        c2["bn"]["mean"],
        c2["bn"]["var"],
        c3["conv"]["kernel"],
        c3["bn"]["scale"],
        c3["bn"]["bias"],
        c3["bn"]["mean"],
        c3["bn"]["var"],
        params["conv4"]["kernel"],
        params["conv4"]["bias"],
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FoldedIFCNN:
    """An inference-mode IFCNN as folded float32 arrays (see the module docstring).

    ``weights`` maps ``WEIGHT_NAMES`` to read-only arrays: ``conv1`` (7, 7, 3, 64),
    ``conv2``/``conv3`` (3, 3, 64, 64), ``bias2``/``bias3`` (64,), ``conv4`` (64, 3),
    ``bias4`` (3,). Pass it to :func:`ifcnn_jax.fuse` like an ``IFCNN``.
    """

    fuse_rule: str
    weights: dict[str, np.ndarray]

    def __post_init__(self):
        if self.fuse_rule not in FUSE_RULES:
            raise ValueError(f"unknown fuse rule {self.fuse_rule!r}; expected one of {FUSE_RULES}")
        if tuple(sorted(self.weights)) != WEIGHT_NAMES:
            raise ValueError(f"folded weights must be {WEIGHT_NAMES}, got {tuple(sorted(self.weights))}")
        for value in self.weights.values():
            value.flags.writeable = False

    @classmethod
    def from_params(cls, params: dict, fuse_rule: str) -> FoldedIFCNN:
        """From IFCNN's parameter tree (checked: ``ValueError`` for a wrong tree or
        non-finite values)."""
        check_params(params)
        return cls(fuse_rule, fold_arrays(_arrays_of_params(params)))

    @classmethod
    def from_model(cls, model) -> FoldedIFCNN:
        """From an inference-mode :class:`ifcnn_jax.model.IFCNN` (its BatchNorm epsilons
        included)."""
        arrays = model_weight_arrays(model)
        eps = (float(model.conv2.bn.epsilon), float(model.conv3.bn.epsilon))
        return cls(model.fuse_rule, fold_arrays(arrays, *eps))

    @property
    def digest(self) -> str:
        """SHA-256 of the fusion rule and the weights (names, shapes and bytes)."""
        h = hashlib.sha256(self.fuse_rule.encode())
        for name in WEIGHT_NAMES:
            value = self.weights[name]
            h.update(f"{name}{value.shape}{value.dtype}".encode())
            h.update(value.tobytes())
        return h.hexdigest()


def load_folded(path: str | os.PathLike, fuse_rule: str | None = None) -> FoldedIFCNN:
    """:func:`ifcnn_jax.load` for inference without Flax: the same files and errors,
    the same fused results, as a :class:`FoldedIFCNN`."""
    params, rule = read_params(path, fuse_rule)
    try:
        return FoldedIFCNN.from_params(params, rule)
    except ValueError as exc:
        raise IFCNNError(f"{path}: {exc}") from exc
