"""``from_torch.py ifcnn``: the authors' released IFCNN state dicts to an Orbax checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from convert import common
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.inference import forward
from ifcnn_jax.io.checkpoints import save_params
from ifcnn_jax.io.state_dicts import (
    EXPECTED_SHAPES,
    check_state_dict,
    rule_from_filename,
    state_dict_to_params,
)
from ifcnn_jax.model import model_from_params

VERIFY_TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="released state dict, e.g. IFCNN-MAX.pth")
    parser.add_argument("out_dir", help="checkpoint directory to create")
    parser.add_argument(
        "--fuse-rule",
        choices=("max", "sum", "mean"),
        help="fusion rule; default: read from the file name (IFCNN-MAX/SUM/MEAN)",
    )
    parser.add_argument(
        "--verify", action="store_true", help="compare against PyTorch on random input before writing"
    )
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def verify(params: dict, state: dict[str, np.ndarray], rule: str) -> float:
    """Largest absolute difference between JAX and PyTorch on random input."""
    common.require_torch()
    # Imported here: torch is optional, and only --verify needs the PyTorch reference.
    from convert.torch_reference import reference_from_state, run_reference  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    rng = np.random.default_rng(0)
    sources = rng.normal(size=(2, 1, 67, 45, 3)).astype(np.float32)
    ours = np.asarray(forward(model_from_params(params, rule), sources))
    reference = run_reference(reference_from_state(state, rule), sources)
    return float(np.max(np.abs(ours - reference)))


def run(args: argparse.Namespace) -> int:

    common.refuse_existing(args.out_dir, args.force)
    state = common.load_torch_state_dict(args.src)
    check_state_dict(state, EXPECTED_SHAPES, args.src, "IFCNN")
    rule = args.fuse_rule or rule_from_filename(args.src)
    if rule is None:
        raise IFCNNError(
            f"{args.src}: cannot tell the fusion rule from the file name; pass --fuse-rule max|sum|mean"
        )
    params = state_dict_to_params(state)
    if args.verify:
        diff = verify(params, state, rule)
        print(f"verify: largest absolute difference vs PyTorch = {diff:.3g} (tolerance {VERIFY_TOLERANCE:g})")
        if not diff <= VERIFY_TOLERANCE:
            raise IFCNNError(
                f"{args.src}: verification failed, difference {diff:.3g} > "
                f"{VERIFY_TOLERANCE:g}; nothing written"
            )
    metadata = {
        "kind": "ifcnn",
        "fuse_rule": rule,
        "source_file": Path(args.src).name,
        "source_sha256": common.sha256_of(args.src),
        "converted_by": "convert/from_torch.py ifcnn",
    }
    out = save_params(args.out_dir, params, metadata, force=args.force)
    print(f"wrote {out} (IFCNN, fuse rule {rule}, from {Path(args.src).name})")
    return 0
