"""Secrets given by reference, so that they appear neither in ``ps`` nor in logs.

Wherever a CHAP secret is given as ``USER:SECRET``, ``USER:@PATH`` reads the secret from the
file at PATH instead (its first line, without the line end). Keep such files mode 0600. Errors
name the file, never its content.
"""

from __future__ import annotations

from pathlib import Path


def read_secret_file(path: str | Path, *, what: str) -> str:
    """The secret stored in ``path`` (first line); ValueError naming the file if unusable."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"{what}: cannot read the secret file {path}: {exc.strerror}") from None
    secret = text.splitlines()[0] if text else ""
    if not secret:
        raise ValueError(f"{what}: the secret file {path} is empty")
    return secret


def resolve_user_secret(text: str, *, what: str) -> str:
    """``USER:@PATH`` -> ``USER:<the secret in PATH>``; anything else unchanged."""
    user, sep, secret = text.partition(":")
    if sep and secret.startswith("@") and len(secret) > 1:
        return f"{user}:{read_secret_file(secret[1:], what=what)}"
    return text
