"""Stride-1 "same" convolutions with replicate padding, fast to train on CPU.

``conv_replicate(x, kernel)`` edge-pads the two spatial axes of ``x`` (NHWC, any
leading axes) by ``(k - 1) / 2`` and applies a ``k x k`` kernel (HWIO, odd ``k``) without
bias: the convolutions of IFCNN. On GPU and TPU it is XLA's convolution. On CPU it is a
``jax.custom_vjp`` whose forward pass and both gradients are matrix products on small
blocks of one image (bands of output rows), evaluated in a loop:

* forward, "row taps": the ``k`` horizontal taps of a band are stacked on the channel
  axis (contraction ``k * C_in``), one product yields all ``k`` kernel rows at once
  (``k * C_out`` columns), and the output is the sum of ``k`` row-shifted slices;
* kernel gradient: the same stacked taps, transposed, times the output gradient
  stacked over the ``k`` row shifts, accumulated over the bands;
* input gradient: the forward routine applied to the zero-padded output gradient with
  the flipped, transposed kernel, then the transpose of the edge padding (the padded
  border's gradient folds back onto the first and last rows and columns).

Each block's buffers stay in cache, where XLA's own convolution (and a whole-image
im2col) streams large freshly allocated buffers; bench/NOTES.md has the measurements.
The gradients are computed only for the inputs that need one (a frozen kernel gets
none).

Sharded batches: the loop slices along the batch axis, which XLA's partitioner can
only serve by gathering the whole batch onto every device (correct, but every device
then convolves every image). Under a mesh context (``jax.set_mesh``, as the training
loop sets it) the op instead runs per device on its own images (``jax.shard_map``),
taking the last leading axis of ``x`` as the batch axis sharded over all mesh axes;
the kernel gradient is then summed over the devices.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec

# Output pixels per block: 32 rows of a 128-pixel-wide crop. The stacked taps of a
# 64-channel 3x3 layer are then ~3.4 MB; bench/NOTES.md has the sweep.
BLOCK_PIXELS = 4096


def conv_replicate(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``k x k`` convolution of ``x`` ``(..., H, W, C_in)`` with ``kernel``
    ``(k, k, C_in, C_out)`` (HWIO, odd ``k``), stride 1, after replicate (edge) padding
    of ``(k - 1) / 2`` pixels; returns ``(..., H, W, C_out)``. Float32, any units.

    Differentiable in both arguments; on CPU the blocked matrix-product form described
    in the module docstring (per device under a mesh context), elsewhere
    ``lax.conv_general_dilated``.
    """
    k = kernel.shape[0]
    if kernel.ndim != 4 or kernel.shape[1] != k or k % 2 != 1 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"conv_replicate: kernel {tuple(kernel.shape)} must be (k, k, C_in, C_out) "
            f"with odd k and C_in = {x.shape[-1]}"
        )
    if jax.default_backend() != "cpu":
        return _flat_images(_xla_conv, x, kernel)
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and mesh.size > 1 and x.ndim >= 4 and x.shape[-4] % mesh.size == 0:
        batch = PartitionSpec(*([None] * (x.ndim - 4)), tuple(mesh.axis_names))
        per_device = jax.shard_map(
            lambda x, kernel: _flat_images(_blocked_conv, x, kernel),
            mesh=mesh,
            in_specs=(batch, PartitionSpec()),
            out_specs=batch,
            check_vma=False,
        )
        return per_device(x, kernel)
    return _flat_images(_blocked_conv, x, kernel)


def _flat_images(conv, x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``conv`` on ``(S, H, W, C)`` applied to ``x`` with any leading axes."""
    out = conv(x.reshape((-1,) + x.shape[-3:]), kernel)
    return out.reshape(x.shape[:-3] + out.shape[1:])


def _edge_pad(x: jax.Array, pad: int) -> jax.Array:
    return jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")


def _xla_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    pad = (kernel.shape[0] - 1) // 2
    return lax.conv_general_dilated(
        _edge_pad(x, pad), kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _band_rows(rows: int, width: int) -> tuple[int, int]:
    """(number of bands, rows per band) covering ``rows`` rows in bands of about
    ``BLOCK_PIXELS`` pixels, all of equal height."""
    target = max(1, min(rows, BLOCK_PIXELS // max(width, 1)))
    count = math.ceil(rows / target)
    return count, math.ceil(rows / count)


def _row_tap_kernel(kernel: jax.Array) -> jax.Array:
    """(dy, dx, ci, co) -> ((dx, ci), (dy, co)): the matrix of the row-taps product."""
    k, _, c_in, c_out = kernel.shape
    return jnp.transpose(kernel, (1, 2, 0, 3)).reshape(k * c_in, k * c_out)


def _gather_rows(
    images: jax.Array, image: jax.Array, first: jax.Array, count: int, *, zero_outside: bool
) -> jax.Array:
    """Rows ``first .. first + count - 1`` of image ``image`` of ``(S, H, W, C)``; rows
    outside the image repeat the nearest edge row, or are zero with ``zero_outside``.
    Gathering the rows of each block (rather than padding the whole batch once)
    spares a large fresh buffer per layer."""
    num_images, height = images.shape[:2]
    wanted = first + jnp.arange(count)
    rows = image * height + jnp.clip(wanted, 0, height - 1)
    block = jnp.take(
        images.reshape((num_images * height,) + images.shape[2:]),
        rows,
        axis=0,
        mode="clip",
        indices_are_sorted=True,
    )
    if zero_outside:
        inside = (wanted >= 0) & (wanted < height)
        block = jnp.where(inside[:, None, None], block, 0.0)
    return block


def _horizontal_taps(block: jax.Array, k: int, pad: int, *, zero_outside: bool) -> jax.Array:
    """(rows, W, C) -> (rows, W + 2 * pad - k + 1, k * C): for every output column the
    k horizontal neighbours side by side (tap-major), the row padded by ``pad`` pixels
    on both sides (edge copies, or zeros with ``zero_outside``)."""
    rows, width, channels = block.shape
    if pad:
        edge_shape = (rows, pad, channels)
        left = (
            jnp.zeros(edge_shape, block.dtype) if zero_outside else jnp.broadcast_to(block[:, :1], edge_shape)
        )
        right = (
            jnp.zeros(edge_shape, block.dtype)
            if zero_outside
            else jnp.broadcast_to(block[:, -1:], edge_shape)
        )
        block = jnp.concatenate([left, block, right], axis=1)
    out_width = width + 2 * pad - k + 1
    return jnp.concatenate([block[:, dx : dx + out_width] for dx in range(k)], axis=-1)


def _shifted_row_sum(per_row: jax.Array, k: int, rows: int, c_out: int) -> jax.Array:
    """sum over dy of rows ``dy .. dy + rows - 1`` of the dy-th ``c_out`` channel group."""
    out = per_row[0:rows, :, 0:c_out]
    for dy in range(1, k):
        out = out + per_row[dy : dy + rows, :, dy * c_out : (dy + 1) * c_out]
    return out


def _loop_output(shape: tuple[int, ...], source: jax.Array) -> jax.Array:
    """The buffer a loop fills completely: zeros, made to depend on ``source`` so that
    XLA does not merge it with the equal zeros of another loop (and then copy it for
    each loop, which updates it in place)."""
    return jnp.broadcast_to(source.reshape(-1)[0] * 0.0, shape)


def _conv_forward(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Replicate-padded "same" convolution ``(S, H, W, C_in) -> (S, H, W, C_out)``, one
    band of output rows of one image at a time."""
    k, _, _, c_out = kernel.shape
    images, height, width, _ = x.shape
    pad = (k - 1) // 2
    bands, band = _band_rows(height, width)
    weights = _row_tap_kernel(kernel)

    def one_band(index, out):
        image, top = index // bands, index % bands * band
        top = jnp.minimum(top, height - band)  # the last band shifts up: same values rewritten
        block = _gather_rows(x, image, top - pad, band + k - 1, zero_outside=False)
        per_row = jnp.dot(_horizontal_taps(block, k, pad, zero_outside=False), weights)
        result = _shifted_row_sum(per_row, k, band, c_out)
        return lax.dynamic_update_slice(out, result[None], (image, top, 0, 0))

    return lax.fori_loop(0, images * bands, one_band, _loop_output((images, height, width, c_out), x))


def _kernel_gradient(x: jax.Array, grad: jax.Array, k: int) -> jax.Array:
    """Gradient of ``sum(grad * _conv_forward(x, K))`` with respect to K, ``(k, k, C_in,
    C_out)``: sums over bands of padded input rows of (stacked taps)^T (output gradient
    stacked over the k row shifts)."""
    images, height, width, c_in = x.shape
    c_out = grad.shape[-1]
    pad = (k - 1) // 2
    padded_rows = height + 2 * pad
    bands, band = _band_rows(padded_rows, width)

    def one_band(index, total):
        image, start = index // bands, index % bands * band
        top = jnp.minimum(start, padded_rows - band)
        block = _gather_rows(x, image, top - pad, band, zero_outside=False)
        # Rows the previous band already counted (the last band shifts up) count zero.
        fresh = (top + jnp.arange(band)) >= start
        block = jnp.where(fresh[:, None, None], block, 0.0)
        taps = _horizontal_taps(block, k, pad, zero_outside=False)
        # Padded row t meets output row t - dy through kernel row dy.
        grads = _gather_rows(grad, image, top - (k - 1), band + k - 1, zero_outside=True)
        shifted = jnp.concatenate([grads[k - 1 - dy : k - 1 - dy + band] for dy in range(k)], axis=-1)
        return total + lax.dot_general(taps, shifted, (((0, 1), (0, 1)), ((), ())))

    total = lax.fori_loop(0, images * bands, one_band, jnp.zeros((k * c_in, k * c_out), x.dtype))
    return jnp.transpose(total.reshape(k, c_in, k, c_out), (2, 0, 1, 3))


def _input_gradient(grad: jax.Array, kernel: jax.Array) -> jax.Array:
    """Gradient of ``sum(grad * _conv_forward(x, kernel))`` with respect to x.

    Per band of input rows: the gradient of the padded input, a VALID convolution of
    the zero-padded output gradient with the flipped kernel (inputs and outputs
    swapped), over the band and its padding rows; then the transpose of the edge
    padding, which adds the padding rows/columns onto the first/last image row/column.
    """
    k, _, c_in, _ = kernel.shape
    images, height, width, _ = grad.shape
    pad = (k - 1) // 2
    bands, band = _band_rows(height, width)
    flipped = _row_tap_kernel(jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2)))

    def one_band(index, out):
        image, top = index // bands, index % bands * band
        top = jnp.minimum(top, height - band)
        # Padded-input rows top .. top + band + 2 pad - 1 (padded coordinates).
        grads = _gather_rows(grad, image, top - 2 * pad, band + 2 * pad + k - 1, zero_outside=True)
        per_row = jnp.dot(_horizontal_taps(grads, k, 2 * pad, zero_outside=True), flipped)
        padded = _shifted_row_sum(per_row, k, band + 2 * pad, c_in)  # (band + 2p, W + 2p, C)
        cols = padded[:, pad : pad + width]
        cols = cols.at[:, 0].add(jnp.sum(padded[:, :pad], axis=1))
        cols = cols.at[:, -1].add(jnp.sum(padded[:, pad + width :], axis=1))
        result = cols[pad : pad + band]
        top_fold = jnp.where(top == 0, jnp.sum(cols[:pad], axis=0), 0.0)
        bottom_fold = jnp.where(top + band == height, jnp.sum(cols[pad + band :], axis=0), 0.0)
        result = result.at[0].add(top_fold).at[-1].add(bottom_fold)
        return lax.dynamic_update_slice(out, result[None], (image, top, 0, 0))

    return lax.fori_loop(0, images * bands, one_band, _loop_output((images, height, width, c_in), grad))


@jax.custom_vjp
def _blocked_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    return _conv_forward(x, kernel)


def _blocked_conv_fwd(x, kernel):
    # With symbolic_zeros the primals come wrapped, saying which ones are differentiated:
    # a frozen kernel's gradient (and the input gradient of a first layer) is skipped.
    out = _conv_forward(x.value, kernel.value)
    # The residuals' structure (None or an empty tuple) says which gradients are wanted.
    residuals = (x.value if kernel.perturbed else None, kernel.value, () if x.perturbed else None)
    return out, residuals


def _blocked_conv_bwd(residuals, grad):
    x, kernel, wants_x_grad = residuals
    if isinstance(grad, jax.custom_derivatives.SymbolicZero):
        return None, None
    kernel_grad = None if x is None else _kernel_gradient(x, grad, kernel.shape[0])
    x_grad = None if wants_x_grad is None else _input_gradient(grad, kernel)
    return x_grad, kernel_grad


_blocked_conv.defvjp(_blocked_conv_fwd, _blocked_conv_bwd, symbolic_zeros=True)
