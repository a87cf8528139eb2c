"""A fixed run folder (``camsweep run --run-dir``) and resuming what it already holds.

A batch job that is resubmitted or requeued runs the same command again; with a fixed folder and
``--resume-if-exists`` that command continues the sweep the folder holds (as ``camsweep resume``:
finished trials are kept, the others resume from their checkpoints) instead of starting another.
Every refusal happens before any data is read or Ray starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml

from sweeps.spec import SLURM_DIR, SPEC_FILE, SweepSpec
from sweeps.status import EXPERIMENT_STATE_GLOB

# What a folder may hold and still count as empty: `camsweep slurm` writes its job script and
# Slurm writes the job's log there before the sweep starts.
IGNORED = {SLURM_DIR}


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}{key}.")
        return out or {prefix.rstrip("."): {}}
    return {prefix.rstrip("."): value}


def spec_differences(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved specs. A key only one of them has
    is a camsweep version's new (or dropped) setting, not the user's change: the stored spec
    loads with its default, which is what the other side holds."""
    a, b = _flat(stored), _flat(given)
    return sorted(k for k in a.keys() & b.keys() if a[k] != b[k])


def _started(run_dir: Path) -> bool:
    # What Tuner.restore needs: the pickled Tuner and an experiment state.
    return (run_dir / "tuner.pkl").exists() and any(run_dir.glob(EXPERIMENT_STATE_GLOB))


def folder_action(
    spec: SweepSpec, spec_path: str, run_dir: Path, *, resume_if_exists: bool
) -> Literal["start", "resume"]:
    """What ``camsweep run SPEC --run-dir RUN_DIR`` does with this folder: ``start`` a sweep
    there (it is new, empty, or holds this spec but Tune never started), or ``resume`` it.
    Raises a user error naming the folder (and both spec files) for anything else."""
    from sweeps.launch import spec_text

    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"--run-dir {run_dir}: is a file, not a folder")
    stored_path = run_dir / SPEC_FILE
    if not stored_path.exists():
        others = (
            sorted(p.name for p in run_dir.iterdir() if p.name not in IGNORED)
            if run_dir.exists()
            else []
        )
        if others:
            raise FileExistsError(
                f"--run-dir {run_dir}: holds {', '.join(others[:5])}{' …' if len(others) > 5 else ''}"
                f" but no {SPEC_FILE}: not a camsweep run folder — pick a new or empty folder"
            )
        return "start"
    stored = yaml.safe_load(stored_path.read_text()) or {}
    differ = spec_differences(stored, yaml.safe_load(spec_text(spec)))
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise FileExistsError(
            f"--run-dir {run_dir}: holds a different sweep — {stored_path} and {spec_path} differ "
            f"in {shown}; use another --run-dir, or `camsweep resume {run_dir}` to continue the "
            "stored one"
        )
    if not resume_if_exists:
        raise FileExistsError(
            f"--run-dir {run_dir}: already holds this sweep ({stored_path}); pass "
            f"--resume-if-exists to continue it (or `camsweep resume {run_dir}`)"
        )
    return "resume" if _started(run_dir) else "start"


def run_in_folder(
    spec: SweepSpec,
    spec_path: str,
    run_dir: Path | str,
    *,
    resume_if_exists: bool,
    address: str | None = None,
    verbose: bool = False,
    spec_arg: str = "SPEC",
) -> Path:
    """Starts the sweep in ``run_dir``, or resumes the one it holds (see :func:`folder_action`);
    ``spec_arg`` as in :func:`sweeps.launch.run_sweep`."""
    from sweeps.launch import resume_sweep, run_sweep

    if "://" in str(run_dir):
        raise ValueError(
            f"--run-dir {run_dir}: must be a folder on a (shared) filesystem, not a URI; for "
            "s3:// or gs:// storage leave --run-dir out and set storage.path"
        )
    run_dir = Path(run_dir).expanduser().resolve()
    action = folder_action(spec, spec_path, run_dir, resume_if_exists=resume_if_exists)
    if action == "resume":
        print(f"resuming the sweep in {run_dir}")
        return resume_sweep(run_dir, address=address, verbose=verbose)
    return run_sweep(spec, address=address, verbose=verbose, run_dir=run_dir, spec_arg=spec_arg)
