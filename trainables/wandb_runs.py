"""Worker-side W&B: the runs opened inside Ray tasks and trials — one per trial (TrialLogger),
one per fold preparation — and the conventions they share with the driver's summary run (run
ids, ``wandb.init`` arguments, redaction). Tracking never fails or blocks the work it records.

``wandb`` is imported on first use: importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trainables.config import TrialConfig

log = logging.getLogger("camsweep.trial")


# Secrets are matched by *name*, not by substring: "fold_key" or "monkey" are not secrets.
SECRET_NAMES = frozenset(
    {"key", "api_key", "apikey", "token", "secret", "password", "passwd", "credential",
     "credentials", "auth"}
)  # fmt: skip
SECRET_SUFFIXES = ("_api_key", "_apikey", "_token", "_secret", "_password", "_credentials",
                   "_access_key", "_secret_key", "_private_key")  # fmt: skip


def is_secret_name(key: Any) -> bool:
    name = str(key).lower().replace("-", "_")
    return name in SECRET_NAMES or name.endswith(SECRET_SUFFIXES)


def redact(tree: Any) -> Any:
    """A copy with every value under a secret's name replaced (``api_key``, ``token``,
    ``*_password`` …; see :func:`is_secret_name`)."""
    if isinstance(tree, dict):
        return {k: "<redacted>" if is_secret_name(k) else redact(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact(v) for v in tree]
    return tree


def wandb_init_kwargs(settings: dict[str, Any], run_id: str, job_type: str) -> dict[str, Any]:
    """``wandb.init`` arguments shared by trial, fold and summary runs of one sweep."""
    import wandb

    return dict(
        project=settings["project"],
        entity=settings.get("entity"),
        id=run_id,
        resume="allow",
        dir=settings["dir"],
        group=settings["group"],
        job_type=job_type,
        mode=settings["mode"],
        reinit="finish_previous",
        settings=wandb.Settings(
            init_timeout=settings.get("init_timeout_s", 30), console="off", silent=True
        ),
    )


def wandb_run_id(sweep: str, trial_id: str) -> str:
    """Deterministic W&B run id of a trial: a retried or resumed trial continues its run."""
    raw = f"{sweep}-{trial_id}"
    safe = re.sub(r"[^A-Za-z0-9_-]", "-", raw)
    # W&B caps ids; keep a readable prefix and a hash of the whole when too long.
    return safe if len(safe) <= 64 else f"{safe[:50]}-{hashlib.sha1(raw.encode()).hexdigest()[:12]}"


def guarded_run(settings: dict[str, Any], run_id: str, job_type: str, body) -> None:
    """Opens a W&B run, calls ``body(run)``, finishes; any W&B failure is a warning only."""
    if not settings or settings.get("mode") == "disabled":
        return
    try:
        import wandb

        run = wandb.init(**wandb_init_kwargs(settings, run_id, job_type))
        try:
            body(run)
        finally:
            run.finish()
    except Exception as exc:  # noqa: BLE001 — tracking never fails the sweep
        print(f"warning: W&B {job_type} run {run_id} not logged ({exc})", file=sys.stderr)


def log_fold_run(settings, data, split, fold, runtime, *, masking) -> None:
    """The fold preparation's own run: classifier accuracy, per-centre CAM quality (see
    ``cam_report.CamScores``; overlay scores only where the data has overlay truth) and the
    CAM figure."""

    def body(run) -> None:

        import wandb

        from trainables.cam_report import SCORE_NAMES, cam_report

        run.config.update(redact({"held_out_centre": split.held_out, "fold_key": fold.key}))
        run.summary.update(fold.metrics)
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "cams.png"
            scores, _ = cam_report(
                data, split, fold, runtime, png, threshold=masking.threshold, mode=masking.mode
            )
            run.log({"cams": wandb.Image(str(png))})
        for s in scores:
            for name in SCORE_NAMES:
                if not math.isnan(value := getattr(s, name)):
                    run.summary[f"cam/C{s.centre}/{name}"] = value

    guarded_run(
        settings, f"{settings.get('group', 'camsweep')}-fold-C{split.held_out}", "classifier", body
    )


class TrialLogger:
    """The trial's W&B run. Every call is guarded: a W&B error or outage disables logging for
    this trial (with a warning) and never fails or blocks it — Tune's own results are the
    record. An online run that cannot start within ``init_timeout_s`` falls back to offline, so
    its metrics are kept for a later ``camsweep wandb-sync``."""

    def __init__(self, settings: dict[str, Any] | None, run_id: str, cfg: TrialConfig):
        self.run = None
        if not settings or settings.get("mode") == "disabled":
            return
        import wandb

        kwargs = wandb_init_kwargs(settings, run_id, cfg.model.arch)
        kwargs.update(
            tags=[f"C{cfg.held_out_centre}", f"p={cfg.masking.p:g}"], config=cfg.to_dict()
        )
        for mode in dict.fromkeys([settings["mode"], "offline"]):
            try:
                self.run = wandb.init(**{**kwargs, "mode": mode})
                break
            except Exception as exc:  # noqa: BLE001 — any W&B failure must leave the trial alone
                log.warning("W&B %s run for %s failed to start (%s)", mode, run_id, exc)
        if self.run is not None:
            self._guard(self._define_metrics)

    def _define_metrics(self) -> None:
        self.run.define_metric("epoch")
        self.run.define_metric("*", step_metric="epoch")
        self.run.define_metric("val/dice", step_metric="epoch", summary="max")

    def _guard(self, fn, *args) -> None:
        if self.run is None:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            log.warning("W&B logging disabled for this trial: %s", exc)
            self.run = None

    def log(self, metrics: dict[str, float]) -> None:
        self._guard(self.run.log if self.run else None, dict(metrics))

    def log_final(
        self, metrics: dict[str, float], examples, per_image_table, panels: list[str]
    ) -> None:
        """Test metrics into the summary; example strips (``panels`` name their columns) and
        the per-image table as media."""

        def final() -> None:
            import wandb

            for key, value in metrics.items():
                if key.startswith(("test_in/", "test_out/", "best/")):
                    self.run.summary[key] = value
            images = [
                wandb.Image(strip, caption=f"{caption} — " + " | ".join(panels))
                for caption, strip in examples
            ]
            if images:
                self.run.log({"examples": images, "epoch": metrics.get("epoch", 0)})
            columns, rows = per_image_table
            self.run.log({"per_image": wandb.Table(columns=columns, data=rows)})

        self._guard(final)

    def finish(self) -> None:
        self._guard(self.run.finish if self.run else None)
        try:  # stop wandb's service now: Ray ends the worker abruptly, which it logs as an error
            import wandb

            wandb.teardown()
        except Exception:  # noqa: BLE001
            pass
