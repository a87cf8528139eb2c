"""Applying an exported model folder to frames: `camsweep predict`.

The members' polyp probabilities are computed at the training resolution from the same input
path as training (``read_image`` at ``image_size``; ImageNet normalisation on the host on the
CPU, on the device on a GPU — the two evaluation paths of a trial), averaged over the members
(a soft fold ensemble), then resized to each frame's own size and thresholded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from trainables.config import TrainConfig
from trainables.data.augment import to_normalized_chw
from trainables.data.batch_augment import normalize
from trainables.data.decode import DecodeError, image_size_of, read_image
from trainables.data.polypgen import IMAGE_SUFFIXES, DatasetError
from trainables.engine import Runtime
from trainables.model_folder import Member, ModelManifest, load_member, read_model_folder

PROBABILITIES_DIR = "probabilities"


class Ensemble:
    """The members of a model folder on one device; probabilities are their mean."""

    def __init__(self, manifest: ModelManifest, members: Sequence[Member], runtime: Runtime):
        self.manifest, self.members, self.runtime = manifest, list(members), runtime
        self.nets = [runtime.prepare_model(load_member(manifest, m)) for m in self.members]
        self.image_size = manifest.preprocessing.image_size

    @classmethod
    def load(
        cls, model_dir: Path | str, folds: list[int] | None = None, device: str = "auto"
    ) -> Ensemble:
        manifest = read_model_folder(model_dir)
        return cls(
            manifest, manifest.select(folds), Runtime.from_config(TrainConfig(device=device))
        )

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        rt = self.runtime
        if rt.device.type == "cuda":
            x = torch.from_numpy(images).to(rt.device, non_blocking=True).permute(0, 3, 1, 2)
            x = normalize(x)
        else:
            x = torch.from_numpy(np.stack([to_normalized_chw(im) for im in images]))
        return x.contiguous(memory_format=torch.channels_last) if rt.channels_last else x

    @torch.no_grad()
    def member_probabilities(self, images: np.ndarray) -> torch.Tensor:
        """(members, B, S, S) float32 probabilities on the device, from (B, S, S, 3) uint8 RGB."""
        x = self._inputs(images)
        out = []
        for net in self.nets:
            with self.runtime.autocast():
                logits = net(x)["logits"]
            out.append(torch.sigmoid(logits.float())[:, 0])
        return torch.stack(out)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """(B, S, S) float32: the members' mean probability, on the host."""
        return self.member_probabilities(images).mean(0).cpu().numpy()


def to_frame_size(probs: np.ndarray, width: int, height: int) -> np.ndarray:
    """A probability map resized (bilinear) to a frame's own width × height."""
    if probs.shape == (height, width):
        return probs
    return cv2.resize(probs, (width, height), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Frame:
    path: Path
    width: int
    height: int


def list_frames(images_dir: Path) -> list[Frame]:
    """Every image of a folder (not recursive), sorted by name, with its size from the header.

    Raises:
        DatasetError: a missing or empty folder, unreadable images and duplicate stems — all at
            once, each naming the file.
    """
    if not images_dir.is_dir():
        raise DatasetError([f"{images_dir}: images folder does not exist"])
    paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetError(
            [f"{images_dir}: no images (looked for {', '.join(IMAGE_SUFFIXES)} files)"]
        )
    problems, frames, stems = [], [], {}
    for path in paths:
        if path.stem in stems:
            problems.append(f"{path}: same name as {stems[path.stem].name} (masks are <name>.png)")
            continue
        stems[path.stem] = path
        try:
            width, height = image_size_of(path)
        except DecodeError as exc:
            problems.append(str(exc))
            continue
        frames.append(Frame(path, width, height))
    if problems:
        raise DatasetError(problems)
    return frames


def decoded_batches(
    frames: Sequence[Frame], size: int, batch_size: int, workers: int = 4
) -> Iterator[tuple[list[Frame], np.ndarray]]:
    """(frames, (B, S, S, 3) uint8) batches, decoded by a thread pool one batch ahead."""
    with ThreadPoolExecutor(workers) as pool:

        def submit(start: int):
            chunk = list(frames[start : start + batch_size])
            return chunk, [pool.submit(read_image, f.path, size) for f in chunk]

        pending = submit(0) if frames else None
        for start in range(0, len(frames), batch_size):
            chunk, futures = pending
            pending = submit(start + batch_size) if start + batch_size < len(frames) else None
            yield chunk, np.stack([f.result() for f in futures])


@dataclass
class PredictReport:
    frames: int
    members: list[Member]
    seconds: float
    device: str
    out_dir: Path

    def format(self) -> str:
        folds = ", ".join(m.name for m in self.members)
        n = len(self.members)
        kind = "one model" if n == 1 else f"a {n}-model ensemble"
        rate = self.frames / max(self.seconds, 1e-9)
        return (
            f"predicted {self.frames} frame(s) with {kind} ({folds}) in {self.seconds:.1f} s "
            f"({rate:.1f} frames/s, {self.device}); masks in {self.out_dir}"
        )


def _outputs(frame: Frame, out_dir: Path, save_probabilities: bool) -> list[Path]:
    files = [out_dir / f"{frame.path.stem}.png"]
    if save_probabilities:
        files.append(out_dir / PROBABILITIES_DIR / f"{frame.path.stem}.npy")
    return files


def check_output(
    out_dir: Path,
    images_dir: Path,
    frames: Sequence[Frame],
    *,
    save_probabilities: bool,
    overwrite: bool,
) -> None:
    """Refuses to write masks over the input frames, or over earlier outputs unless asked to."""
    if out_dir.resolve() == images_dir.resolve():
        raise ValueError(f"--out {out_dir} is the images folder: masks would replace the frames")
    existing = [
        f for frame in frames for f in _outputs(frame, out_dir, save_probabilities) if f.exists()
    ]
    if existing and not overwrite:
        raise FileExistsError(
            f"{existing[0]}: exists ({len(existing)} of the outputs already in {out_dir}); "
            "pass --overwrite to replace them"
        )


def predict_folder(
    model_dir: Path | str,
    images_dir: Path | str,
    out_dir: Path | str,
    *,
    folds: list[int] | None = None,
    save_probabilities: bool = False,
    overwrite: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
) -> PredictReport:
    """Writes ``out_dir/<name>.png`` (0/255 polyp mask at the frame's own size) for every image of
    ``images_dir``, and with ``save_probabilities`` ``out_dir/probabilities/<name>.npy`` (float16
    probabilities at the frame's size).

    Every check (model folder, images, output folder) runs before any frame is predicted.

    Raises:
        ModelFolderError, DatasetError, FileExistsError, ValueError: naming the file at fault.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size {batch_size}: must be at least 1")
    images_dir, out_dir = Path(images_dir).expanduser(), Path(out_dir).expanduser()
    manifest = read_model_folder(model_dir)
    members = manifest.select(folds)
    frames = list_frames(images_dir)
    check_output(
        out_dir, images_dir, frames, save_probabilities=save_probabilities, overwrite=overwrite
    )
    ensemble = Ensemble(manifest, members, Runtime.from_config(TrainConfig(device=device)))
    threshold = manifest.preprocessing.threshold
    (out_dir / PROBABILITIES_DIR if save_probabilities else out_dir).mkdir(
        parents=True, exist_ok=True
    )
    start = time.perf_counter()
    bar = _progress_bar(len(frames), enabled=progress)
    for chunk, images in decoded_batches(frames, ensemble.image_size, batch_size):
        for frame, probs in zip(chunk, ensemble.probabilities(images)):
            full = to_frame_size(probs, frame.width, frame.height)
            mask_file, *prob_file = _outputs(frame, out_dir, save_probabilities)
            Image.fromarray(((full > threshold) * 255).astype(np.uint8)).save(mask_file)
            if prob_file:
                np.save(prob_file[0], full.astype(np.float16))
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    return PredictReport(len(frames), members, seconds, str(ensemble.runtime.device), out_dir)


def _progress_bar(total: int, *, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", file=sys.stderr, disable=not enabled, leave=False)
