"""Finding the model file that a ``--model`` argument names."""

from __future__ import annotations

from pathlib import Path

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.tasks import DEFAULT_RULE


def resolve_model_dir(model: str, task: str) -> Path:
    """The model to use: ``model`` itself (a checkpoint directory or a released ``.pth``),
    or, inside a folder, ``ifcnn-<rule>/`` or ``IFCNN-<RULE>.pth`` with the demo's rule
    for ``task``."""
    path = Path(model)
    if (path / "metadata").exists() or (path / "params").exists():
        return path
    if path.is_file():
        if path.suffix.lower() in (".pth", ".pt"):
            return path
        raise IFCNNError(f"{path}: not a checkpoint directory or a .pth file")
    rule = DEFAULT_RULE[task]
    for candidate in (path / f"ifcnn-{rule}", path / f"IFCNN-{rule.upper()}.pth"):
        if candidate.exists():
            return candidate
    if not path.exists():
        raise IFCNNError(f"{path}: no such checkpoint directory")
    raise IFCNNError(
        f"{path} is neither a checkpoint nor a folder with ifcnn-{rule}/ or IFCNN-{rule.upper()}.pth"
    )
