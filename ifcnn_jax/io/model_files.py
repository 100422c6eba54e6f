"""Finding the model that a ``--model`` argument (or ``ifcnn_jax.load``) names: a path,
or the name of one of the authors' released models, fetched once into the user cache.

Names: ``IFCNN-MAX``, ``IFCNN-SUM`` and ``IFCNN-MEAN`` (any case). The first use
downloads the file from the authors' public repository (``RELEASE_URL``), checks it
against the SHA-256 recorded here, and keeps it in ``user_cache_dir() / "weights"``;
later uses read it from there. ``IFCNN_WEIGHTS_URL`` replaces the base URL (a mirror,
or the local server of the tests); ``IFCNN_CACHE_DIR`` moves the cache.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.atomic import write_bytes_atomic
from ifcnn_jax.io.weight_files import shipped_path
from ifcnn_jax.tasks import DEFAULT_RULE

RELEASE_URL = "https://github.com/uzeful/IFCNN/raw/master/Code/snapshots"
URL_ENV = "IFCNN_WEIGHTS_URL"
CACHE_ENV = "IFCNN_CACHE_DIR"
DOWNLOAD_TIMEOUT_S = 60

# name -> (fusion rule, SHA-256 of the authors' file Code/snapshots/<name>.pth)
RELEASED: dict[str, tuple[str, str]] = {
    "IFCNN-MAX": ("max", "6022b44c88a2f0367ba9b08fcdf0d663745d9a966fca0ee1f41867797b6ff53f"),
    "IFCNN-SUM": ("sum", "a8c1d293f1bf16a93e6244a4bf8f7a7bd300dc10555c8597ad7ef3320b0410cb"),
    "IFCNN-MEAN": ("mean", "fd2ee9361f1d428fc9749e28e8a2c5c5ef6ce6528ab6f5ad8ef5def42e7ffa4b"),
}


def user_cache_dir() -> Path:
    """This package's cache folder: ``$IFCNN_CACHE_DIR``, else ``$XDG_CACHE_HOME/ifcnn-jax``,
    else ``~/.cache/ifcnn-jax`` (created on first use, not here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ifcnn-jax"


def released_name(text: str) -> str | None:
    """The canonical released-model name ``text`` stands for (``ifcnn-max`` ->
    ``IFCNN-MAX``), or None."""
    name = str(text).strip().upper()
    return name if name in RELEASED else None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def released_weights(name: str, *, quiet: bool = False) -> Path:
    """The path of the released model ``name``'s ``.pth`` file in the user cache,
    downloaded and checked against its SHA-256 the first time.

    Raises ``IFCNNError`` with one line saying where to put the file when it cannot be
    downloaded (offline) or the download does not match the recorded SHA-256.
    """
    canonical = released_name(name)
    if canonical is None:
        raise IFCNNError(f"{name!r} is not a released model; choose one of {', '.join(RELEASED)}")
    expected = RELEASED[canonical][1]
    folder = user_cache_dir() / "weights"
    path = folder / f"{canonical}.pth"
    if path.is_file() and sha256_of(path) == expected:
        return path
    url = f"{os.environ.get(URL_ENV, RELEASE_URL).rstrip('/')}/{canonical}.pth"
    where = (
        f"put the authors' {canonical}.pth (SHA-256 {expected[:16]}...) at {path}, "
        f"or pass the path of the file as --model"
    )
    if not quiet:
        print(f"downloading {canonical} from {url} (once; kept in {folder})", file=sys.stderr)
    import urllib.error  # noqa: PLC0415 - lazy: only a download needs it (26 ms of every --help)
    import urllib.request  # noqa: PLC0415 - lazy: only a download needs it

    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(64 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise IFCNNError(f"cannot download {canonical} from {url} ({reason}); {where}") from None
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise IFCNNError(
            f"the download of {canonical} from {url} has SHA-256 {got[:16]}..., not the "
            f"recorded {expected[:16]}...; nothing was kept; {where}"
        )
    write_bytes_atomic(path, data)
    return path


def default_model(task: str) -> str:
    """The model a task uses when none is named: the demo's released model (MAX, or
    MEAN for exposure). This project's shipped ``ifcnn-jax-mf`` is not the default: it
    ties with IFCNN-MAX on held-out ground truth but scores below it on the Lytro pairs
    (docs/models.md)."""
    return f"IFCNN-{DEFAULT_RULE[task].upper()}"


def resolve_model_dir(model: str | None, task: str, *, quiet: bool = False) -> Path:
    """The model to use for ``task``.

    ``model`` is a checkpoint directory or a released ``.pth`` file; a folder holding
    ``ifcnn-<rule>/`` or ``IFCNN-<RULE>.pth`` with the demo's rule for ``task``; or a
    released model's name (``IFCNN-MAX``). None picks the demo's released model for
    ``task`` by name (MAX, or MEAN for exposure).
    """
    if model is None:
        model = default_model(task)
    path = Path(model)
    if (path / "metadata").exists() or (path / "params").exists():
        return path
    if path.is_file():
        if path.suffix.lower() in (".pth", ".pt", ".npz"):
            return path
        raise IFCNNError(f"{path}: not a checkpoint directory, a .pth or a .npz weights file")
    if not path.exists() and shipped_path(str(model)) is not None:
        return shipped_path(str(model))
    if not path.exists() and released_name(str(model)):
        return released_weights(str(model), quiet=quiet)
    rule = DEFAULT_RULE[task]
    for candidate in (path / f"ifcnn-{rule}", path / f"IFCNN-{rule.upper()}.pth"):
        if candidate.exists():
            return candidate
    if not path.exists():
        raise IFCNNError(
            f"{path}: no such checkpoint, .pth file or folder (released models by name: "
            f"{', '.join(RELEASED)})"
        )
    raise IFCNNError(
        f"{path} is neither a checkpoint nor a folder with ifcnn-{rule}/ or IFCNN-{rule.upper()}.pth"
    )
