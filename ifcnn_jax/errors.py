"""The one exception type that command-line tools turn into a one-line message."""

import sys
from collections.abc import Callable


class IFCNNError(ValueError):
    """A problem with user input (a file, a value, a configuration).

    Command-line tools print ``error: <message>`` and exit with status 2 instead of
    showing a traceback, so the message must name the offending file or value.
    """


def run_command(body: Callable[[], int], *, interrupted: str = "interrupted") -> int:
    """Runs a command-line tool's ``body`` and returns its exit status.

    User errors (``IFCNNError``, and ``OSError`` such as a full disk or a read-only
    folder) print ``error: <message>`` on one line and give 2; Ctrl-C gives 130. Other
    exceptions are bugs and keep their traceback.
    """
    try:
        return body()
    except IFCNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
