"""Starting, resuming and watching sweeps — the only place that builds a Tuner.

Life of a sweep (README, *Sweeps*): validate the spec → decode the dataset once → ``ray.init``
(embedded local Ray, or a cluster with ``address``) → the preflight on every node
(``sweeps/preflight.py``) → put the dataset in the object store → prepare every fold
that needs the centre classifier, one Ray task per fold, in parallel, cached under the storage
path (a cached fold is read here, without a task) → Tune → results under
``<storage>/<name>-<timestamp>/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs
import ray
import yaml
from ray import tune
from ray._private import ray_constants

from search_spaces.build import build_search
from sweeps.allocation import allocated_cpus, allocated_gpus, ray_temp_dir
from sweeps.checkpoint_retention import CheckpointRetention, ProgressUpload
from sweeps.preflight import NodeChecks, preflight_checks, run_preflight
from sweeps.snapshot_backup import SnapshotBackup, repair_snapshot
from sweeps.spec import (
    FINISHED_DIR,
    FOLDS_FILE,
    SPEC_FILE,
    RayConfig,
    SpecError,
    SweepSpec,
    load_spec,
)
from sweeps.tracking import SweepSummary, wandb_settings
from sweeps.weights import trial_env
from trainables.data.cache import DecodedData, cache_root
from trainables.data.source import frame_level_centres, prepare_data
from trainables.fold_task import cached_trial_fold, prepare_fold_task
from trainables.segmentation import train_segmentation
from trainables.storage_fault import StorageFault, probe, resume_advice, storage_errno

METRIC_MODE = "max"


# --- Ray ------------------------------------------------------------------------------------------


def init_ray(
    config: RayConfig,
    address: str | None,
    *,
    verbose: bool = False,
    env: dict[str, str] | None = None,
) -> None:
    """Connects to a cluster, or starts a small embedded one (localhost only, no dashboard).
    Workers' log lines reach this console only with ``verbose``: the trial folders and W&B keep
    them, and the console shows camsweep's progress line, errors and the result. ``env``: set in
    every worker of this job (trials, fold preparations) on every node."""
    # Frequent small checkpoints make Tune warn about experiment snapshots; they are cheap here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return
    # The job's runtime env: Ray merges its env_vars with those of a `ray job submit`.
    runtime_env = {"env_vars": env} if env else None
    if address:
        ray.init(address=address, log_to_driver=verbose, runtime_env=runtime_env)
        return
    # A single-machine Ray needs no network, so every Ray server binds loopback only. Ray 2.60
    # rewrites a node IP of 127.0.0.1 to the machine's routable address (so ``_node_ip_address``
    # alone does nothing) unless it believes clusters are disabled — its Windows/macOS mode, in
    # which the GCS, raylet, workers and agents all bind 127.0.0.1. That switch is a module
    # constant read when the node starts; flip it only for this start.
    cluster_switch = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(
            # Always a Ray of its own: without "local", ray.init joins any cluster it finds in
            # RAY_ADDRESS or in the temp dir's ray_current_cluster (another user's, a stale one).
            address="local",
            # On a shared node only what this process was allotted, not the whole machine.
            num_cpus=config.num_cpus or allocated_cpus(),
            num_gpus=allocated_gpus() if config.num_gpus is None else config.num_gpus,
            _temp_dir=str(ray_temp_dir()),
            object_store_memory=config.object_store_mb << 20,
            include_dashboard=config.dashboard,
            dashboard_host="127.0.0.1",
            log_to_driver=verbose,
            runtime_env=runtime_env,
        )
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = cluster_switch


def cluster_problems(spec: SweepSpec, address: str | None) -> list[str]:
    """Checks the spec against the cluster it will run on (GPUs, shared storage)."""
    problems = []
    resources = ray.cluster_resources()
    most = spec.resources.most()
    if most["gpu"] > 0 and resources.get("GPU", 0) == 0:
        problems.append(
            f"resources.gpu {most['gpu']:g}: the Ray cluster has no GPU — set "
            "resources.gpu: 0 (and no per_arch GPUs) or add GPU workers"
        )
    if most["cpu"] > resources.get("CPU", 0):
        problems.append(
            f"resources.cpu {most['cpu']:g}: more than the cluster's {resources.get('CPU', 0)} CPUs"
        )
    alive = [n for n in ray.nodes() if n.get("Alive")]
    if address and len(alive) > 1 and "://" not in spec.storage.path:
        # A local path is only "shared" if every node mounts the same filesystem there; we cannot
        # verify that, so say what is required instead of losing checkpoints silently.
        print(
            f"note: {len(alive)} nodes and a local storage.path {spec.storage.path!r}: it must be a "
            "shared filesystem (NFS) mounted at the same path on every node, or use an s3:// / gs:// URI"
        )
    return problems


# --- data and folds ---------------------------------------------------------------------------------


def _in_memory(data: DecodedData) -> DecodedData:
    # The cache is memory-mapped; the object store needs real arrays (then shares them zero-copy).
    return dataclasses.replace(
        data,
        images=np.ascontiguousarray(data.images),
        masks=np.ascontiguousarray(data.masks),
        overlays=None if data.overlays is None else np.ascontiguousarray(data.overlays),
    )


def folds_needed(spec: SweepSpec) -> list[int]:
    """Held-out centres of the trials that mask (all of them if any trial masks)."""
    return sorted(spec.held_out_centres()) if spec.any_trial_masks() else []


def prepare_folds(
    spec: SweepSpec, data: DecodedData, data_ref, run_dir: Path
) -> tuple[dict[int, Any], dict[str, Any]]:
    """Each fold's artefacts from the fold cache, or else trained by a Ray task per fold, in
    parallel; returns object refs of the artefacts and a summary."""
    task = ray.remote(prepare_fold_task).options(
        num_cpus=spec.resources.cpu, num_gpus=spec.resources.gpu, num_returns=2
    )
    settings = wandb_settings(spec, run_dir)
    cache = spec.fold_cache_root()
    # A remote storage's fold cache lies on each node's own disk: only a task there can look.
    local_cache = "://" not in spec.storage_root()
    start = time.perf_counter()
    summary: dict[str, Any] = {"trained": [], "reused": []}
    folds, pending = {}, {}
    for k in folds_needed(spec):
        cfg = spec.trial_config({"held_out_centre": k})
        fold = cached_trial_fold(data, cfg, cache) if local_cache else None
        if fold is not None:  # a resumed or repeated sweep: no worker is started for it
            folds[k] = ray.put(fold)
            summary["reused"].append(k)
            continue
        pending[k] = task.remote(data_ref, cfg.to_dict(), str(cache), spec.resources.gpu, settings)
    for k, (fold_ref, reused_ref) in pending.items():
        reused = ray.get(reused_ref)
        folds[k] = fold_ref
        summary["reused" if reused else "trained"].append(k)
    summary["trained"].sort()
    summary["reused"].sort()
    summary["seconds"] = round(time.perf_counter() - start, 2)
    return folds, summary


# --- Tune -------------------------------------------------------------------------------------------


def _trial_resources(resources, default_arch: str, config: dict[str, Any]):
    """Tune asks per trial, with the trial's axis values: each architecture its own share."""
    share = resources.of(config.get("arch", default_arch))
    return tune.PlacementGroupFactory([{"CPU": share["cpu"], "GPU": share["gpu"]}])


def build_tuner(
    spec: SweepSpec,
    run_dir: Path,
    data_ref,
    folds: dict[int, Any],
    *,
    restore: bool = False,
    storage: str | None = None,
    verbose: bool = False,
) -> tune.Tuner:
    """``storage``: where Tune keeps the run (a URI for remote storage); default the run folder's
    parent. ``run_dir`` is then the local folder of camsweep's own files and offline W&B runs."""
    storage = storage or str(run_dir.parent)
    setup = build_search(
        spec.axes,
        spec.search,
        spec.scheduler,
        max_t=spec.train.epochs,
        mode=METRIC_MODE,
        study_name=spec.name,
    )
    trainable = tune.with_resources(
        tune.with_parameters(
            train_segmentation,
            base=spec.base_trial(),
            axes={a.name: a.key for a in spec.axes},
            data=data_ref,
            folds=folds,
            wandb_settings=wandb_settings(spec, run_dir),
            # Beside Tune's trial folders, which Tune clears when it restores a trial. On
            # remote storage the workers cannot reach the driver's folder: checkpoints only.
            finished_root=None if "://" in storage else str(run_dir / FINISHED_DIR),
            run_path=f"{storage}/{run_dir.name}",
        ),
        partial(_trial_resources, spec.resources, spec.model.arch),
    )
    if restore:
        return tune.Tuner.restore(
            f"{storage}/{run_dir.name}", trainable=trainable, resume_errored=True
        )
    return tune.Tuner(
        trainable,
        param_space=setup.param_space,
        tune_config=tune.TuneConfig(
            metric=spec.search.metric,
            mode=METRIC_MODE,
            search_alg=setup.search_alg,
            scheduler=setup.scheduler,
            num_samples=setup.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            # A trial process serves the next trial of the same shape: no new Python, torch and
            # smp import (~10 s of a tiny trial's ~12 s on 2 CPUs). Each trial builds all its
            # state afresh (seeds, model, threads, W&B run) and writes to its own working dir.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run_dir.name,
            storage_path=storage,
            failure_config=tune.FailureConfig(max_failures=2),
            # camsweep deletes old checkpoints itself, never one a stored snapshot still names
            # (Tune's own num_to_keep does: see sweeps.checkpoint_retention).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            # The trial's files (results, per-image scores, config, split) reach its storage
            # folder from whichever node ran it (see segmentation.trial_files_dir).
            sync_config=tune.SyncConfig(sync_artifacts=True),
            callbacks=[
                SweepSummary(setup.grid_axes, spec.search.metric),
                *setup.callbacks,
                *([] if "://" in storage else [SnapshotBackup(run_dir)]),
                CheckpointRetention(spec.checkpoints_to_keep),  # after the backup: reads it
                ProgressUpload(),
            ],
            # Tune's boxed per-trial configs and results (700 of 990 lines for the demo) only
            # with --verbose; SweepSummary prints the progress line and each failure.
            verbose=1 if verbose else 0,
        ),
    )


def spec_text(spec: SweepSpec) -> str:
    """The resolved spec as stored in a run folder (``SPEC_FILE``)."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)


def _write_run_files(
    spec: SweepSpec, run_dir: Path, folds_summary: dict[str, Any], remote: str | None
) -> None:
    # SPEC_FILE is already there: run_sweep writes it before the folds are prepared.
    (run_dir / FOLDS_FILE).write_text(json.dumps(folds_summary, indent=2))
    if remote:  # keep camsweep's files with Tune's on the remote storage too
        fs, path = pyarrow.fs.FileSystem.from_uri(remote)
        fs.create_dir(path, recursive=True)
        for name in (SPEC_FILE, FOLDS_FILE):
            with fs.open_output_stream(f"{path}/{name}") as out:
                out.write((run_dir / name).read_bytes())


def local_mirror(name: str) -> Path:
    """Local folder of a run whose storage is remote: camsweep's files and offline W&B runs."""
    return cache_root() / "runs" / name


def _connect(spec: SweepSpec, address: str | None, verbose: bool, checks: NodeChecks) -> None:
    """Starts or joins Ray and checks the cluster and every node, before anything is computed.
    Trials and fold preparations then never download: no hub access, the spec's weight cache."""
    init_ray(spec.ray, address, verbose=verbose, env=trial_env(spec.weights_cache()))
    problems = cluster_problems(spec, address)
    if problems:
        raise SpecError("cluster", problems)
    problems = run_preflight(checks)
    if problems:
        raise SpecError("preflight", problems)


def _prepare(spec: SweepSpec, data: DecodedData, run_dir: Path):
    data_ref = ray.put(_in_memory(data))
    folds, summary = prepare_folds(spec, data, data_ref, run_dir)
    print(
        f"folds: {len(summary['trained'])} prepared {summary['trained']}, "
        f"{len(summary['reused'])} reused {summary['reused']} ({summary['seconds']} s)"
    )
    return data_ref, folds, summary


def _checks(spec: SweepSpec, manifest, data: DecodedData, run_dir: Path, spec_arg: str):
    # The run folder (trials' finished results, offline W&B runs) and the fold cache.
    return preflight_checks(
        spec,
        centres=manifest.centres,
        frames=len(data),
        writable=[run_dir, spec.fold_cache_root()],
        fetch=f"camsweep weights fetch {spec_arg}",
    )


def run_sweep(
    spec: SweepSpec,
    *,
    address: str | None = None,
    verbose: bool = False,
    run_dir: Path | None = None,
    spec_arg: str = "SPEC",
) -> Path:
    """Runs a validated sweep to completion; returns its run folder. ``verbose``: Tune's
    per-trial tables and the workers' log lines on the console too. ``run_dir``: a fixed local
    run folder (``camsweep run --run-dir``) instead of ``<storage>/<name>-<timestamp>``.
    ``spec_arg``: the spec as the command line names it (``x.yaml --smoke``), for messages."""
    if run_dir is None:
        root = spec.storage_root()
        name = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        remote = root if "://" in root else None
        run_dir = local_mirror(name) if remote else Path(root) / name
    else:
        name, remote = run_dir.name, None
    # Data first: a corrupt file is reported before any Ray process or run folder exists.
    held_out = spec.held_out_centres()
    manifest, data = prepare_data(spec.data, held_out)
    # Ray and the preflight before the run folder: a sweep refused there leaves none behind.
    _connect(spec, address, verbose, _checks(spec, manifest, data, run_dir, spec_arg))
    run_dir.mkdir(parents=True, exist_ok=True)
    # The spec first: a job killed while folds are prepared leaves a folder that says whose it
    # is, so `camsweep run --run-dir … --resume-if-exists` can start it again.
    (run_dir / SPEC_FILE).write_text(spec_text(spec))
    data_ref, folds, summary = _prepare(spec, data, run_dir)
    summary["frame_level_split"] = frame_level_centres(manifest, held_out)
    _write_run_files(spec, run_dir, summary, f"{remote}/{name}" if remote else None)
    print(
        f"sweep {spec.name}: {f'{remote}/{name} (local files: {run_dir})' if remote else run_dir}"
    )
    _fit(build_tuner(spec, run_dir, data_ref, folds, storage=remote, verbose=verbose), run_dir)
    return run_dir


def resume_sweep(run_dir: Path, *, address: str | None = None, verbose: bool = False) -> Path:
    """Continues an interrupted sweep: finished trials stay finished, others resume from their
    last checkpoint, errored ones are retried."""
    remote = None
    if "://" in str(run_dir):  # a run on remote storage: fetch camsweep's files first
        remote, name = str(run_dir).rstrip("/").rsplit("/", 1)
        run_dir = local_mirror(name)
        run_dir.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(f"{remote}/{name}/{SPEC_FILE}", str(run_dir / SPEC_FILE))
    run_dir = Path(run_dir).expanduser().resolve()
    spec_path = run_dir / SPEC_FILE
    if not spec_path.exists():
        raise SpecError(str(run_dir), [f"not a camsweep run folder ({SPEC_FILE} missing)"])
    spec = load_spec(spec_path)
    manifest, data = prepare_data(spec.data, spec.held_out_centres())
    # The run's own resolved spec (smoke already applied) names its weights for `weights fetch`.
    _connect(spec, address, verbose, _checks(spec, manifest, data, run_dir, str(spec_path)))
    data_ref, folds, _ = _prepare(spec, data, run_dir)
    if remote is None:
        repaired = repair_snapshot(run_dir)
        if repaired:
            print(repaired, flush=True)
    _fit(build_tuner(spec, run_dir, data_ref, folds, restore=True, storage=remote), run_dir)
    return run_dir


def _fit(tuner: tune.Tuner, run_dir: Path) -> None:
    """Runs the tuner. When the results storage filled up or turned read-only under the sweep,
    Tune ends with errors about files it could not read back (an empty error.pkl): those become
    one :class:`StorageFault` that says what happened and how to continue."""
    try:
        tuner.fit()
    except Exception as exc:
        problem = None if "://" in str(run_dir) else probe(run_dir)
        if problem is None and storage_errno(exc) is None:
            raise
        raise StorageFault(
            f"results storage {run_dir} is not writable ({problem or exc}): the sweep stopped; "
            + resume_advice(run_dir)
        ) from exc
