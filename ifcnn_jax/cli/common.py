"""What every command line shares: the wrapper that gives all of them the same exits
(one line and 2 for user errors, 130 on Ctrl-C, no temporary files left)."""

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from ifcnn_jax.errors import IFCNNError, describe_os_error
from ifcnn_jax.io import temporaries
from ifcnn_jax.io.model_files import user_cache_dir


def _exit_now(message: str, status: int) -> None:
    # Leave at once: the interpreter's teardown with XLA, Orbax or Grain threads still
    # running can crash (a segfault after the message); temporary files go first.
    temporaries.remove_all()
    try:
        print(message, file=sys.stderr, flush=True)
        sys.stdout.flush()
    finally:
        os._exit(status)


def run_command(
    body: Callable[[], int], *, interrupted: str = "interrupted", stop_at_once: bool = True
) -> int:
    """Runs a command-line tool's ``body`` and returns its exit status.

    User errors (``IFCNNError``, and ``OSError`` such as a full disk or a read-only
    folder) print ``error: <message>`` on one line and give 2. Ctrl-C (SIGINT) and
    SIGTERM print ``interrupted`` on one line, remove the temporary files of
    unfinished atomic writes, and exit the process with 130 (143 for SIGTERM).
    With ``stop_at_once`` (the default) that happens as soon as the signal arrives;
    without it (training) ``KeyboardInterrupt`` is raised first, so ``finally`` blocks
    can wait for checkpoints being written. Other exceptions are bugs and keep their
    traceback.
    """
    previous, received = {}, [signal.SIGINT]
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum, _frame):
            received[0] = signum
            if stop_at_once:
                _exit_now(interrupted, 128 + signum)
            raise KeyboardInterrupt

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
    try:
        return body()
    except IFCNNError as exc:
        print(f"error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _exit_now(interrupted, 128 + received[0])
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 130  # not reached: _exit_now leaves the process


# ------------------------------------------------------------ lazy imports


class LazyModule:
    """A stand-in for a module that imports it on first attribute access: the commands
    bind heavy modules (the JAX metrics) at module level with it, so that ``--help`` and
    early user errors return before JAX is imported."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


# ------------------------------------------------------------ compilation cache

COMPILATION_CACHE_ENV = "IFCNN_COMPILATION_CACHE"


def add_compilation_cache_argument(parser: argparse.ArgumentParser) -> None:
    """``--compilation-cache DIR|off``: where compiled XLA programs are kept between runs."""
    parser.add_argument(
        "--compilation-cache",
        metavar="DIR|off",
        default=None,
        help="persistent JAX compilation cache, so repeated runs skip compiling (default: "
        f"${COMPILATION_CACHE_ENV}, else the user cache folder's jax/; 'off' disables it)",
    )


def enable_compilation_cache(setting: str | None = None) -> Path | None:
    """Turns on JAX's persistent compilation cache in ``setting`` (a folder), else in
    ``$IFCNN_COMPILATION_CACHE``, else in ``user_cache_dir() / "jax"``; ``off`` (or
    ``0``, ``none``) disables it. Returns the folder used, or None. A folder that cannot
    be created or written gives a one-line warning and no cache, never an error.

    Does not import JAX: if JAX is imported already it is configured at once, else
    through its environment variables (``JAX_COMPILATION_CACHE_DIR``...), which it
    reads when it is imported, later in this process, if ever (a fusion served by
    ``ifcnn_jax.aot``'s cache needs no JAX).
    """
    chosen = setting if setting is not None else os.environ.get(COMPILATION_CACHE_ENV)
    if chosen is not None and chosen.strip().lower() in ("off", "0", "none", "false", ""):
        return None
    folder = Path(chosen).expanduser() if chosen else user_cache_dir() / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        print(
            f"warning: compilation cache {folder} is not writable ({exc.strerror or exc}); "
            "compiling without it",
            file=sys.stderr,
        )
        return None
    # Cache every program: the fusion programs compile in well under JAX's 1 s default.
    settings = {
        "jax_compilation_cache_dir": str(folder),
        "jax_persistent_cache_min_compile_time_secs": 0.0,
        "jax_persistent_cache_min_entry_size_bytes": 0,
    }
    jax = sys.modules.get("jax")
    for name, value in settings.items():
        if jax is not None:
            jax.config.update(name, value)
        else:
            os.environ[name.upper()] = str(value)
    return folder


def progress_enabled(quiet: bool) -> bool:
    """Progress bars are shown unless ``-q`` or when stderr is not a terminal."""
    return not quiet and sys.stderr.isatty()
