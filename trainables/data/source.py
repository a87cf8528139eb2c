"""From a :class:`DataConfig` to decoded arrays: generate (synthetic), index, decode-or-reload."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from trainables.config import DataConfig
from trainables.data.cache import DecodedData, default_cache_dir, load_or_build
from trainables.data.polypgen import DatasetError, Manifest, index_polypgen
from trainables.data.synthetic import MANIFEST_NAME, generate, parse_size


def synthetic_root(cfg: DataConfig) -> Path:
    """Where the synthetic dataset of this config lives (generated on first use)."""
    if cfg.root is not None:
        return Path(cfg.root).expanduser()
    args = cfg.synthetic.model_dump(mode="json")
    digest = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:12]
    base = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir().parent
    return base / "synthetic" / digest


def _ensure_synthetic(cfg: DataConfig) -> Path:
    root = synthetic_root(cfg)
    s = cfg.synthetic
    args = {
        "per_centre": s.per_centre,
        "scale": None if s.per_centre else s.scale,
        "size": parse_size(s.size),
        "seed": s.seed,
    }
    marker = root / MANIFEST_NAME
    if marker.exists():
        have = json.loads(marker.read_text())
        if all(have.get(k) == (list(v) if k == "size" else v) for k, v in args.items()):
            return root
    generate(root, **args, overwrite=True)
    return root


def prepare_data(cfg: DataConfig) -> tuple[Manifest, DecodedData]:
    """Indexes (generating synthetic data first if needed) and loads the decoded cache.

    Raises:
        DatasetError: listing every problem with the data, before any training starts.
    """
    if cfg.source == "synthetic":
        root = _ensure_synthetic(cfg)
    else:
        if cfg.root is None and cfg.manifest is None:
            raise DatasetError(
                ["data.root: required for source 'polypgen' (or give data.manifest)"]
            )
        root = Path(cfg.root or Path(cfg.manifest).parent).expanduser()
    manifest = index_polypgen(root, manifest=cfg.manifest, patient_pattern=cfg.patient_pattern)
    cache_dir = Path(cfg.cache_dir).expanduser() / "decoded" if cfg.cache_dir else None
    data, _ = load_or_build(manifest, cfg.image_size, cache_dir)
    return manifest, data
