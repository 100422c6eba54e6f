"""What every command line shares: the wrapper that gives all of them the same exits
(one line and 2 for user errors, 130 on Ctrl-C, no temporary files left)."""

import os
import signal
import sys
import threading
from collections.abc import Callable

from ifcnn_jax.errors import IFCNNError, describe_os_error
from ifcnn_jax.io import temporaries


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
