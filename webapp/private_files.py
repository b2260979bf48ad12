"""Files that hold secrets (keys, the sandbox's state) are readable by their owner only."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

PRIVATE_MODE = 0o600


def ensure_private_file(path: str | Path) -> None:
    """Create the file (empty) readable and writable by its owner only, or make an existing one so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with the mode in one step: never, even briefly, readable by others.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_MODE))
    if path.stat().st_mode & 0o077:
        path.chmod(PRIVATE_MODE)  # made before this rule, or by hand


def write_private_file_once(path: str | Path, data: bytes) -> bool:
    """Write a new owner-only file; return False (and leave it) when it already exists.

    Written aside and linked into place, so a process starting beside us never reads it half-written.
    """
    path = Path(path)
    draft = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
    try:
        os.link(draft, path)  # a link never replaces: when two processes race, the first wins
    except FileExistsError:
        return False
    finally:
        draft.unlink()
    return True
