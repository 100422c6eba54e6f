"""The benchmark cases: each builds a JAX callable and, where it can, the equivalent
PyTorch callable, ready to be timed by ``bench/run.py``.

Both sides compute the same thing from the same inputs: the PyTorch side is the
reference IFCNN of ``convert/torch_reference.py`` (the authors' semantics), in float32.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RELEASE_DIR = REPO_ROOT.parent / "shared" / "ifcnn-release"


@dataclasses.dataclass
class Case:
    """One benchmark: ``run_jax`` / ``run_torch`` do one repetition and wait for it."""

    name: str
    description: str
    run_jax: Callable[[], object]
    run_torch: Callable[[], object] | None
    # What one repetition processes, for throughput: fused megapixels or training images.
    megapixels: float = 0.0
    images: int = 0
    max_abs_diff: float | None = None  # JAX vs PyTorch output, where comparable


@dataclasses.dataclass
class Models:
    """The MAX model on both sides, with the same weights."""

    jax_model: object
    torch_model: object
    weights: str  # where the weights came from


def release_dir() -> Path | None:
    env = os.environ.get("IFCNN_RELEASE_DIR")
    path = Path(env) if env else DEFAULT_RELEASE_DIR
    return path if (path / "snapshots" / "IFCNN-MAX.pth").is_file() else None


def load_models(torch_device: str) -> Models:
    """The released MAX model (random weights of the same shapes if the release files
    are missing: timing does not depend on the values)."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    from convert.torch_reference import ReferenceIFCNN, params_from_reference  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    from ifcnn_jax.model import model_from_params  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    reference = ReferenceIFCNN("max")
    found = release_dir()
    if found is not None:
        pth = found / "snapshots" / "IFCNN-MAX.pth"
        reference.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
        weights = "released IFCNN-MAX.pth"
    else:
        weights = "random (release files not found)"
    jax_model = model_from_params(params_from_reference(reference), "max")
    return Models(jax_model, reference.eval().to(torch_device), weights)


def _torch_sync(device: str) -> None:
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def fusion_case(
    name: str,
    description: str,
    models: Models,
    num_sources: int,
    batch: int,
    size: int,
    jax_device: jax.Device,
    torch_device: str,
    seed: int = 0,
) -> Case:
    """Model time of one fusion call: inputs already on the device, output waited for."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    from ifcnn_jax.inference import forward  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(num_sources, batch, size, size, 3)).astype(np.float32)
    sources_jax = jax.device_put(sources, jax_device)
    tensors = [
        torch.from_numpy(np.ascontiguousarray(s)).permute(0, 3, 1, 2).contiguous().to(torch_device)
        for s in sources
    ]
    model_jax, model_torch = models.jax_model, models.torch_model

    def run_jax():
        return forward(model_jax, sources_jax).block_until_ready()

    def run_torch():
        with torch.no_grad():
            out = model_torch(*tensors)
        _torch_sync(torch_device)
        return out

    ours = np.asarray(run_jax())
    theirs = run_torch().permute(0, 2, 3, 1).cpu().numpy()
    return Case(
        name,
        description,
        run_jax,
        run_torch,
        megapixels=batch * size * size / 1e6,
        max_abs_diff=float(np.max(np.abs(ours - theirs))),
    )


TRAIN_STEP_DESCRIPTION = (
    "one training step, batch {batch}, {size}x{size} crops, 2 sources, pixel + "
    "perceptual (ResNet-101 layer1) loss, Adam, conv1 frozen"
)


def jax_train_step(
    jax_device: jax.Device | None = None, batch: int = 8, size: int = 128, seed: int = 0
) -> Callable[[], object]:
    """One repetition of the project's real training step: ``train.step.make_train_step``
    on the default config (IFCNN-MAX, conv1 frozen, pixel + perceptual loss on
    ResNet-101 ``layer1``, Adam through ``make_optimizer``), a uint8 batch of 2 sources
    as the input pipeline delivers it, jitted and sharded as ``train_and_evaluate`` does
    it: over every device of ``jax_device``'s platform (batch-sharded when there are
    several, as under ``python -m train.main`` on a multi-core CPU). The ResNet-101 is
    randomly initialised (nothing is downloaded; the cost does not depend on the values)."""
    from flax import nnx  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    from ifcnn_jax.resnet import ResNet101  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from train import step as training  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from train.configs import default  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    config = default.get_config()
    config.batch_size, config.data.crop_size, config.seed = batch, size, seed
    devices = jax.devices(jax_device.platform) if jax_device is not None else jax.devices()
    mesh = Mesh(np.asarray(devices), (training.DATA_AXIS,))
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec(training.DATA_AXIS))
    host_state, optimizer = training.initial_state(config)
    resnet_graphdef, resnet_state = nnx.split(ResNet101(rngs=nnx.Rngs(seed)))
    state = training.replicate(host_state, replicated)
    resnet_state = training.replicate(resnet_state, replicated)
    rng = np.random.default_rng(seed)
    inputs = training.shard_batch(
        {
            "sources": rng.integers(0, 256, (batch, 2, size, size, 3), dtype=np.uint8),
            "target": rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8),
        },
        batch_sharding,
    )
    step = jax.jit(
        training.make_train_step(config, optimizer, resnet_graphdef),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
    )
    holder = {"state": state}

    def run_jax():
        with jax.set_mesh(mesh):
            holder["state"], metrics = step(holder["state"], inputs, resnet_state)
        return metrics["loss"].block_until_ready()

    return run_jax


def torch_train_step(
    torch_device: str, batch: int = 8, size: int = 128, seed: int = 0
) -> Callable[[], object]:
    """The same step in PyTorch: the reference IFCNN in training mode with conv1 frozen,
    torchvision's ResNet-101 (random, frozen) up to layer1, pixel + perceptual MSE,
    Adam (lr 1e-4) over the trained parameters."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    import torchvision  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    from convert.torch_reference import ReferenceIFCNN  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(2, batch, size, size, 3)).astype(np.float32)
    target = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    torch.manual_seed(seed)
    net = ReferenceIFCNN("max").train().to(torch_device)
    net.conv1.weight.requires_grad_(False)  # frozen, as in the JAX config (and the paper)
    resnet = torchvision.models.resnet101(weights=None).eval().to(torch_device)
    layer1 = torch.nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1)
    for p in layer1.parameters():
        p.requires_grad_(False)
    adam = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    to_nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    sources_torch = [to_nchw(s).to(torch_device) for s in sources]
    target_torch = to_nchw(target).to(torch_device)

    def run_torch():
        adam.zero_grad(set_to_none=True)
        fused = net(*sources_torch)
        with torch.no_grad():
            target_features = layer1(target_torch)
        loss = torch.nn.functional.mse_loss(fused, target_torch) + torch.nn.functional.mse_loss(
            layer1(fused), target_features
        )
        loss.backward()
        adam.step()
        _torch_sync(torch_device)
        return loss

    return run_torch


def train_step_case(
    jax_device: jax.Device,
    torch_device: str,
    batch: int = 8,
    size: int = 128,
    seed: int = 0,
    run_jax: Callable[[], object] | None = None,
) -> Case:
    """The train_step case; ``run_jax`` replaces the in-process JAX step (bench/run.py
    passes one that runs the step in a worker process with ``train.main``'s process
    settings)."""
    if run_jax is None:
        run_jax = jax_train_step(jax_device, batch, size, seed)
    return Case(
        "train_step",
        TRAIN_STEP_DESCRIPTION.format(batch=batch, size=size),
        run_jax,
        torch_train_step(torch_device, batch, size, seed),
        images=batch,
    )


ALIGN_PAIR_DESCRIPTION = (
    "register one 520x520 RGB pair (ifcnn_jax.align, homography, coarse to fine ECC): "
    "lytro-01-A and lytro-01-B warped by a known small homography"
)


def align_case(size: int = 520, method: str = "homography") -> Case:
    """Registration of one pair, as ``ifcnn-fuse --align`` runs it before fusing: the
    release multi-focus pair lytro-01 with B warped by a small homography (a smooth
    random texture of the same size if the release images are missing). NumPy and
    OpenCV only: no PyTorch counterpart."""
    import cv2  # noqa: PLC0415 - lazy: only this case needs OpenCV

    from ifcnn_jax.align import align  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from ifcnn_jax.io.images import read_image  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    env = os.environ.get("IFCNN_RELEASE_DIR")
    folder = (Path(env) if env else DEFAULT_RELEASE_DIR) / "datasets" / "CMFDataset"
    if (folder / "lytro-01-A.jpg").is_file():
        a, b = (read_image(folder / f"lytro-01-{s}.jpg")[:size, :size] for s in "AB")
        source = "release lytro-01"
    else:
        rng = np.random.default_rng(0)
        noise = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 3)
        a = b = np.clip((noise - noise.min()) / np.ptp(noise) * 255, 0, 255).astype(np.uint8)
        source = "synthetic texture (release images not found)"
    c = (size - 1) / 2
    centre = np.array([[1, 0, -c], [0, 1, -c], [0, 0, 1.0]])
    warp = (
        np.linalg.inv(centre)
        @ np.array([[1.01, 0.015, 3.0], [-0.012, 0.995, -2.0], [5e-5, -4e-5, 1]])
        @ centre
    )
    b = cv2.warpPerspective(b, warp, (size, size), flags=cv2.INTER_CUBIC)

    def run_jax():
        return align([a, b], method=method)

    return Case(
        "align_pair",
        ALIGN_PAIR_DESCRIPTION + f" ({source})",
        run_jax,
        None,
        megapixels=size * size / 1e6,
    )
