"""Shared fixtures: where the authors' release files are, and converted checkpoints."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from convert.from_torch import main as convert_main
from ifcnn_jax.model import load

REPO_ROOT = Path(__file__).resolve().parents[1]

# The commands keep downloaded weights and compiled programs in the user cache; the
# tests (and the commands they start) use a folder of their own instead.
os.environ.setdefault("IFCNN_CACHE_DIR", tempfile.mkdtemp(prefix="ifcnn-test-cache-"))
DEFAULT_RELEASE_DIR = REPO_ROOT.parent / "shared" / "ifcnn-release"


def release_dir_or_skip() -> Path:
    """The folder with the authors' snapshots/ and datasets/.

    Taken from $IFCNN_RELEASE_DIR, else ../shared/ifcnn-release beside the checkout.
    Missing: a failure when CI=true, a skip with instructions elsewhere.
    """
    env = os.environ.get("IFCNN_RELEASE_DIR")
    path = Path(env) if env else DEFAULT_RELEASE_DIR
    if (path / "snapshots" / "IFCNN-MAX.pth").is_file() and (path / "datasets").is_dir():
        return path
    message = (
        f"IFCNN release files not found at {path}: put the authors' Code/snapshots/*.pth "
        "and Code/datasets/ (github.com/uzeful/IFCNN) in ../shared/ifcnn-release/"
        "{snapshots,datasets} or set IFCNN_RELEASE_DIR"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def release_dir() -> Path:
    return release_dir_or_skip()


RELEASED_RULES = {"max": "IFCNN-MAX.pth", "sum": "IFCNN-SUM.pth", "mean": "IFCNN-MEAN.pth"}


@pytest.fixture(scope="session")
def converted_checkpoints(release_dir, tmp_path_factory) -> dict[str, Path]:
    """The three released models converted once per session: {'max'|'sum'|'mean': dir}."""

    out_root = tmp_path_factory.mktemp("converted")
    converted = {}
    for rule, name in RELEASED_RULES.items():
        out = out_root / f"ifcnn-{rule}"
        assert convert_main(["ifcnn", str(release_dir / "snapshots" / name), str(out)]) == 0
        converted[rule] = out
    return converted


@pytest.fixture(scope="session")
def released_models(release_dir, converted_checkpoints) -> dict:
    """{'max'|'sum'|'mean': (our model loaded from the converted checkpoint, the PyTorch
    reference holding the same released weights)}. Shared: tests must not modify them."""
    from convert.torch_reference import load_reference  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    return {
        rule: (load(str(converted_checkpoints[rule])), load_reference(release_dir / "snapshots" / name, rule))
        for rule, name in RELEASED_RULES.items()
    }


@pytest.fixture()
def full_disk(tmp_path) -> Path:
    """A real, nearly full file system: a 256 KiB tmpfs (needs root; skipped otherwise)."""

    mount_point = tmp_path / "full"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root) to simulate a full disk")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
