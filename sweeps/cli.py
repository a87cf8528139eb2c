"""`camsweep` command line: thin wrappers over typed functions.

Every user-facing failure (bad data, bad config) raises one of ``USER_ERRORS``; it is printed as
one clear message with exit status 2 — no traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from search_spaces.axes import AXES
from sweeps.evaluation import RESOLUTIONS
from sweeps.model_export import ARMS
from sweeps.spec import SPEC_FILE
from sweeps.stats import N_BOOT
from trainables.data.layouts import LAYOUT_NAMES
from trainables.data.polypgen import DatasetError
from trainables.storage_fault import StorageFault

# Exceptions that mean "the user's input is wrong"; anything else is a bug and keeps its traceback.
# (ConfigError and the models' weight errors are ValueError / FileNotFoundError subclasses.)
USER_ERRORS: tuple[type[Exception], ...] = (
    DatasetError,
    StorageFault,  # the results storage filled up or turned read-only mid-sweep
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    PermissionError,
)

# `camsweep train` flags, shortcuts for a config key: the sweep axes that make sense for one
# trial (named as in a spec's `space`), and two settings every trial of a sweep shares. Their
# help is the key's description in the config.
TRAIN_FLAGS = {
    name: AXES[name]
    for name in ("arch", "held_out_centre", "p", "threshold", "mask_mode", "cam_mode", "epochs")
} | {"seed": AXES["seed"], "variant": "model.variant", "image_size": "data.image_size"}
CAMS_FLAGS = ("held_out_centre", "threshold", "image_size")
VERBOSE_HELP = "also Tune's per-trial tables and the workers' log lines"


def _cmd_synth(args: argparse.Namespace) -> int:
    from trainables.data.synthetic import generate, parse_size

    records = generate(
        Path(args.out),
        per_centre=args.per_centre,
        scale=args.scale,
        size=parse_size(args.size),
        seed=args.seed,
        naming=args.naming,
        overwrite=args.overwrite,
    )
    centres = sorted({r.centre for r in records})
    counts = ", ".join(f"C{c}: {sum(r.centre == c for r in records)}" for c in centres)
    print(f"wrote {len(records)} synthetic frames to {args.out} ({counts})")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from trainables.data.check import check_dataset

    report = check_dataset(
        args.root, manifest=args.manifest, patient_pattern=args.patient_pattern, layout=args.layout
    )
    print(report.format())
    return 0 if report.ok else 1


def _cmd_data_manifest(args: argparse.Namespace) -> int:
    from trainables.data.polypgen import index_polypgen

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists (it may hold your edits); pass --overwrite")
    manifest = index_polypgen(args.root, patient_pattern=args.patient_pattern)
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest.to_csv(out)
    for c, p in sorted(manifest.patients.items()):
        n = len({r.patient for r in manifest.records if r.centre == c})
        what = f"{n} patients ({p.rule})" if p.known else f"patients unknown: {p.problem}"
        print(f"C{c}: {sum(r.centre == c for r in manifest.records)} frames, {what}")
    print(f"wrote {len(manifest.records)} rows to {out} (columns image, mask, centre, patient)")
    if manifest.unknown_patients:
        centres = ", ".join(f"C{c}" for c in manifest.unknown_patients)
        print(
            f"{centres}: patient column left empty — fill it in (the file does not load until "
            f"then), and use it with data.manifest: {out}"
        )
    return 0


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``["train.lr=1e-4", "model.arch=sdnet"]`` → dotted keys with YAML-typed values."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. train.lr=1e-4")
        out[key.strip()] = yaml.safe_load(value)
    return out


def _trial_config(args: argparse.Namespace):
    from trainables.config import load_trial_config

    overrides = parse_overrides(args.set or [])
    for flag, key in TRAIN_FLAGS.items():
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    return load_trial_config(args.config, overrides, entry=getattr(args, "entry", None))


def _cmd_train(args: argparse.Namespace) -> int:
    from trainables.trial import prepare_trial_inputs, run_segmentation

    cfg = _trial_config(args)
    out = Path(args.out or f"runs/train/{cfg.model.arch}-C{cfg.held_out_centre}-{cfg.digest()}")
    fold_cache = Path(args.fold_cache or out.parent / "folds")
    print(f"trial config {cfg.digest()} → {out}")
    data, split, fold, reused = prepare_trial_inputs(cfg, fold_cache)
    print(
        f"data: {len(data)} frames at {data.image_size}px (dataset {data.dataset_hash}); "
        f"held-out C{split.held_out}: train {len(split.train)}, val {len(split.val)}, "
        f"test_in {len(split.test_in)}, test_out {len(split.test_out)}"
    )
    if fold is not None:
        acc = ", ".join(f"{k} {v:.3f}" for k, v in fold.metrics.items() if "accuracy" in k)
        print(f"centre classifier ({'reused' if reused else 'trained'}, {fold.path}): {acc}")

    def report(metrics: dict[str, float], _ckpt: Path | None) -> None:
        print(
            f"epoch {metrics['epoch']:>3}: loss {metrics['train/loss']:.4f}  "
            f"val dice {metrics['val/dice']:.4f}  masked {metrics['train/masked_fraction']:.2f}"
        )

    result = run_segmentation(cfg, data, split, fold, out, report=report)
    print(format_final_metrics(result.metrics))
    print(f"results: {out / 'results.json'}")
    return 0


def _cmd_cams(args: argparse.Namespace) -> int:
    from trainables.cam_report import cam_report, format_scores
    from trainables.engine import Runtime
    from trainables.trial import prepare_trial_inputs

    cfg = _trial_config(args)
    fold_cache = Path(args.fold_cache or "runs/train/folds")
    data, split, fold, reused = prepare_trial_inputs(cfg, fold_cache, with_fold=True)
    acc = ", ".join(f"{k} {v:.3f}" for k, v in fold.metrics.items() if "accuracy" in k)
    print(
        f"centre classifier for held-out C{split.held_out} ({'reused' if reused else 'trained'}): {acc}"
    )
    out = Path(args.out)
    masking = cfg.masking
    scores, _ = cam_report(
        data, split, fold, Runtime.from_config(cfg.train), out,
        threshold=masking.threshold, mode=masking.mode,
    )  # fmt: skip
    truth = "overlay ground truth" if data.overlays is not None else "no overlay truth (NaN)"
    print(f"CAM ≥ {masking.threshold:g}, mode {masking.mode}, per centre; {truth}:")
    print(format_scores(scores, split.held_out))
    print(f"figure: {out}")
    return 0


def _local_gpus(address: str | None) -> int | None:
    """GPUs to check a spec against before Ray starts (a cluster's are checked after connecting)."""
    if address:
        return None
    import torch

    return torch.cuda.device_count()


def _load(args: argparse.Namespace, path: str, *, gpus_here: bool = True):
    """``gpus_here``: the spec runs on this machine, so check its GPUs (not for a job script)."""
    from sweeps.spec import load_spec, read_spec_yaml, smoke

    raw = read_spec_yaml(path)
    if getattr(args, "smoke", False):
        raw = smoke(raw)
    if getattr(args, "storage", None):
        raw.setdefault("storage", {})["path"] = args.storage
    environment = not getattr(args, "file_only", False)
    return load_spec(
        path,
        # Only a check of this machine asks torch for its GPUs (--file-only stays torch-free).
        local_gpus=_local_gpus(getattr(args, "address", None))
        if environment and gpus_here
        else None,
        raw=raw,
        environment=environment,
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    from search_spaces.grouping import expand_groups

    for path in args.specs:
        spec = _load(args, path)
        groups = len(expand_groups(spec.axes))
        trials = groups * spec.search.num_samples
        print(
            f"{path}: ok — {groups} group(s) × {spec.search.num_samples} sample(s) = {trials} "
            f"trial(s), {spec.search.algorithm} search, {spec.scheduler.name} scheduler"
        )
    return 0


def _print_status(run_dir: Path) -> None:
    from sweeps.spec import load_spec
    from sweeps.status import format_status, read_run

    # The run's own record: its data and storage need not be reachable from here.
    spec = load_spec(run_dir / SPEC_FILE, environment=False)
    print(format_status(read_run(run_dir), [a.name for a in spec.axes if not a.form == "constant"]))


def _cmd_run(args: argparse.Namespace) -> int:
    from sweeps.launch import run_sweep
    from sweeps.run_folder import run_in_folder

    if args.resume_if_exists and not args.run_dir:
        raise ValueError("--resume-if-exists: needs --run-dir (the folder to continue)")
    spec = _load(args, args.spec)
    spec_arg = args.spec + " --smoke" * args.smoke  # names the weights to fetch in messages
    if args.run_dir:
        run_dir = run_in_folder(
            spec,
            args.spec,
            args.run_dir,
            resume_if_exists=args.resume_if_exists,
            address=args.address,
            verbose=args.verbose,
            spec_arg=spec_arg,
        )
    else:
        run_dir = run_sweep(spec, address=args.address, verbose=args.verbose, spec_arg=spec_arg)
    _print_status(run_dir)
    print(f"run folder: {run_dir}")
    if not args.no_export:
        out = export(run_dir)
        table = (out / "table.md").read_text().split("\n## ")
        print("\n## " + table[1] if len(table) > 1 else table[0])
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from sweeps.launch import resume_sweep

    run_dir = resume_sweep(Path(args.run_dir), address=args.address, verbose=args.verbose)
    _print_status(run_dir)
    return 0


def _cmd_slurm(args: argparse.Namespace) -> int:
    from sweeps.slurm import SlurmJob, default_cpus, job_problems, submit, write_script
    from sweeps.spec import SLURM_DIR, SpecError

    # Checked here (data, storage, the space) but not against this machine's GPUs: a login node
    # has none; the job's GPUs come from --gpus-per-node.
    spec = _load(args, args.spec, gpus_here=False)
    if args.run_dir:
        run_dir = Path(args.run_dir).expanduser().resolve()
    elif "://" in spec.storage_root():
        raise ValueError("--run-dir: required when storage.path is a URI (a shared folder)")
    else:
        run_dir = Path(spec.storage_root()) / spec.name
    flags = ["--smoke"] * args.smoke + ["--verbose"] * args.verbose
    if args.storage:
        flags += ["--storage", args.storage]
    job = SlurmJob(
        spec_path=Path(args.spec).resolve(),
        run_dir=run_dir,
        name=spec.name,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task or default_cpus(spec, args.gpus_per_node),
        time=args.time,
        partition=args.partition,
        account=args.account,
        run_flags=flags,
        export=not args.no_export,
    )
    problems = job_problems(spec, job)
    if problems:
        raise SpecError("camsweep slurm", problems)
    script = write_script(job, Path(args.out).resolve() if args.out else None)
    print(f"wrote {script} (run folder {run_dir}, logs {run_dir / SLURM_DIR}/job-<id>.out)")
    if args.submit:
        print(submit(script))
    else:
        print(f"submit with: sbatch {script}   (again, or requeued: it continues the run)")
    return 0


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    from sweeps.weights import Caches, fetch_weights

    # The file alone: this (login) machine need not see the data, and has no GPU to check.
    spec = _load(args, args.spec, gpus_here=False)
    fetched, present = fetch_weights(spec)
    caches = Caches.here(spec.weights_cache())
    print(
        f"{len(fetched)} fetched, {len(present)} already present "
        f"(torch checkpoints {caches.checkpoints}, Hugging Face cache {caches.hf_hub})"
    )
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    _print_status(Path(args.run_dir).expanduser())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    export(
        Path(args.run_dir).expanduser(),
        metric=args.metric,
        oracle=args.oracle,
        out=args.out,
        n_boot=args.n_boot,
        seed=args.seed,
        model_arm=args.model_arm,
        wandb=not args.no_wandb,
    )
    return 0


def export(run_dir: Path, *, wandb: bool = True, **kwargs) -> Path:
    """Export files, the CAM figure and (unless disabled) the W&B summary run."""
    from sweeps.export import export_run
    from sweeps.figures import export_cam_figure
    from sweeps.recipes import recipe_note
    from sweeps.spec import load_spec
    from sweeps.tracking import log_summary_run, wandb_settings

    report = export_run(run_dir, **kwargs)
    print(report.format())
    png, note = export_cam_figure(run_dir, report.out_dir)
    print(f"{note}: {png}" if png else note)
    if wandb:
        spec = load_spec(run_dir / SPEC_FILE, environment=False)
        log_summary_run(wandb_settings(spec, run_dir.resolve()), report.out_dir, recipe_note(spec))
    return report.out_dir


def _cmd_predict(args: argparse.Namespace) -> int:
    from trainables.inference import predict_folder
    from trainables.model_folder import parse_folds

    report = predict_folder(
        args.model,
        args.images,
        args.out,
        folds=parse_folds(args.folds),
        save_probabilities=args.save_probabilities,
        overwrite=args.overwrite,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(report.format())
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from sweeps.evaluation import evaluate_model
    from trainables.model_folder import parse_folds

    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"--out {out} is not empty; pass --overwrite to replace its files")
    evaluation = evaluate_model(
        args.model,
        args.data,
        layout=args.layout,
        folds=parse_folds(args.folds),
        resolution=args.resolution,
        batch_size=args.batch_size,
        device=args.device,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    markdown = evaluation.markdown()
    print(markdown, end="")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.md").write_text(markdown)
        (out / "evaluation.csv").write_text(evaluation.csv())
        (out / "per_image.csv").write_text(evaluation.per_image_csv())
        print(f"wrote evaluation.md, evaluation.csv and per_image.csv to {out}")
    return 0


def _cmd_wandb_sync(args: argparse.Namespace) -> int:
    from sweeps.tracking import sync_offline_runs

    dirs = sync_offline_runs(Path(args.run_dir).expanduser(), dry_run=args.dry_run)
    verb = "would sync" if args.dry_run else "synced"
    print(f"{verb} {len(dirs)} offline W&B run folder(s) of {args.run_dir}")
    for d in dirs:
        print(f"  {d}")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from sweeps.dashboard import save_or_describe
    from sweeps.spec import load_spec

    run_dir = Path(args.run_dir).expanduser().resolve()
    spec = load_spec(run_dir / SPEC_FILE, environment=False)
    w = spec.tracking.wandb
    plan, outcome = save_or_describe(w.entity, w.project, run_dir.name)
    print(plan.format())
    print(outcome)
    return 0


def format_final_metrics(metrics: dict[str, float]) -> str:
    from trainables.metric_keys import METRIC_NAMES

    lines = [
        f"best validation Dice {metrics['best/val_dice']:.4f} at epoch {metrics['best/epoch']}"
    ]
    lines.append(f"{'split':<9}" + "".join(f"{m:>10}" for m in METRIC_NAMES))
    for split in ("val", "test_in", "test_out"):
        if f"{split}/dice" in metrics:
            row = "".join(f"{metrics[f'{split}/{m}']:>10.4f}" for m in METRIC_NAMES)
            lines.append(f"{split:<9}{row}")
    return "\n".join(lines)


def add_config_flags(parser: argparse.ArgumentParser, names) -> None:
    """One flag per config key (``--held-out-centre`` sets ``held_out_centre``), typed, with the
    key's choices and description as its help; ``--held-out`` stays as a short alias."""
    from typing import Literal, get_args, get_origin

    from trainables.config import config_field

    for name in names:
        key = TRAIN_FLAGS[name]
        field = config_field(key)
        flags = [f"--{name.replace('_', '-')}"] + (
            ["--held-out"] if name == "held_out_centre" else []
        )
        kwargs: dict = {"dest": name, "help": f"{field.description} [{key}]"}
        if get_origin(field.annotation) is Literal:
            kwargs["choices"] = list(get_args(field.annotation))
        elif field.annotation in (int, float):
            kwargs["type"] = field.annotation
        parser.add_argument(*flags, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="camsweep",
        description="Interpretability-guided augmentation sweeps for multi-centre segmentation.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic PolypGen-like dataset")
    synth.add_argument("--out", required=True, help="output root (PolypGen layout)")
    amount = synth.add_mutually_exclusive_group()
    amount.add_argument("--per-centre", type=int, help="frames per centre")
    amount.add_argument(
        "--scale",
        type=float,
        help="fraction of PolypGen's centre sizes (default 1.0 = 1537 frames)",
    )
    synth.add_argument("--size", default="640x480", help="frame size WxH (default 640x480)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--naming",
        choices=["polypgen", "camsweep"],
        default="polypgen",
        help="polypgen: the real release's names, quirks and extra folders (default); "
        "camsweep: C<k>_P<nnn>_<frame> names carrying the patient",
    )
    synth.add_argument(
        "--overwrite", action="store_true", help="replace a synthetic dataset already in --out"
    )
    synth.set_defaults(func=_cmd_synth)

    data = sub.add_parser("data", help="dataset utilities")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser("check", help="summarise a dataset and list every problem")
    pattern_help = (
        "regex with a group 'patient' read from the image names (default: built-in rules)"
    )
    check.add_argument(
        "root", help="dataset root (PolypGen, Kvasir-SEG, CVC-ClinicDB, TestDataset) or its parent"
    )
    check.add_argument("--manifest", help="CSV manifest (image, mask, centre, patient)")
    check.add_argument("--patient-pattern", help=pattern_help)
    check.add_argument(
        "--layout", choices=LAYOUT_NAMES, default="auto", help="the dataset's layout"
    )
    check.set_defaults(func=_cmd_data_check)
    manifest = data_sub.add_parser(
        "manifest", help="write the dataset's manifest CSV (with patients) to review and edit"
    )
    manifest.add_argument("root", help="PolypGen root (data_C1 … data_C6) or the folder holding it")
    manifest.add_argument("--out", required=True, help="CSV to write")
    manifest.add_argument("--patient-pattern", help=pattern_help)
    manifest.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    manifest.set_defaults(func=_cmd_data_manifest)

    train = sub.add_parser("train", help="run one trial without Ray")
    train.add_argument("--config", help="trial config YAML, or export's best_configs.yaml")
    train.add_argument("--entry", help="which config of a best_configs.yaml, e.g. unet/C1")
    train.add_argument("--out", help="trial folder (default runs/train/<arch>-C<k>-<digest>)")
    train.add_argument("--fold-cache", help="classifier/CAM cache (default: next to --out)")
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override any config key"
    )
    add_config_flags(train, TRAIN_FLAGS)
    train.set_defaults(func=_cmd_train)

    cams = sub.add_parser("cams", help="CAM figure (paper Fig. 1) and CAM-vs-overlay scores")
    cams.add_argument("--config", help="trial config YAML (data, classifier, threshold)")
    cams.add_argument("--out", default="cams.png", help="PNG to write (default cams.png)")
    cams.add_argument("--fold-cache", help="classifier/CAM cache (default runs/train/folds)")
    cams.add_argument("--set", action="append", metavar="KEY=VALUE")
    add_config_flags(cams, CAMS_FLAGS)
    cams.set_defaults(func=_cmd_cams)

    validate = sub.add_parser("validate", help="check sweep specs without running anything")
    validate.add_argument("specs", nargs="+")
    validate.add_argument("--smoke", action="store_true", help="validate the --smoke version")
    validate.add_argument(
        "--file-only",
        action="store_true",
        help="check the file alone (schema, space), not this machine's data, storage or GPUs",
    )
    validate.set_defaults(func=_cmd_validate)

    run = sub.add_parser("run", help="run a sweep on Ray Tune")
    run.add_argument("spec")
    run.add_argument("--address", help="Ray cluster: auto, ray://host:10001 (default: local)")
    run.add_argument("--smoke", action="store_true", help="a few tiny trials of this spec")
    run.add_argument("--storage", help="override storage.path")
    run.add_argument("--no-export", action="store_true", help="skip `camsweep export` at the end")
    run.add_argument(
        "--run-dir",
        help="the run folder (default <storage>/<name>-<timestamp>); refused if it holds a sweep, "
        "unless --resume-if-exists",
    )
    run.add_argument(
        "--resume-if-exists",
        action="store_true",
        help="with --run-dir: continue the sweep that folder holds (as `camsweep resume`), or "
        "start there if it holds none — a resubmitted or requeued job continues its run",
    )
    run.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser("resume", help="continue an interrupted sweep")
    resume.add_argument("run_dir")
    resume.add_argument("--address")
    resume.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    resume.set_defaults(func=_cmd_resume)

    slurm = sub.add_parser(
        "slurm", help="write an sbatch script that runs the sweep and, run again, continues it"
    )
    slurm.add_argument("spec")
    slurm.add_argument("--nodes", type=int, default=1, help="nodes (default 1: embedded Ray)")
    slurm.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0)")
    slurm.add_argument(
        "--cpus-per-task",
        type=int,
        help="CPUs per node (default: resources.cpu × the trials the node's GPUs hold)",
    )
    slurm.add_argument("--time", help="wall-time limit, [D-]HH:MM:SS (default: the partition's)")
    slurm.add_argument("--partition", help="Slurm partition")
    slurm.add_argument("--account", help="Slurm account")
    slurm.add_argument("--run-dir", help="the job's fixed run folder (default <storage>/<name>)")
    slurm.add_argument("--out", help="script to write (default RUN_DIR/slurm/camsweep.sbatch)")
    slurm.add_argument("--submit", action="store_true", help="also sbatch it")
    slurm.add_argument("--smoke", action="store_true", help="the job runs the --smoke version")
    slurm.add_argument("--storage", help="override storage.path")
    slurm.add_argument("--no-export", action="store_true", help="no `camsweep export` at the end")
    slurm.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    slurm.set_defaults(func=_cmd_slurm)

    weights = sub.add_parser("weights", help="pretrained weights for offline compute nodes")
    weights_sub = weights.add_subparsers(dest="weights_command", required=True)
    fetch = weights_sub.add_parser(
        "fetch",
        help="download every pretrained weight a spec needs into the cache its trials read "
        "(weights.cache, else TORCH_HOME and the Hugging Face cache)",
    )
    fetch.add_argument("spec")
    fetch.add_argument("--smoke", action="store_true", help="the weights of the --smoke version")
    fetch.set_defaults(func=_cmd_weights_fetch, file_only=True)

    status = sub.add_parser("status", help="trials of a run: state, epoch, Dice")
    status.add_argument("run_dir")
    status.set_defaults(func=_cmd_status)

    export = sub.add_parser(
        "export", help="best configs, paper-style tables with bootstrap CIs, plots, cost"
    )
    export.add_argument("run_dir")
    export.add_argument("--no-wandb", action="store_true", help="skip the W&B summary run")
    export.add_argument(
        "--metric", help="validation metric that selects settings (default val/dice)"
    )
    export.add_argument(
        "--oracle",
        action="store_true",
        help="select by test_out/dice as the paper did (leaks the test set; labelled as such)",
    )
    export.add_argument(
        "--out", help="output folder (default RUN_DIR/export, RUN_DIR/export-oracle with --oracle)"
    )
    export.add_argument(
        "--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples per CI (default {N_BOOT})"
    )
    export.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    export.add_argument(
        "--model-arm",
        choices=ARMS,
        default="best",
        help="the arm of each fold's exported model: the selected setting among all arms "
        "(best), the baseline (p = 0) or the augmented arms (p > 0)",
    )
    export.set_defaults(func=_cmd_export)

    predict = sub.add_parser("predict", help="masks for a folder of frames from an exported model")
    _model_arguments(predict)
    predict.add_argument("--images", required=True, help="folder of frames (any size)")
    predict.add_argument("--out", required=True, help="folder for the masks (<name>.png)")
    predict.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write probabilities/<name>.npy (float16, at the frame's size)",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace existing masks")
    predict.set_defaults(func=_cmd_predict)

    evaluate = sub.add_parser(
        "evaluate", help="score an exported model on a labelled dataset, per dataset/centre"
    )
    _model_arguments(evaluate)
    evaluate.add_argument("--data", required=True, help="dataset root")
    evaluate.add_argument(
        "--layout", choices=LAYOUT_NAMES, default="auto", help="the dataset's layout"
    )
    evaluate.add_argument(
        "--resolution",
        choices=RESOLUTIONS,
        default="model",
        help="model: at the training resolution, as the sweep scored (default); original: "
        "probabilities resized to each frame against its full-size mask",
    )
    evaluate.add_argument("--out", help="also write evaluation.md, evaluation.csv, per_image.csv")
    evaluate.add_argument("--overwrite", action="store_true", help="replace files in --out")
    evaluate.add_argument(
        "--n-boot", type=int, default=N_BOOT, help=f"bootstrap resamples per CI (default {N_BOOT})"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    evaluate.set_defaults(func=_cmd_evaluate)

    sync = sub.add_parser("wandb-sync", help="upload a sweep's offline W&B runs")
    sync.add_argument("run_dir")
    sync.add_argument("--dry-run", action="store_true", help="list what would be uploaded")
    sync.set_defaults(func=_cmd_wandb_sync)

    dashboard = sub.add_parser("dashboard", help="define the sweep's W&B workspace")
    dashboard.add_argument("run_dir")
    dashboard.set_defaults(func=_cmd_dashboard)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="an exported model folder")
    parser.add_argument(
        "--folds", help="use only these folds' models, e.g. C1,C3 (default: the whole ensemble)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="frames per batch")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if present"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"camsweep {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
