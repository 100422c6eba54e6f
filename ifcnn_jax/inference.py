"""Running an IFCNN model on stacked float inputs: the one entry point the recipes use."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ifcnn_jax.model import IFCNN


@nnx.jit
def _forward(model: IFCNN, sources: jax.Array) -> jax.Array:
    return model(sources)


def forward(model: IFCNN, sources: np.ndarray | jax.Array, *, tile: int | None = None) -> jax.Array:
    """Fuses stacked, already normalised sources ``(N, B, H, W, 3)`` float32 into
    ``(B, H, W, 3)`` in the same normalised space. Uses the model as it is (call
    ``model.eval()`` first for inference; ``ifcnn_jax.load`` does)."""
    sources = jnp.asarray(sources, jnp.float32)
    if sources.ndim != 5 or sources.shape[-1] != 3:
        raise ValueError(f"expected stacked sources (N, B, H, W, 3), got shape {sources.shape}")
    if sources.shape[0] < 2:
        raise ValueError(f"fusion needs at least 2 sources, got {sources.shape[0]}")
    # TODO(perf helper): tiled path for large images; `tile` is accepted and ignored for now.
    return _forward(model, sources)
