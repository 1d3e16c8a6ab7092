"""Small file helpers shared by the workdir, the checks of paths and the export.

JSON is written atomically (a temporary file, then a rename), so a crash never leaves half a
file; paths given by the user are checked with messages that name their flag.
"""

from __future__ import annotations

import json
import os
from typing import Any

from aigc_zoo.errors import UserError


def write_json(path: str, values: dict[str, Any]) -> None:
    """Write `values` to `path` as sorted, indented JSON, atomically."""
    write_text(path, json.dumps(values, indent=2, sort_keys=True) + "\n")


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically (a temporary file, then a rename)."""
    temporary = path + ".tmp"
    with open(temporary, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def read_json(path: str, *, remedy: str = "") -> Any:
    """The JSON in `path`; a `UserError` (ending with `remedy`, when given) when it cannot be
    read or parsed."""
    try:
        with open(path) as handle:
            return json.load(handle)
    # RecursionError: JSON nested thousands deep, which the parser cannot follow.
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else \
            type(error).__name__
        raise UserError(f"cannot read {path}: {detail}" + (f"; {remedy}" if remedy else "")
                        ) from None


def make_writable_folder(path: str, *, what: str) -> None:
    """Create the folder `path` if needed; a `UserError` naming `what` if it is not writable."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create {what} {path}: {error.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"{what} {path} is not writable")


def check_folder(flag: str, path: str | None, *, writable: bool) -> None:
    """`UserError` unless `path` (the value of `--flag`) is None, a usable folder, or a folder
    that can be created (its nearest existing parent is a writable folder)."""
    if path is None:
        return
    if not path:
        raise UserError(f"--{flag} is empty; give a folder or leave the flag out")
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise UserError(f"--{flag}={path} is not a folder")
        if not os.access(path, os.R_OK | os.X_OK) or (writable and not os.access(path, os.W_OK)):
            raise UserError(f"--{flag}={path} is not {'writable' if writable else 'readable'}")
        return
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create {flag} {path}: {parent} is not a writable folder "
                        f"(--{flag})")


def check_readable_file(flag: str, path: str | None) -> None:
    """`UserError` unless `path` (the value of `--flag`) is None or a readable file."""
    if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
        raise UserError(f"--{flag}={path} is not a readable file")
