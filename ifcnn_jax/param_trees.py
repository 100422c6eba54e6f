"""The layout of parameter trees: the one place that splits, merges and flattens them.

A model's parameters travel in three shapes:

* **one tree** (``nnx.to_pure_dict(nnx.state(model))``): nested dicts of arrays, where a
  BatchNorm layer holds ``scale``, ``bias``, ``mean`` and ``var`` side by side. Checkpoint
  folders, shipped ``.npz`` weights and ``ifcnn_jax.model.model_from_params`` use it.
* **two trees**, the ``nnx.Param`` part and the ``nnx.BatchStat`` part: training keeps
  them apart, because only the first is differentiated and optimised.
* **flat**: ``{"conv2/bn/scale": array, ...}``, for formats that hold named arrays
  (``.npz``) and for comparing trees by name.
"""

from __future__ import annotations

from typing import Any

SEPARATOR = "/"


def split(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(params, batch_stats)``: the pure-dict trees of the module's ``nnx.Param`` and
    ``nnx.BatchStat`` variables (the arrays themselves, not copies)."""
    from flax import nnx  # noqa: PLC0415 - lazy: the file formats that use flatten stay light (model-name lookup)

    _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return nnx.to_pure_dict(params), nnx.to_pure_dict(stats)


def merge(params: dict[str, Any], batch_stats: dict[str, Any]) -> dict[str, Any]:
    """The one tree holding both parts: nested dicts present in both (a BatchNorm layer)
    are joined, at any depth. Works on any leaves (NumPy arrays, JAX arrays, tracers);
    the inputs are not modified. Raises ``ValueError`` if both hold a leaf of one name."""
    tree: dict[str, Any] = dict(params)
    for key, value in batch_stats.items():
        if key not in tree:
            tree[key] = value
        elif isinstance(tree[key], dict) and isinstance(value, dict):
            tree[key] = merge(tree[key], value)
        else:
            raise ValueError(f"both trees hold {key!r}")
    return tree


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a/b/c": leaf}`` for a nested dict tree (keys joined with ``SEPARATOR``)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + SEPARATOR))
        else:
            flat[name] = value
    return flat


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """The nested dict tree of :func:`flatten`'s output (its inverse)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(SEPARATOR)
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
