"""Atomic checkpoint files: a reader never sees a half-written one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, truncated or not one of ours."""


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Writes to a temp file in the same folder, fsyncs, then renames over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": CHECKPOINT_FORMAT, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint does not exist") from None
    except Exception as exc:  # truncated zip, pickle errors, ...
        raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a camsweep checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def loadable(folder: Path, files: tuple[str, ...]) -> bool:
    """Whether every named checkpoint file in ``folder`` that exists loads cleanly (and the
    first one exists at all)."""
    if not (folder / files[0]).exists():
        return False
    try:
        for name in files:
            if (folder / name).exists():
                load_checkpoint(folder / name)
    except CheckpointError:
        return False
    return True


def first_loadable(candidates: list[Path], files: tuple[str, ...]) -> Path | None:
    """The first checkpoint folder (newest first) whose files load; a corrupted latest checkpoint
    falls back to the previous one instead of failing the trial."""
    for folder in candidates:
        if loadable(folder, files):
            return folder
    return None
