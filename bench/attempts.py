"""Bench-only attempts at a faster JAX fusion path, timed by ``bench/run.py
--jax-attempts NAME,...`` beside the library's ``forward`` and checked against the same
PyTorch reference (bench/NOTES.md has the predictions and results).

Each attempt is the library's own blocked CPU network (``ifcnn_jax.inference``), traced
into a jitted copy of ``_fuse_window`` with its convolution helpers replaced for the
duration of the trace; the library itself is not changed:

  f32_copy     the copy with nothing replaced (the control: should time as the library)
  bf16         conv1, conv2 and conv3 as bf16 x bf16 products accumulated in float32
               (AVX512-BF16 / AMX through XLA's YNNPACK); conv4 and all else float32
  bf16_conv23  only conv2 and conv3 in bf16 (conv1's 3-channel input stays float32)
  bf16_conv23_RxC   the same on output blocks of R x C pixels (the library: 64 x 128)

and for accelerators (the library's 'conv' method: XLA convolutions, cuDNN on GPU):

  conv_f32_copy           the control, HIGHEST precision as in the library
  conv_default_precision  XLA's default precision (TF32 on NVIDIA GPUs)
  conv_bf16               bf16 operands, float32 results
  conv_block512 / conv_block2048   other block sizes than the library's 1024x1024
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from ifcnn_jax import inference, network
from ifcnn_jax.tiling import HALO

BF16 = jnp.bfloat16


def _im2col_bf16(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """VALID convolution as one bf16 product over all taps, float32 accumulation."""
    kh, kw, c_in, c_out = kernel.shape
    _, s, rows, cols = x.shape
    out_rows, out_cols = rows - kh + 1, cols - kw + 1
    xb = x.astype(BF16)
    taps = jnp.stack(
        [xb[:, :, dy : dy + out_rows, dx : dx + out_cols] for dy in range(kh) for dx in range(kw)]
    )
    weights = kernel.reshape(kh * kw * c_in, c_out).T.astype(BF16)
    out = jnp.dot(weights, taps.reshape(kh * kw * c_in, -1), preferred_element_type=jnp.float32)
    return out.reshape(c_out, s, out_rows, out_cols)


def _row_taps_bf16(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The 'row taps' convolution (kw horizontal taps stacked, all kh kernel rows in one
    product, then a sum of row-shifted slices) with bf16 operands, float32 sums."""
    kh, kw, c_in, c_out = kernel.shape
    _, s, rows, cols = x.shape
    out_rows, out_cols = rows - kh + 1, cols - kw + 1
    xb = x.astype(BF16)
    taps = jnp.stack([xb[:, :, :, dx : dx + out_cols] for dx in range(kw)])
    weights = jnp.transpose(kernel, (0, 3, 1, 2)).reshape(kh * c_out, kw * c_in).astype(BF16)
    per_row = jnp.dot(weights, taps.reshape(kw * c_in, -1), preferred_element_type=jnp.float32)
    per_row = per_row.reshape(kh, c_out, s, rows, out_cols)
    return sum(per_row[dy, :, :, dy : dy + out_rows] for dy in range(kh))


@contextlib.contextmanager
def _replaced(**helpers):
    saved = {name: getattr(network, name) for name in helpers}
    try:
        for name, fn in helpers.items():
            setattr(network, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(network, name, fn)


def _attempt(helpers: dict, method: str = "matmul", block: tuple[int, int] | None = None) -> Callable:
    """``make(model) -> make(sources) -> run``: the untiled path of ``forward`` (edge
    padding, then one window) through a jitted copy of ``_fuse_window`` traced with
    ``helpers`` in place of the library's module globals (convolution helpers, the
    precision), with the library's method and block size unless given."""
    block = block or inference._BLOCK[method]

    def make_for_model(model):
        params = inference.folded_params(model)
        inner = network._fuse_window.__wrapped__

        # A function object of its own: jit wrappers of one function share its traces,
        # so jitting network._fuse_window's function again would reuse the library's.
        def window_fn(params, window, origin, image_hw):
            return inner(
                params,
                window,
                origin,
                image_hw,
                rule=model.fuse_rule,
                method=method,
                block=block,
                per_item=inference._PER_ITEM[method],
            )

        fuse = jax.jit(window_fn)

        def make(sources: jax.Array) -> Callable[[], jax.Array]:
            height, width = int(sources.shape[2]), int(sources.shape[3])
            pad = ((0, 0), (0, 0), (HALO, HALO), (HALO, HALO), (0, 0))
            origin = jnp.zeros(2, jnp.int32)
            image_hw = jnp.asarray((height, width), jnp.int32)

            def run():
                window = jnp.pad(sources, pad, mode="edge")
                return fuse(params, window, origin, image_hw).block_until_ready()

            with _replaced(**helpers):  # the trace (first call) sees the replacements
                run()
            return run

        return make

    return make_for_model


def _xla_conv_bf16(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """The accelerator path's XLA convolution (NHWC) with bf16 operands, float32 out."""
    nhwc = jnp.transpose(x, (1, 2, 3, 0)).astype(BF16)
    out = lax.conv_general_dilated(
        nhwc,
        kernel.astype(BF16),
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=jnp.float32,
    )
    return jnp.transpose(out, (3, 0, 1, 2))


FUSION_ATTEMPTS = {
    "f32_copy": _attempt({}),
    "bf16": _attempt({"_conv_im2col": _im2col_bf16, "_conv_row_taps": _row_taps_bf16}),
    "bf16_conv23": _attempt({"_conv_row_taps": _row_taps_bf16}),
    # bf16 halves the blocks' buffers: larger blocks fit the same cache.
    "bf16_conv23_128x128": _attempt({"_conv_row_taps": _row_taps_bf16}, block=(128, 128)),
    "bf16_conv23_64x256": _attempt({"_conv_row_taps": _row_taps_bf16}, block=(64, 256)),
    "bf16_conv23_32x128": _attempt({"_conv_row_taps": _row_taps_bf16}, block=(32, 128)),
    # Accelerators (the 'conv' method, cuDNN on GPU). The library asks for HIGHEST
    # precision (true float32, parity 1e-4); these trade it for speed.
    "conv_f32_copy": _attempt({}, "conv"),
    "conv_default_precision": _attempt({"_HIGHEST": None}, "conv"),  # TF32 on NVIDIA
    "conv_bf16": _attempt({"_conv_xla": _xla_conv_bf16}, "conv"),
    "conv_block512": _attempt({}, "conv", (512, 512)),
    "conv_block2048": _attempt({}, "conv", (2048, 2048)),
}

__all__ = ["FUSION_ATTEMPTS"]
