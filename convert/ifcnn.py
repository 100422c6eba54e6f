"""``from_torch.py ifcnn``: the authors' released IFCNN state dicts to an Orbax checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from convert import common
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.released import (EXPECTED_SHAPES, check_state_dict, rule_from_filename,
                                state_dict_to_params)

VERIFY_TOLERANCE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="released state dict, e.g. IFCNN-MAX.pth")
    parser.add_argument("out_dir", help="checkpoint directory to create")
    parser.add_argument("--fuse-rule", choices=("max", "sum", "mean"),
                        help="fusion rule; default: read from the file name (IFCNN-MAX/SUM/MEAN)")
    parser.add_argument("--verify", action="store_true",
                        help="compare against PyTorch on random input before writing")
    parser.add_argument("--force", action="store_true", help="replace OUT_DIR if it exists")


def torch_forward(state: dict[str, np.ndarray], sources: np.ndarray, rule: str) -> np.ndarray:
    """The released model's forward pass written with torch.nn.functional.

    ``sources`` is ``(N, B, H, W, 3)``; returns ``(B, H, W, 3)``.
    """
    torch = common.require_torch()
    F = torch.nn.functional
    w = {k: torch.from_numpy(v) for k, v in state.items()}

    def block(x, name):
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), w[f"{name}.conv.weight"])
        x = F.batch_norm(x, w[f"{name}.bn.running_mean"], w[f"{name}.bn.running_var"],
                         w[f"{name}.bn.weight"], w[f"{name}.bn.bias"], training=False, eps=1e-5)
        return F.relu(x)

    with torch.no_grad():
        feats = []
        for src in torch.from_numpy(np.ascontiguousarray(sources)).permute(0, 1, 4, 2, 3):
            x = F.conv2d(F.pad(src, (3, 3, 3, 3), mode="replicate"), w["conv1.weight"])
            feats.append(block(x, "conv2"))
        stacked = torch.stack(feats)
        fused = {"max": lambda t: t.max(0).values, "sum": lambda t: t.sum(0),
                 "mean": lambda t: t.mean(0)}[rule](stacked)
        out = F.conv2d(block(fused, "conv3"), w["conv4.weight"], w["conv4.bias"])
    return out.permute(0, 2, 3, 1).numpy()


def verify(params: dict, state: dict[str, np.ndarray], rule: str) -> float:
    """Largest absolute difference between JAX and PyTorch on random input."""
    from ifcnn_jax.inference import forward
    from ifcnn_jax.model import model_from_params

    rng = np.random.default_rng(0)
    sources = rng.normal(size=(2, 1, 67, 45, 3)).astype(np.float32)
    ours = np.asarray(forward(model_from_params(params, rule), sources))
    reference = torch_forward(state, sources, rule)
    return float(np.max(np.abs(ours - reference)))


def run(args: argparse.Namespace) -> int:
    from ifcnn_jax.checkpoints import save_params

    common.refuse_existing(args.out_dir, args.force)
    state = common.load_torch_state_dict(args.src)
    check_state_dict(state, EXPECTED_SHAPES, args.src, "IFCNN")
    rule = args.fuse_rule or rule_from_filename(args.src)
    if rule is None:
        raise IFCNNError(f"{args.src}: cannot tell the fusion rule from the file name; "
                         "pass --fuse-rule max|sum|mean")
    params = state_dict_to_params(state)
    if args.verify:
        diff = verify(params, state, rule)
        print(f"verify: largest absolute difference vs PyTorch = {diff:.3g} "
              f"(tolerance {VERIFY_TOLERANCE:g})")
        if not diff <= VERIFY_TOLERANCE:
            raise IFCNNError(f"{args.src}: verification failed, difference {diff:.3g} > "
                             f"{VERIFY_TOLERANCE:g}; nothing written")
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
