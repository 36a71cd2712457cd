"""Writing the project's files: never half-written, and readable as any file the user creates.

Writers that go through a temporary file (``tempfile.mkstemp``, safetensors' own saving) leave
mode 0o600, so a run folder shared with colleagues had some files they could not read; every
such file gets the mode of a newly created file under the process umask instead.
Standard library only (the SAE package, which needs no RecBole, uses it too).
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Union

__all__ = ["umask_mode", "write_text_atomic"]

_UMASK_LOCK = threading.Lock()


def umask_mode(path: Union[str, os.PathLike]) -> None:
    """Set ``path`` to ``0o666 & ~umask``, the mode ``open(path, "w")`` would have given it."""
    with _UMASK_LOCK:  # reading the umask means setting it: keep other threads out meanwhile
        mask = os.umask(0)
        os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def write_text_atomic(text: str, path: Union[str, os.PathLike]) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder (a reader never sees
    a half-written file); creates the folder. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
