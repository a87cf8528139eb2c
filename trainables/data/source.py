"""From a :class:`DataConfig` to decoded arrays and folds: generate (synthetic), index (one tree
of any layout, several trees, or a CSV manifest), check the patients, decode-or-reload, split."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from trainables.cache_folder import exclusive
from trainables.config import DataConfig, SourceConfig
from trainables.data.cache import DecodedData, cache_root, load_or_build
from trainables.data.layouts import scan_layout
from trainables.data.polypgen import DatasetError, Manifest, scan_polypgen
from trainables.data.splits import FoldSplit, leave_one_centre_out
from trainables.data.synthetic import MANIFEST_NAME, generate, parse_size


def synthetic_root(cfg: DataConfig) -> Path:
    """Where the synthetic dataset of this config lives (generated on first use)."""
    if cfg.root is not None:
        return Path(cfg.root).expanduser()
    args = cfg.synthetic.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_root()
    return base / "synthetic" / digest


def _ensure_synthetic(cfg: DataConfig) -> Path:
    root = synthetic_root(cfg)
    s = cfg.synthetic
    args = {
        "per_centre": s.per_centre,
        "scale": None if s.per_centre else s.scale,
        "size": parse_size(s.size),
        "seed": s.seed,
        "naming": s.naming,
    }
    marker = root / MANIFEST_NAME

    def complete() -> bool:
        if not marker.exists():
            return False
        have = json.loads(marker.read_text())
        return bool(have.get("complete")) and all(
            have.get(k) == (list(v) if k == "size" else v) for k, v in args.items()
        )

    if complete():
        return root
    with exclusive(root):  # two sweeps starting together generate it once
        if not complete():
            generate(root, **args, overwrite=True)
    return root


def data_root(cfg: DataConfig) -> Path:
    """The folder to index (generating synthetic data first if needed); with ``data.sources``
    the first source's root (where one folder stands for the data, e.g. a node's preflight:
    :func:`scan_data` reads them all)."""
    if cfg.source == "synthetic":
        return _ensure_synthetic(cfg)
    if cfg.sources:
        return Path(cfg.sources[0].root).expanduser()
    if cfg.root is None and cfg.manifest is None:
        raise DatasetError(
            ["data.root: required for source 'polypgen' (or give data.manifest or data.sources)"]
        )
    return Path(cfg.root or Path(cfg.manifest).parent).expanduser()


def scan_data(cfg: DataConfig) -> tuple[Manifest, list[str]]:
    """Indexes names only (no pixels): the usable records and every structural problem.

    Synthetic data and a CSV manifest are read as PolypGen's (the manifest overrides the layout);
    otherwise the tree at ``data.root`` in ``data.layout``, or every tree of ``data.sources``.
    """
    if cfg.source == "polypgen" and cfg.sources:
        return scan_sources(cfg.sources, patient_pattern=cfg.patient_pattern)
    if cfg.source == "synthetic" or cfg.manifest is not None:
        return scan_polypgen(
            data_root(cfg), manifest=cfg.manifest, patient_pattern=cfg.patient_pattern
        )
    return scan_layout(data_root(cfg), cfg.layout, patient_pattern=cfg.patient_pattern)


def _source_label(i: int, source: SourceConfig) -> str:
    return f"data.sources[{i}] ({source.root}, layout {source.layout})"


def _centres_of(found: Manifest) -> list[int]:
    """The centres a scanned source takes up, also those left without records by a problem
    (a TestDataset part with an empty folder keeps its number)."""
    return sorted({*found.centres, *found.patients, *found.centre_names})


def _numbering_problems(
    i: int, sources: list[SourceConfig], found: Manifest, used: dict[int, int]
) -> list[str]:
    """Why the centres of ``sources[i]`` cannot join those of the sources before it (``used``:
    centre → index of the source that has it)."""
    source = sources[i]
    label = _source_label(i, source)
    centres = _centres_of(found)
    problems = []
    if source.centre is not None and centres and centres[0] != source.centre:
        problems.append(
            f"{label}: centre {source.centre} given, but this layout numbers its own centres "
            f"({', '.join(f'C{c}' for c in centres)}); remove data.sources[{i}].centre"
        )
    if source.name is not None and len(centres) > 1:
        problems.append(
            f"{label}: name {source.name!r} given, but the source has {len(centres)} centres "
            f"({', '.join(found.centre_label(c) for c in centres)}); name is for single-centre "
            "sources"
        )
    for j in sorted({used[c] for c in centres if c in used}):
        shared = ", ".join(f"C{c}" for c in centres if used.get(c) == j)
        free = max(used) + 1
        problems.append(
            f"{label}: centre number(s) {shared} already taken by "
            f"{_source_label(j, sources[j])}; set data.sources[{i}].centre to a free number "
            f"(e.g. {free}) or list the sources in another order"
        )
    return problems


def scan_sources(
    sources: list[SourceConfig], *, patient_pattern: str | None = None
) -> tuple[Manifest, list[str]]:
    """Indexes every source and joins their records, each source's centres under numbers of
    their own (by default the next after the previous sources').

    Returns:
        One manifest (rooted at the first source) and every problem of every source, including
        centre numbers two sources share (both are named) and a ``name`` given to a source of
        several centres.
    """
    joined = Manifest(Path(sources[0].root).expanduser(), [])
    problems: list[str] = []
    used: dict[int, int] = {}  # centre → the source it came from
    next_centre = 1
    for i, source in enumerate(sources):
        first = source.centre if source.centre is not None else next_centre
        found, found_problems = scan_layout(
            source.root, source.layout, patient_pattern=patient_pattern, first_centre=first
        )
        if i == 0:
            joined.root = found.root  # the release folder found under the root given
        problems += [f"data.sources[{i}]: {p}" for p in found_problems]
        joined.notes += [f"data.sources[{i}]: {n}" for n in found.notes]
        clash = _numbering_problems(i, sources, found, used)
        problems += clash
        centres = _centres_of(found)
        next_centre = max([first, *centres, *used]) + 1 if centres else next_centre
        if clash:
            continue  # its records would be mistaken for the other source's centre
        if source.name is not None:
            found.centre_names.update(dict.fromkeys(centres, source.name))
        used.update(dict.fromkeys(centres, i))
        joined.records += found.records
        joined.patients.update(found.patients)
        joined.centre_names.update(found.centre_names)
    joined.records.sort(key=lambda r: r.centre)  # stable: each centre keeps its file order
    return joined, problems


def frame_level_centres(manifest: Manifest, held_out: Iterable[int]) -> list[int]:
    """Training centres (of any of these folds) whose patients are unknown: their frames would
    be split one by one. The held-out centre is only tested on, so its patients do not matter."""
    held_out = set(held_out)
    return [c for c in manifest.unknown_patients if held_out - {c}]


def patient_problems(manifest: Manifest, cfg: DataConfig, held_out: Iterable[int]) -> list[str]:
    """Refuses a frame-level split nobody asked for (see :func:`frame_level_centres`), unless
    ``allow_frame_level_split`` accepts it."""
    unknown = manifest.unknown_patients
    training = {c: unknown[c] for c in frame_level_centres(manifest, held_out)}
    if not training or cfg.allow_frame_level_split:
        return []
    names = ", ".join(manifest.centre_label(c) for c in training)
    reasons = "; ".join(training.values())
    return [
        f"data: patients unknown for training centre(s) {names} ({reasons}). Splitting them frame "
        "by frame would put frames of one patient in train, validation and in-distribution "
        "test, and make validation-based selection and test_in optimistic. Either give "
        "data.manifest, a CSV with a patient column (`camsweep data manifest ROOT --out "
        "patients.csv` writes one to review and edit); or set data.patient_pattern to a regex "
        "with a group 'patient' that reads the id from the file names; or set "
        "data.allow_frame_level_split: true to accept a frame-level split knowingly (it is "
        "recorded with every result and in the exported tables)"
    ]


def index_data(cfg: DataConfig, held_out: Iterable[int] = ()) -> Manifest:
    """Indexes the dataset; raises :class:`DatasetError` with every structural problem and, for
    the folds given, any training centre without patients (see :func:`patient_problems`)."""
    manifest, problems = scan_data(cfg)
    if not problems:
        problems = patient_problems(manifest, cfg, held_out)
    if problems:
        raise DatasetError(problems)
    return manifest


def prepare_data(cfg: DataConfig, held_out: Iterable[int] = ()) -> tuple[Manifest, DecodedData]:
    """Indexes (generating synthetic data first if needed) and loads the decoded cache.

    Raises:
        DatasetError: listing every problem with the data, before any pixels are decoded.
    """
    manifest = index_data(cfg, held_out)
    cache_dir = Path(cfg.cache_dir).expanduser() / "decoded" if cfg.cache_dir else None
    data, _ = load_or_build(manifest, cfg.image_size, cache_dir)
    return manifest, data


def fold_split(data: DecodedData, cfg: DataConfig, held_out: int) -> FoldSplit:
    """The split of one held-out fold under the configured scheme and seed."""
    return leave_one_centre_out(
        data.centres, data.patients, held_out, seed=cfg.split_seed, scheme=cfg.split
    )
