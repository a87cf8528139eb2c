"""Decoded cache: every frame decoded and resized once into compact uint8 arrays.

Trials never touch JPEGs: they share these arrays (through the Ray object store in a sweep).

Two hashes, for two jobs:
- ``key`` — fingerprint of the manifest (paths, centres, patients, each file's size and mtime) and
  the image size. Computing it reads no pixels, so a warm cache reloads with one checksum pass
  over its arrays (a damaged entry is rebuilt, never used), and any edit to a source file changes
  it (the cache is then rebuilt).
- ``dataset_hash`` — a content hash of the decoded arrays and labels, stable when the dataset is
  copied elsewhere (new mtimes, same pixels). Fold artefacts (classifier, CAMs) are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainables.cache_folder import load_or_build as load_or_build_folder
from trainables.data.decode import DecodeError, decode_record
from trainables.data.polypgen import DatasetError, Manifest

CACHE_FORMAT = 1  # bump when the array layout or decoding changes


def cache_root() -> Path:
    """camsweep's per-machine cache (``CAMSWEEP_CACHE``, default ``~/.cache/camsweep``): decoded
    datasets, generated synthetic data, fold artefacts of remote-storage sweeps, local mirrors
    of remote runs."""
    return Path(os.environ.get("CAMSWEEP_CACHE", "~/.cache/camsweep")).expanduser()


def default_cache_dir() -> Path:
    """Where decoded datasets are cached unless ``data.cache_dir`` says otherwise."""
    return cache_root() / "decoded"


@dataclass
class DecodedData:
    """The whole dataset at one resolution, index-aligned with the manifest's records."""

    images: np.ndarray  # (N, S, S, 3) uint8 RGB
    masks: np.ndarray  # (N, S, S) uint8 {0, 1}
    overlays: np.ndarray | None  # (N, S, S) uint8 {0, 1}; synthetic data only
    centres: np.ndarray  # (N,) int64, PolypGen centre numbers (1-based)
    patients: list[str]
    names: list[str]  # image file names, for split CSVs and reports
    image_size: int
    key: str
    dataset_hash: str

    def __len__(self) -> int:
        return len(self.centres)


def manifest_key(manifest: Manifest, image_size: int) -> str:
    h = hashlib.sha256(f"camsweep-cache-v{CACHE_FORMAT}:{image_size}".encode())
    for r in manifest.records:
        for p in (r.image, r.mask, r.overlay):
            if p is None:
                h.update(b"-")
                continue
            st = p.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
        h.update(f"|{r.centre}|{r.patient}\n".encode())
    return h.hexdigest()[:24]


def _content_hash(images, masks, overlays, centres, patients) -> str:
    h = hashlib.sha256()
    for arr in (images, masks, overlays, centres):
        if arr is not None:
            h.update(np.ascontiguousarray(arr).data)
    h.update("\n".join(patients).encode())
    return h.hexdigest()[:16]


def build_decoded(manifest: Manifest, image_size: int, *, workers: int = 4) -> DecodedData:
    """Decodes every record; raises :class:`DatasetError` listing every bad file."""
    n, s = len(manifest.records), image_size
    if n == 0:
        raise DatasetError([f"{manifest.root}: no images"])
    images = np.empty((n, s, s, 3), np.uint8)
    masks = np.empty((n, s, s), np.uint8)
    with_overlays = manifest.has_overlays
    overlays = np.empty((n, s, s), np.uint8) if with_overlays else None
    problems: list[str] = []

    def work(i: int) -> None:
        try:
            image, mask, overlay = decode_record(manifest.records[i], s)
        except DecodeError as exc:
            problems.extend(str(exc).splitlines())
            return
        images[i], masks[i] = image, mask
        if with_overlays:
            overlays[i] = overlay

    # PIL and cv2 release the GIL while decoding, so threads scale on the cores we have.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, range(n)))
    if problems:
        raise DatasetError(sorted(problems))
    centres = np.array([r.centre for r in manifest.records], np.int64)
    patients = [r.patient for r in manifest.records]
    return DecodedData(
        images=images,
        masks=masks,
        overlays=overlays,
        centres=centres,
        patients=patients,
        names=[r.image.name for r in manifest.records],
        image_size=s,
        key=manifest_key(manifest, s),
        dataset_hash=_content_hash(images, masks, overlays, centres, patients),
    )


def _write(data: DecodedData, folder: Path) -> None:
    np.save(folder / "images.npy", data.images)
    np.save(folder / "masks.npy", data.masks)
    np.save(folder / "centres.npy", data.centres)
    if data.overlays is not None:
        np.save(folder / "overlays.npy", data.overlays)
    meta = {
        "format": CACHE_FORMAT,
        "image_size": data.image_size,
        "key": data.key,
        "dataset_hash": data.dataset_hash,
        "patients": data.patients,
        "names": data.names,
    }
    (folder / "meta.json").write_text(json.dumps(meta))


def _load(path: Path) -> DecodedData:
    meta = json.loads((path / "meta.json").read_text())
    overlays = path / "overlays.npy"
    return DecodedData(
        # mmap: a reload is a few syscalls; pages are read on first touch.
        images=np.load(path / "images.npy", mmap_mode="r"),
        masks=np.load(path / "masks.npy", mmap_mode="r"),
        overlays=np.load(overlays, mmap_mode="r") if overlays.exists() else None,
        centres=np.load(path / "centres.npy"),
        patients=meta["patients"],
        names=meta["names"],
        image_size=meta["image_size"],
        key=meta["key"],
        dataset_hash=meta["dataset_hash"],
    )


def load_or_build(
    manifest: Manifest, image_size: int, cache_dir: Path | str | None = None
) -> tuple[DecodedData, bool]:
    """Returns the decoded dataset and whether it came from the cache. Concurrent callers that
    need the same entry decode it once (see :mod:`trainables.cache_folder`); a damaged entry is
    reported and decoded again."""
    cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path = cache_dir / manifest_key(manifest, image_size)

    def build(folder: Path) -> None:
        _write(build_decoded(manifest, image_size), folder)

    return load_or_build_folder(path, build, _load, "decoded cache")
