"""IFCNN image fusion (Zhang et al., Information Fusion 2020) in JAX/Flax NNX.

    import ifcnn_jax
    model = ifcnn_jax.load("checkpoints/ifcnn-max")      # a converted or trained checkpoint
    fused = ifcnn_jax.fuse(model, [img_a, img_b], task="multifocus")
"""

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.image_io import read_image, write_image
from ifcnn_jax.model import IFCNN, load, new_ifcnn
from ifcnn_jax.recipes import DEFAULT_RULE, TASKS, fuse

__all__ = ["IFCNN", "IFCNNError", "DEFAULT_RULE", "TASKS", "fuse", "load", "new_ifcnn",
           "read_image", "write_image"]
__version__ = "0.1.0"
