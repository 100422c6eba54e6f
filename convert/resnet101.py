"""``from_torch.py resnet101``: a torchvision ResNet-101 state dict to an Orbax checkpoint.

The checkpoint holds the feature stack of ``ifcnn_jax.resnet.ResNet101`` (no classifier):
IFCNN takes its conv1 from it (``ifcnn_jax.model.new_ifcnn(conv1_from=DIR)``), and the
perceptual loss uses its features.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from urllib.parse import urlparse

import jax
import numpy as np

from convert import common
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io import state_dicts
from ifcnn_jax.io.checkpoints import save_params
from ifcnn_jax.resnet import (
    BLOCKS_PER_LAYER,
    BOTTLENECK_WIDTHS,
    CHECKPOINT_KIND,
    EXPANSION,
    LAYER_NAMES,
    STEM_FEATURES,
    TAPS,
    resnet101_from_params,
)

TORCHVISION_WEIGHTS = ("IMAGENET1K_V1", "IMAGENET1K_V2")
# The classifier is not part of the feature stack; any number of classes is accepted.
CLASSIFIER_PREFIX = "fc."
VERIFY_TOLERANCE = 1e-4  # max |ours - torch| / max |torch|, per tap
VERIFY_INPUT_SHAPE = (2, 97, 131, 3)  # odd sizes exercise the stride/padding arithmetic

_BN_FIELDS = (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"), ("running_var", "var"))


def _network_layout() -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[tuple[str, ...], bool]]]:
    """torchvision key -> shape, and torchvision key -> (tree path, is conv kernel), both in
    network order so that the first mismatch reported is the first one in the network."""
    shapes: dict[str, tuple[int, ...]] = {}
    paths: dict[str, tuple[tuple[str, ...], bool]] = {}

    def conv(key: str, path: tuple[str, ...], out_ch: int, in_ch: int, size: int) -> None:
        shapes[f"{key}.weight"] = (out_ch, in_ch, size, size)
        paths[f"{key}.weight"] = (path + ("kernel",), True)

    def bn(key: str, path: tuple[str, ...], channels: int) -> None:
        for torch_name, flax_name in _BN_FIELDS:
            shapes[f"{key}.{torch_name}"] = (channels,)
            paths[f"{key}.{torch_name}"] = (path + (flax_name,), False)

    conv("conv1", ("conv1",), STEM_FEATURES, 3, 7)
    bn("bn1", ("bn1",), STEM_FEATURES)
    in_ch = STEM_FEATURES
    for layer, blocks, width in zip(LAYER_NAMES, BLOCKS_PER_LAYER, BOTTLENECK_WIDTHS):
        out_ch = width * EXPANSION
        for index in range(blocks):
            key, path = f"{layer}.{index}", (layer, str(index))
            conv(f"{key}.conv1", path + ("conv1",), width, in_ch, 1)
            bn(f"{key}.bn1", path + ("bn1",), width)
            conv(f"{key}.conv2", path + ("conv2",), width, width, 3)
            bn(f"{key}.bn2", path + ("bn2",), width)
            conv(f"{key}.conv3", path + ("conv3",), out_ch, width, 1)
            bn(f"{key}.bn3", path + ("bn3",), out_ch)
            if index == 0:
                conv(f"{key}.downsample.0", path + ("downsample", "conv"), out_ch, in_ch, 1)
                bn(f"{key}.downsample.1", path + ("downsample", "bn"), out_ch)
            in_ch = out_ch
    return shapes, paths


EXPECTED_SHAPES, KEY_MAP = _network_layout()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src",
        nargs="?",
        help="torchvision ResNet-101 state dict, e.g. resnet101-63fe2227.pth "
        "(omit with --torchvision-weights)",
    )
    parser.add_argument("out_dir", help="checkpoint directory to create")
    parser.add_argument(
        "--torchvision-weights",
        choices=TORCHVISION_WEIGHTS,
        help="instead of SRC, use torchvision's ImageNet weights (downloaded "
        "into torch's hub cache, $TORCH_HOME, unless already there)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare every feature tap against torchvision on random input before writing",
    )
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def strip_classifier(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The state dict without the fully connected head."""
    return {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIX)}


def state_dict_to_params(state: dict[str, np.ndarray]) -> dict:
    """Maps a checked torchvision ResNet-101 state dict to the tree of ``ResNet101``."""
    return state_dicts.state_dict_to_params(state, KEY_MAP)


def torchvision_features(state: dict[str, np.ndarray], images: np.ndarray) -> dict[str, np.ndarray]:
    """Every tap of ``torchvision.models.resnet101`` holding ``state``, in eval mode.

    ``images`` are ImageNet-normalised ``(B, H, W, 3)``; features come back NHWC.
    """
    torch = common.require_torch()
    try:
        import torchvision  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    except ImportError as exc:
        raise IFCNNError("--verify needs torchvision: pip install 'ifcnn-jax[torch]'") from exc
    net = torchvision.models.resnet101(weights=None)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    result = net.load_state_dict(tensors, strict=False)
    # Only the BatchNorm counters (dropped on reading) and an absent classifier may be missing.
    missing = [
        k
        for k in result.missing_keys
        if not k.endswith(common.IGNORED_SUFFIXES) and not k.startswith(CLASSIFIER_PREFIX)
    ]
    if missing or result.unexpected_keys:
        raise IFCNNError(
            f"torchvision could not load the weights (missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    net.eval()
    features = {}
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
        x = net.conv1(x)
        features["conv1"] = x
        x = net.relu(net.bn1(x))
        features["relu"] = x
        x = net.maxpool(x)
        for name in LAYER_NAMES:
            x = getattr(net, name)(x)
            features[name] = x
    return {k: v.permute(0, 2, 3, 1).numpy() for k, v in features.items()}


def verify(params: dict, state: dict[str, np.ndarray], seed: int = 0) -> dict[str, float]:
    """Per tap, max |JAX - torchvision| / max |torchvision| on random input."""

    images = np.random.default_rng(seed).normal(size=VERIFY_INPUT_SHAPE).astype(np.float32)
    reference = torchvision_features(state, images)
    # Full float32 convolutions: accelerators may otherwise use reduced-precision passes.
    with jax.default_matmul_precision("highest"):
        ours = resnet101_from_params(params)(jax.numpy.asarray(images), taps=TAPS)
        ours = {k: np.asarray(v) for k, v in ours.items()}
    return {
        tap: float(np.max(np.abs(ours[tap] - reference[tap])) / np.max(np.abs(reference[tap])))
        for tap in TAPS
    }


def torchvision_weights_file(name: str) -> Path:
    """The local copy of torchvision's ResNet-101 ``name`` weights, downloading it into
    torch's hub cache (``$TORCH_HOME/hub/checkpoints``) if it is not there yet."""
    torch = common.require_torch()
    try:
        from torchvision.models import ResNet101_Weights  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    except ImportError as exc:
        raise IFCNNError("--torchvision-weights needs torchvision: pip install 'ifcnn-jax[torch]'") from exc
    url = ResNet101_Weights[name].url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)
    if cached.is_file():
        return cached
    print(f"downloading {url} to {cached}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        # torch writes a temporary file and renames it, and checks the hash in the name.
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=_hash_in_name(cached), progress=True)
    except Exception as exc:  # urllib, socket and hash errors have many types
        detail = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise IFCNNError(
            f"cannot download torchvision {name} weights from {url} "
            f"({type(exc).__name__}{': ' + detail if detail else ''}); without "
            "internet, copy the file to a local path and pass it as SRC"
        ) from exc
    return cached


def _hash_in_name(path: Path) -> str | None:
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    return match.group(1) if match else None


def run(args: argparse.Namespace) -> int:

    if args.src and args.torchvision_weights:
        raise IFCNNError(
            f"give either SRC ({args.src}) or --torchvision-weights {args.torchvision_weights}, not both"
        )
    if not args.src and not args.torchvision_weights:
        raise IFCNNError(
            f"give a ResNet-101 state dict SRC or --torchvision-weights {'|'.join(TORCHVISION_WEIGHTS)}"
        )
    common.refuse_existing(args.out_dir, args.force)
    src = Path(args.src) if args.src else torchvision_weights_file(args.torchvision_weights)
    state = strip_classifier(common.load_torch_state_dict(src))
    common.check_state_dict(state, EXPECTED_SHAPES, src, "torchvision ResNet-101")
    params = state_dict_to_params(state)
    if args.verify:
        errors = verify(params, state)
        for tap, err in errors.items():
            print(f"verify: {tap:7s} max |JAX - torchvision| / max |torchvision| = {err:.3g}")
        # `not <=` also catches NaN, which every comparison would let through.
        failed = [tap for tap, err in errors.items() if not err <= VERIFY_TOLERANCE]
        if failed:
            raise IFCNNError(
                f"{src}: verification failed at {failed[0]}, relative difference "
                f"{errors[failed[0]]:.3g} > {VERIFY_TOLERANCE:g}; nothing written"
            )
        print(f"verify: all taps within {VERIFY_TOLERANCE:g}")
    sha256 = common.sha256_of(src)
    expected_prefix = _hash_in_name(src) if args.torchvision_weights else None
    if expected_prefix and not sha256.startswith(expected_prefix):
        print(
            f"warning: {src} has SHA-256 {sha256[:12]}..., not the {expected_prefix} in its "
            "name; the cached download may be damaged"
        )
    metadata = {
        "kind": CHECKPOINT_KIND,
        "source_file": src.name,
        "source_sha256": sha256,
        "converted_by": "convert/from_torch.py resnet101",
    }
    if args.torchvision_weights:
        metadata["torchvision_weights"] = f"ResNet101_Weights.{args.torchvision_weights}"
    out = save_params(args.out_dir, params, metadata, force=args.force)
    print(f"wrote {out} (ResNet-101 feature stack, from {src.name})")
    return 0
