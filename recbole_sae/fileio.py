"""Writing the project's files: never half-written, and readable as any file the user creates.

Every write goes to a temporary file in the target's folder, which then replaces the target: a
reader (or a run killed mid-write) sees the old file or the new one, never part of one. Writers
that create their file themselves (``tempfile.mkstemp``, safetensors' saving) leave mode 0o600, so
a run folder shared with colleagues would hold files they cannot read; every file written here gets
the mode of a newly created file under the process umask instead.
Standard library only (the SAE package, which needs no RecBole, uses it too).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Union

__all__ = [
    "file_sha256",
    "umask_mode",
    "write_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

PathLike = Union[str, os.PathLike]

_UMASK_LOCK = threading.Lock()


def umask_mode(path: PathLike) -> None:
    """Set ``path`` to ``0o666 & ~umask``, the mode ``open(path, "w")`` would have given it."""
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out meanwhile
        mask = os.umask(0)
        os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_atomic(write: Callable[[str], Any], path: PathLike) -> Path:
    """Call ``write(tmp)`` to write a temporary file in ``path``'s folder (created if needed), then put
    it in place of ``path``; for writers that take a file name (``torch.save``, safetensors'
    ``save_file``). An error (or an interrupt) removes the temporary file and leaves ``path`` as it
    was. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_bytes_atomic(data: bytes, path: PathLike) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`write_atomic`). Returns the path."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    return write_atomic(write, path)


def write_text_atomic(text: str, path: PathLike) -> Path:
    """Write ``text`` (UTF-8, line ends as given) to ``path`` atomically. Returns the path."""
    return write_bytes_atomic(text.encode("utf-8"), path)


def write_json_atomic(obj: Any, path: PathLike, **dumps: Any) -> Path:
    """Write ``json.dumps(obj, **dumps)`` and a final newline to ``path`` atomically. Returns the path."""
    return write_text_atomic(json.dumps(obj, **dumps) + "\n", path)


def file_sha256(path: PathLike) -> str:
    """SHA-256 of the file's bytes (hex), read in blocks."""
    h = hashlib.sha256()
    with open(Path(path).expanduser(), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
