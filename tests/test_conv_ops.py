"""ifcnn_jax.conv_ops against independent references: XLA's convolution of the
edge-padded input (jnp.pad + lax.conv_general_dilated, differentiated by JAX) and
PyTorch (replicate F.pad + F.conv2d, differentiated by autograd)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ifcnn_jax import conv_ops
from ifcnn_jax.conv_ops import conv_replicate

REPO_ROOT = Path(__file__).resolve().parents[1]


def xla_reference(x: jax.Array, kernel: jax.Array) -> jax.Array:
    pad = (kernel.shape[0] - 1) // 2
    images = x.reshape((-1,) + x.shape[-3:])
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = jax.lax.conv_general_dilated(
        padded,
        kernel,
        (1, 1),
        "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return out.reshape(x.shape[:-1] + (kernel.shape[-1],))


def torch_reference(x: np.ndarray, kernel: np.ndarray, cotangent: np.ndarray):
    """Output, d<out, cotangent>/dx and /dkernel by PyTorch, in NHWC / HWIO."""
    lead = x.shape[:-3]
    pad = (kernel.shape[0] - 1) // 2
    xt = torch.from_numpy(x.reshape((-1,) + x.shape[-3:])).permute(0, 3, 1, 2).requires_grad_()
    kt = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous().requires_grad_()
    out = F.conv2d(F.pad(xt, (pad, pad, pad, pad), mode="replicate"), kt)
    ct = torch.from_numpy(cotangent.reshape((-1,) + cotangent.shape[-3:])).permute(0, 3, 1, 2)
    (out * ct).sum().backward()
    out = out.detach().permute(0, 2, 3, 1).numpy().reshape(lead + out.shape[2:] + (kernel.shape[-1],))
    x_grad = xt.grad.permute(0, 2, 3, 1).numpy().reshape(x.shape)
    k_grad = kt.grad.permute(2, 3, 1, 0).numpy()
    return out, x_grad, k_grad


def random_case(seed: int, lead: tuple[int, ...], height: int, width: int, c_in: int, c_out: int, k: int):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=lead + (height, width, c_in)).astype(np.float32)
    kernel = (rng.normal(size=(k, k, c_in, c_out)) / np.sqrt(k * k * c_in)).astype(np.float32)
    cotangent = rng.normal(size=lead + (height, width, c_out)).astype(np.float32)
    return x, kernel, cotangent


def assert_close(got, want, rtol=2e-6):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    scale = float(np.max(np.abs(want)))
    assert scale > 0
    assert float(np.max(np.abs(got - want))) <= rtol * scale


def value_and_grads(f, x, kernel, cotangent):
    out, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(kernel))
    return (out,) + vjp(jnp.asarray(cotangent))


# Odd sizes, 1 to 3 leading axes, 3x3 and conv1's 7x7 (3 input channels), an image
# smaller than the kernel, and a single pixel.
CASES = [
    ((2,), 11, 13, 5, 7, 3),
    ((2, 3), 37, 21, 4, 6, 3),
    ((3,), 9, 10, 3, 8, 7),
    ((2, 1, 2), 5, 3, 3, 4, 7),
    ((1,), 1, 1, 2, 3, 3),
]


@pytest.mark.parametrize("lead,height,width,c_in,c_out,k", CASES)
@pytest.mark.parametrize("block_pixels", [conv_ops.BLOCK_PIXELS, 24])
def test_values_and_gradients_match_xla(monkeypatch, lead, height, width, c_in, c_out, k, block_pixels):
    # 24 pixels per block: several bands per image, the last one shifted up to overlap.
    monkeypatch.setattr(conv_ops, "BLOCK_PIXELS", block_pixels)
    x, kernel, cotangent = random_case(1, lead, height, width, c_in, c_out, k)
    got = jax.jit(lambda x, k, c: value_and_grads(conv_replicate, x, k, c))(x, kernel, cotangent)
    want = value_and_grads(xla_reference, x, kernel, cotangent)
    for g, w in zip(got, want):
        assert_close(g, w)


@pytest.mark.parametrize("lead,height,width,c_in,c_out,k", CASES[:3])
def test_values_and_gradients_match_pytorch(monkeypatch, lead, height, width, c_in, c_out, k):
    monkeypatch.setattr(conv_ops, "BLOCK_PIXELS", 32)
    x, kernel, cotangent = random_case(2, lead, height, width, c_in, c_out, k)
    got = value_and_grads(conv_replicate, x, kernel, cotangent)
    for g, w in zip(got, torch_reference(x, kernel, cotangent)):
        assert_close(g, w)


def test_one_sided_gradients_match():
    # A frozen kernel (gradient only for the input) and a first layer (gradient only
    # for the kernel) take the code paths that skip the other gradient.
    x, kernel, cotangent = random_case(3, (2,), 12, 9, 4, 5, 3)
    _, want_x, want_k = torch_reference(x, kernel, cotangent)
    x, kernel, cotangent = map(jnp.asarray, (x, kernel, cotangent))
    only_x = jax.grad(lambda x: jnp.sum(conv_replicate(x, jax.lax.stop_gradient(kernel)) * cotangent))
    only_k = jax.grad(lambda k: jnp.sum(conv_replicate(jax.lax.stop_gradient(x), k) * cotangent))
    assert_close(jax.jit(only_x)(x), want_x)
    assert_close(jax.jit(only_k)(kernel), want_k)


def test_vmap_matches():
    x, kernel, _ = random_case(4, (3, 2), 7, 8, 3, 4, 3)
    got = jax.vmap(conv_replicate, in_axes=(0, None))(jnp.asarray(x), jnp.asarray(kernel))
    assert_close(got, xla_reference(jnp.asarray(x), jnp.asarray(kernel)))


def test_bad_kernel_shapes_are_rejected():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="odd k"):
        conv_replicate(x, jnp.zeros((2, 2, 3, 4)))
    with pytest.raises(ValueError, match="C_in = 3"):
        conv_replicate(x, jnp.zeros((3, 3, 5, 4)))


SHARDED_SCRIPT = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    from ifcnn_jax import conv_ops
    from ifcnn_jax.conv_ops import conv_replicate

    conv_ops.BLOCK_PIXELS = 40
    assert jax.device_count() == 8
    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rng = np.random.default_rng(0)
    # IFCNN's layout: (sources, batch, H, W, C) with the batch axis sharded.
    x = rng.normal(size=(2, 8, 9, 11, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    cotangent = rng.normal(size=(2, 8, 9, 11, 5)).astype(np.float32)

    def f(x, kernel, cotangent):
        out, vjp = jax.vjp(conv_replicate, x, kernel)
        return (out,) + vjp(cotangent)

    batch = NamedSharding(mesh, PartitionSpec(None, "data"))
    args = (jax.device_put(x, batch), kernel, jax.device_put(cotangent, batch))
    gathered = jax.jit(f)(*args)  # no mesh context: XLA gathers the batch
    with jax.set_mesh(mesh):  # the op runs per device on its own images
        per_device = jax.jit(f)(*args)
        hlo = jax.jit(f).lower(*args).compile().as_text()
    print(json.dumps({"gathered": [np.asarray(a).tolist() for a in gathered],
                      "per_device": [np.asarray(a).tolist() for a in per_device],
                      "all_gathers": hlo.count("all-gather(")}))
""")


def test_sharded_batch_gives_the_same_values_and_gradients():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=str(REPO_ROOT),
    )
    done = subprocess.run(
        [sys.executable, "-c", SHARDED_SCRIPT],
        check=False,
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["all_gathers"] == 0
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 8, 9, 11, 4)).astype(np.float32)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    cotangent = rng.normal(size=(2, 8, 9, 11, 5)).astype(np.float32)
    want = torch_reference(x, kernel, cotangent)
    for path in ("gathered", "per_device"):
        for g, w in zip(result[path], want):
            assert_close(np.asarray(g, np.float32), w)
