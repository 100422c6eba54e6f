"""IFCNN image fusion (Zhang et al., Information Fusion 2020) in JAX/Flax NNX.

import ifcnn_jax
model = ifcnn_jax.load("checkpoints/ifcnn-max")      # a converted or trained checkpoint
fused = ifcnn_jax.fuse(model, [img_a, img_b], task="multifocus")
fused = ifcnn_jax.fuse(model, [img_a, img_b], task="multifocus", align="homography")  # hand-held
"""

import importlib

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.tasks import DEFAULT_RULE, TASKS

# Loaded on first use (PEP 562), so that ``import ifcnn_jax`` and the command lines'
# ``--help`` do not pay for importing JAX, Flax and OpenCV.
_LAZY = {
    "IFCNN": "ifcnn_jax.model",
    "load": "ifcnn_jax.model",
    "new_ifcnn": "ifcnn_jax.model",
    "fuse": "ifcnn_jax.recipes",
    "align": "ifcnn_jax.align",
    "read_image": "ifcnn_jax.io.images",
    "write_image": "ifcnn_jax.io.images",
}

__all__ = [
    "IFCNN",
    "IFCNNError",
    "DEFAULT_RULE",
    "TASKS",
    "align",
    "fuse",
    "load",
    "new_ifcnn",
    "read_image",
    "write_image",
]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ifcnn_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
