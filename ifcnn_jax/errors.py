"""The one exception type that command-line tools turn into a one-line message."""


class IFCNNError(ValueError):
    """A problem with user input (a file, a value, a configuration).

    Command-line tools print ``error: <message>`` and exit with status 2 instead of
    showing a traceback, so the message must name the offending file or value.
    """


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` of an ``OSError`` on one line."""
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    return f"{where}{exc.strerror or exc}".replace("\n", " ")
