"""Temporary files and folders that atomic writes create, so an interruption can
remove them.

Every atomic writer of this package (``image_io.write_bytes_atomic``,
``checkpoints.atomic_directory``) registers its temporary path *before* creating it
and forgets it once it is renamed into place or removed. When a command is stopped
by Ctrl-C or SIGTERM, ``errors.run_command`` calls :func:`remove_all` before it exits,
so no ``.NAME.*.tmp`` file or half-written checkpoint folder is left behind.
"""

from __future__ import annotations

import glob
import os
import shutil
import threading
from pathlib import Path

_lock = threading.Lock()
_paths: set[str] = set()


def register(path: str | os.PathLike) -> None:
    """Notes ``path`` (a file or folder about to be created) for removal on interruption."""
    with _lock:
        _paths.add(os.fspath(path))


def forget(path: str | os.PathLike) -> None:
    """``path`` was renamed into place or removed: nothing to clean up any more."""
    with _lock:
        _paths.discard(os.fspath(path))


def remove(path: str | os.PathLike) -> None:
    """Removes ``path`` (file or folder) and Orbax's working folders beside it
    (``PATH.orbax-checkpoint-tmp*``), ignoring what is already gone."""
    path = os.fspath(path)
    for target in [path, *glob.glob(glob.escape(path) + ".orbax-checkpoint-tmp*")]:
        if os.path.isdir(target) and not os.path.islink(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.lexists(target):
            try:
                os.unlink(target)
            except OSError:
                pass
    forget(path)


def remove_all() -> None:
    """Removes every registered temporary path (called on interruption)."""
    with _lock:
        pending = list(_paths)
    for path in pending:
        remove(Path(path))
