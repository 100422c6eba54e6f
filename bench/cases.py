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
    """One benchmark. Each runner does one repetition and waits for it; a runner in a
    worker process returns that process's clocks (``{"wall_s", "cpu_s"}``)."""

    name: str
    description: str
    # The JAX side: the first entry is the library as users get it (the ratios use it);
    # further entries are bench-only attempts, reported beside it.
    jax_runs: dict[str, Callable[[], object]]
    # The PyTorch variants that ran (bench/torch_variants.py), and per variant its
    # parity with the reference or its error; bench/run.py takes the fastest with
    # parity as the anchor.
    torch_runs: dict[str, Callable[[], object]] = dataclasses.field(default_factory=dict)
    torch_info: dict[str, dict] = dataclasses.field(default_factory=dict)
    # What one repetition processes, for throughput: fused megapixels or training images.
    megapixels: float = 0.0
    images: int = 0
    max_abs_diff: float | None = None  # JAX vs the PyTorch reference, 0-1 scale
    jax_info: dict[str, dict] = dataclasses.field(default_factory=dict)
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()


@dataclasses.dataclass
class TorchPlan:
    """Which PyTorch variants to run: ``in_process`` in this process (with whatever
    allocator it has), ``keep_freed`` in a worker process with train.main's allocator
    settings (reported as ``<variant>+keep_freed``)."""

    in_process: tuple[str, ...]
    keep_freed: tuple[str, ...] = ()
    threads: int = 1
    suffix: str = ""  # appended to the in-process names ("+keep_freed" when this process has it)


def _add_torch(case: Case, runs: dict, info: dict, suffix: str) -> None:
    case.torch_runs.update({name + suffix: run for name, run in runs.items()})
    case.torch_info.update({name + suffix: entry for name, entry in info.items()})


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


def fusion_case(
    name: str,
    description: str,
    models: Models,
    num_sources: int,
    batch: int,
    size: int,
    jax_device: jax.Device,
    torch_device: str,
    plan: TorchPlan,
    seed: int = 0,
    jax_extra: dict[str, Callable] | None = None,
) -> Case:
    """Model time of one fusion call: inputs already on the device, output waited for.
    ``jax_extra``: name -> ``make(sources_jax) -> run`` for bench-only JAX attempts,
    each checked against the same reference."""
    from bench import torch_variants  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    from ifcnn_jax.inference import forward  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    sources = torch_variants.fusion_inputs(num_sources, batch, size, seed)
    sources_jax = jax.device_put(sources, jax_device)
    model_jax = models.jax_model
    reference = torch_variants.reference_output(models.torch_model, sources)
    ref_unit = reference * torch_variants.IMAGENET_STD

    def run_jax():
        return forward(model_jax, sources_jax).block_until_ready()

    def unit_diff(out) -> float:
        return float(np.max(np.abs(np.asarray(out) * torch_variants.IMAGENET_STD - ref_unit)))

    case = Case(
        name,
        description,
        {"library": run_jax},
        megapixels=batch * size * size / 1e6,
        max_abs_diff=unit_diff(run_jax()),
    )
    for extra, make in (jax_extra or {}).items():
        try:
            run = make(sources_jax)
            case.jax_info[extra] = {"max_abs_diff_vs_reference": unit_diff(run())}
            case.jax_runs[extra] = run
        except Exception as exc:  # noqa: BLE001 - a failed attempt is reported, not fatal
            case.jax_info[extra] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
    runs, info = torch_variants.fusion_variants(
        models.torch_model, sources, torch_device, plan.in_process, reference
    )
    _add_torch(case, runs, info, plan.suffix)
    if plan.keep_freed:
        worker = torch_variants.VariantWorker(
            name,
            plan.keep_freed,
            threads=plan.threads,
            device=torch_device,
            release=release_dir(),
            spec={"num_sources": num_sources, "batch": batch, "size": size, "seed": seed},
        )
        case.closers.append(worker.close)
        info = worker.info["variants"]
        runs = {n: worker.runner(n) for n, entry in info.items() if "max_abs_diff_vs_reference" in entry}
        _add_torch(case, runs, info, torch_variants.KEEP_FREED)
    return case


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


def train_step_case(
    jax_device: jax.Device,
    torch_device: str,
    plan: TorchPlan,
    batch: int = 8,
    size: int = 128,
    seed: int = 0,
    run_jax: Callable[[], object] | None = None,
) -> Case:
    """The train_step case; ``run_jax`` replaces the in-process JAX step (bench/run.py
    passes one that runs the step in a worker process with ``train.main``'s process
    settings)."""
    from bench import torch_variants  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    if run_jax is None:
        run_jax = jax_train_step(jax_device, batch, size, seed)
    case = Case(
        "train_step",
        TRAIN_STEP_DESCRIPTION.format(batch=batch, size=size),
        {"library": run_jax},
        images=batch,
    )
    reference = torch_variants.build_train_variant("default", "cpu", batch, size, seed)[1]()
    runs, info = torch_variants.train_variants(torch_device, plan.in_process, batch, size, seed, reference)
    _add_torch(case, runs, info, plan.suffix)
    if plan.keep_freed:
        worker = torch_variants.VariantWorker(
            "train_step",
            plan.keep_freed,
            threads=plan.threads,
            device=torch_device,
            release=None,
            spec={"batch": batch, "size": size, "seed": seed},
        )
        case.closers.append(worker.close)
        info = worker.info["variants"]
        runs = {n: worker.runner(n) for n, entry in info.items() if "max_abs_diff_vs_reference" in entry}
        _add_torch(case, runs, info, torch_variants.KEEP_FREED)
    return case


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
        {"library": run_jax},
        megapixels=size * size / 1e6,
    )
