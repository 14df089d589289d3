"""The one way a user error becomes one line.

Every command prints a user's mistake as a single line (``error: ...``) and exits non-zero; an
error from a library (orbax, safetensors, a pickle) may span many lines, so each message that
quotes one goes through :func:`one_line` first.
"""

from __future__ import annotations


def one_line(message: object) -> str:
    """``message`` (text, or an exception's ``str``) with every run of whitespace, newlines
    included, made one space."""
    return " ".join(str(message).split())
