"""The models of a sweep, as self-contained folders (one per architecture): part of
`camsweep export`.

Per architecture and held-out fold the same rule as the tables picks the setting (by default
the best validation Dice among all arms; ``arm`` restricts it to the baseline, p = 0, or the
augmented arms, p > 0); every seed of that setting becomes a member with its best-validation
weights. Folds the sweep has not finished are listed as missing, with the reason, so an
interrupted sweep still exports what it has.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sweeps.results import RunData, TrialData
from sweeps.selection import Selection, Setting, ordered_archs
from trainables import metric_keys as K
from trainables.model_folder import (
    Member,
    ModelManifest,
    Preprocessing,
    camsweep_version,
    installed_version,
    write_member,
)
from trainables.run_files import BEST_FILE

ARMS = ("best", "baseline", "augmented")
MODELS_DIR = "models"


def _in_arm(setting: Setting, arm: str) -> bool:
    if arm == "baseline":
        return setting.p == 0
    if arm == "augmented":
        return setting.p > 0
    return True


def best_weights(trial: TrialData) -> Path | None:
    """The trial's best-validation weights: ``best.pt`` of its newest checkpoint that has one
    (the final checkpoint carries the best weights of the whole trial)."""
    for folder in sorted(trial.record.path.glob("checkpoint_*"), reverse=True):
        if (folder / BEST_FILE).is_file():
            return folder / BEST_FILE
    return None


def _member_scores(trial: TrialData) -> dict[str, float]:
    # Validation scores are those of the best-validation checkpoint, like the test scores.
    return {
        K.split_key(split, m): trial.value(K.split_key(split, m))
        for split in K.SPLITS
        for m in K.METRIC_NAMES
    }


@dataclass
class ModelsReport:
    folders: list[Path]
    notes: list[str]


def _fold_members(chosen: Setting, target: Path, missing: list[dict]) -> list[tuple[Member, int]]:
    """Copies the weights and config of every seed of ``chosen`` into ``target``; a seed without
    loadable best weights is added to ``missing`` instead. Returns the members with their image
    size."""
    from trainables.checkpoint import CheckpointError, load_checkpoint

    members = []
    for trial in sorted(chosen.trials, key=lambda t: (t.seed, t.trial_id)):
        where = {"fold": chosen.held_out, "seed": trial.seed}
        source = best_weights(trial)
        if source is None:
            reason = f"trial {trial.trial_id}: no {BEST_FILE} in its checkpoints"
            missing.append({**where, "reason": reason})
            continue
        try:
            state = load_checkpoint(source)
        except CheckpointError as exc:
            missing.append({**where, "reason": str(exc)})
            continue
        folder = f"C{chosen.held_out}-seed{trial.seed}"
        write_member(target, folder, state["model"], trial.config)
        member = Member(
            fold=chosen.held_out,
            seed=trial.seed,
            trial_id=trial.trial_id,
            setting=chosen.label,
            p=chosen.p,
            best_epoch=int(state.get("epoch", 0)),
            folder=folder,
            scores=_member_scores(trial),
        )
        members.append((member, int(trial.config["data"]["image_size"])))
    return members


def _missing_text(missing: list[dict]) -> str:
    return "; ".join(
        f"C{m['fold']}" + (f" seed {m['seed']}" if "seed" in m else "") + f" ({m['reason']})"
        for m in missing
    )


def export_models(
    run: RunData,
    settings: Sequence[Setting],
    selection: Selection,
    out_dir: Path,
    *,
    arm: str = "best",
) -> ModelsReport:
    """Writes ``out_dir/models/<arch>/`` for every architecture with a finished fold.

    Raises:
        ValueError: an unknown ``arm``, or members trained at different image sizes.
    """
    if arm not in ARMS:
        raise ValueError(f"--model-arm {arm!r}: valid: {', '.join(ARMS)}")
    spec = run.spec
    versions = {
        "camsweep": camsweep_version(),
        "torch": installed_version("torch"),
        "segmentation_models_pytorch": installed_version("segmentation-models-pytorch"),
    }
    notes: list[str] = []
    folders: list[Path] = []
    for arch in ordered_archs(settings, spec):
        target = out_dir / MODELS_DIR / arch
        if target.exists():  # an earlier export's members must not mix with this one's
            shutil.rmtree(target)
        found: list[tuple[Member, int]] = []
        missing: list[dict] = []
        for k in sorted(spec.held_out_centres()):
            chosen = selection.best(
                s for s in settings if s.arch == arch and s.held_out == k and _in_arm(s, arm)
            )
            if chosen is None:
                missing.append({"fold": k, "reason": f"no finished trial in the {arm} arm"})
            else:
                found += _fold_members(chosen, target, missing)
        if not found:
            notes.append(f"no model folder for {arch}: no fold finished in the {arm} arm")
            continue
        sizes = {size for _, size in found}
        if len(sizes) > 1:
            raise ValueError(
                f"{arch}: members trained at different data.image_size {sorted(sizes)}"
            )
        manifest = ModelManifest(
            arch=arch,
            selection=selection.label,
            arm=arm,
            preprocessing=Preprocessing.of_training(sizes.pop()),
            members=[m for m, _ in found],
            missing=missing,
            sweep={"name": spec.name, "run_dir": str(run.run_dir.resolve())},
            versions=versions,
        )
        manifest.write(target)
        folders.append(target)
        if missing:
            notes.append(f"models/{arch}: missing {_missing_text(missing)}")
    return ModelsReport(folders, notes)
