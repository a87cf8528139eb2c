"""Cache entries shared by concurrent sweeps: the decoded dataset and each fold's classifier and
CAMs.

An entry is a folder that is written whole or not at all (built in a sibling temp folder, sealed
with the SHA-256 of every file, then renamed into place), built by one process at a time (an
exclusive lock beside it: a second sweep that needs the same entry waits and then reuses it), and
checked on every load: a truncated or altered file is reported in one line and the entry rebuilt,
never silently used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

CHECKSUMS_FILE = "checksums.json"

log = logging.getLogger("camsweep.cache")
T = TypeVar("T")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def seal(folder: Path) -> None:
    """Records the checksum of every file of ``folder`` (the last file written)."""
    sums = {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.name != CHECKSUMS_FILE}
    (folder / CHECKSUMS_FILE).write_text(json.dumps(sums, indent=1))


def damage(folder: Path) -> str | None:
    """What is wrong with a sealed folder, or None when every file is as sealed."""
    try:
        sums = json.loads((folder / CHECKSUMS_FILE).read_text())
    except FileNotFoundError:
        return f"no {CHECKSUMS_FILE} (written by an earlier camsweep, or not sealed)"
    except ValueError as exc:
        return f"unreadable {CHECKSUMS_FILE} ({exc})"
    for name, expected in sums.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != expected:
            return f"{name} is truncated or altered (checksum mismatch)"
    return None


@contextlib.contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path``'s entry (a lock file beside it) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file is closed, or the process dies
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_checked(path: Path, load: Callable[[Path], T], what: str) -> tuple[T | None, str | None]:
    problem = damage(path)
    if problem is None:
        try:
            return load(path), None
        except Exception as exc:  # sealed but unreadable: a bug or a foreign file, still rebuild
            problem = f"unreadable ({type(exc).__name__}: {exc})"
    return None, f"{what} {path}: {problem}"


def load_sealed(path: Path, load: Callable[[Path], T], what: str) -> T:
    """Loads an entry without building it; raises ValueError saying what is damaged or missing."""
    if not path.is_dir():
        raise ValueError(f"{what} {path}: does not exist")
    found, problem = _load_checked(path, load, what)
    if found is None:
        raise ValueError(problem)
    return found


def load_or_build(
    path: Path, build: Callable[[Path], None], load: Callable[[Path], T], what: str
) -> tuple[T, bool]:
    """The entry at ``path``, loaded, or built by ``build(folder)`` and then loaded.

    Returns:
        The loaded entry and whether it was reused (False when this call built it).
    """
    if path.is_dir():
        found, _ = _load_checked(path, load, what)
        if found is not None:
            return found, True
    with exclusive(path):
        # Another process may have built (or found damaged and rebuilt) it while we waited.
        if path.is_dir():
            found, problem = _load_checked(path, load, what)
            if found is not None:
                return found, True
            log.warning("%s — rebuilding it", problem)
            shutil.rmtree(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            build(tmp)
            seal(tmp)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return load(path), False
