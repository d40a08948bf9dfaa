"""Atomic file writes: new content goes to a temporary file next to the target, which is renamed
over the target only once complete, so neither a reader nor a crash ever sees a half-written file.

Temporary files are named ``.<name>.<pid>.<random>.tmp`` and get the permissions a plain ``open``
would give: 0666 less the umask for a new file, the old file's mode when one is replaced (never
the 0600 of `tempfile.mkstemp`, so a group can read a shared model). A temporary file left by a
killed writer is removed by the next write to the same target, once its process is gone.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for the caller to write ``path``'s new content to; on a clean exit
    it is flushed to disk and renamed over ``path``, on an exception it is removed and ``path``
    is left as it was. Missing parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))  # replacing keeps the old mode
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    remove_stale_temporaries(path, older_than=started)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike, older_than: float) -> list[Path]:
    """Remove the temporary files of earlier writes to ``path`` whose writer is gone (its pid is
    not running here) and that were last modified before ``older_than`` (a Unix time), so a
    write in progress — even one from another host sharing the folder — is never touched.
    Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)\.)?\w+\.tmp$")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.match(candidate.name)
        if match is None:
            continue
        pid = int(match.group(1)) if match.group(1) else None
        if pid is not None and (pid == os.getpid() or _process_alive(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            if candidate.stat().st_mtime < older_than:
                candidate.unlink()
                removed.append(candidate)
    return removed
