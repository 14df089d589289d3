"""The one way a user error becomes one line.

Every command prints a user's mistake as a single line (``error: ...``) and exits non-zero; an
error from a library (orbax, safetensors, a pickle) may span many lines, so each message that
quotes one goes through :func:`one_line` first.
"""

from __future__ import annotations


def one_line(message: object) -> str:
    """``message`` with its whitespace runs (newlines included) made single spaces; of an
    exception, its first argument (the message without the type's decoration)."""
    if isinstance(message, BaseException) and message.args:
        message = message.args[0]
    return " ".join(str(message).split())
