"""Results storage that fills up or turns read-only mid-sweep: recognised, and reported as one
clear reason instead of a stack of pyarrow and pickle errors. Torch- and Ray-free."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# No space, read-only filesystem, quota exceeded.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


class StorageFault(RuntimeError):
    """The results storage cannot be written; the message says where and what to do."""


def storage_errno(exc: BaseException) -> int | None:
    """The storage errno of ``exc`` or of an exception it was raised from, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def resume_advice(run_dir: Path | str) -> str:
    return (
        "earlier checkpoints and results are intact; free space on it (or make it writable "
        f"again) and run `camsweep resume {run_dir}`: nothing finished is trained again"
    )


def trial_fault(exc: OSError, run_path: Path | str, epoch: int) -> StorageFault:
    """The error a trial ends with when the storage of its run fails under it."""
    reason = os.strerror(storage_errno(exc) or exc.errno or 0)
    return StorageFault(
        f"results storage not writable ({reason}) at {run_path}: the trial stopped after epoch "
        f"{epoch}; {resume_advice(run_path)}"
    )


def probe(folder: Path, size: int = 1 << 20) -> str | None:
    """Why ``folder`` cannot take a ``size``-byte file now (written, synced, removed), or None."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".camsweep-probe-") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    return None
