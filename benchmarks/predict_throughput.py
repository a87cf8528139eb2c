"""`camsweep predict` throughput: frames/s of one fold and of the five-fold ensemble, each next to
a plain per-image loop over the same frames (decode → normalise → forward of each model →
resize to the frame → threshold → PNG, one frame at a time) measured in the same run.

The models are untrained (throughput does not depend on the weights); the frames are synthetic
JPEGs of one size (default 640×480; PolypGen's are up to 1920×1080).

    python -m benchmarks.predict_throughput [--variant tiny] [--image-size 64] [--frames 48]
        [--frame-size 640x480] [--batch-size 8] [--device auto] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import emit
from trainables.config import TrainConfig
from trainables.data.augment import to_normalized_chw
from trainables.data.decode import read_image
from trainables.engine import Runtime
from trainables.inference import Ensemble, list_frames, predict_folder, to_frame_size
from trainables.model_folder import write_untrained

FOLDS = (1, 2, 3, 4, 5)


def write_frames(folder: Path, n: int, width: int, height: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"frame{i:04d}.jpg", quality=90)


@torch.no_grad()
def plain_loop(ensemble: Ensemble, images: Path, out: Path) -> float:
    """Seconds for the one-frame-at-a-time loop (the baseline)."""
    out.mkdir(parents=True, exist_ok=True)
    device = ensemble.runtime.device
    start = time.perf_counter()
    for frame in list_frames(images):
        x = torch.from_numpy(to_normalized_chw(read_image(frame.path, ensemble.image_size)))
        x = x[None].to(device)
        probs = torch.stack(
            [torch.sigmoid(net(x)["logits"].float())[0, 0] for net in ensemble.nets]
        )
        full = to_frame_size(probs.mean(0).cpu().numpy(), frame.width, frame.height)
        Image.fromarray(((full > 0.5) * 255).astype(np.uint8)).save(out / f"{frame.path.stem}.png")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="tiny", help="tiny (CPU) or paper")
    parser.add_argument("--arch", default="unet")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--frame-size", default="640x480", help="WIDTHxHEIGHT of the frames")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats")
    args = parser.parse_args()
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_untrained(
            root / "model",
            folds=FOLDS,
            arch=args.arch,
            variant=args.variant,
            image_size=args.image_size,
        )
        write_frames(root / "frames", args.frames, width, height)
        runtime = Runtime.from_config(TrainConfig(device=args.device))
        settings = {
            "arch": args.arch,
            "variant": args.variant,
            "image_size": args.image_size,
            "frame_size": args.frame_size,
            "batch_size": args.batch_size,
            "device": runtime.device.type,
        }
        for label, folds in (("one fold", [FOLDS[0]]), ("five-fold ensemble", list(FOLDS))):
            ensemble = Ensemble.load(root / "model", folds, args.device)

            def batched(folds: list[int] = folds) -> float:
                return predict_folder(
                    root / "model",
                    root / "frames",
                    root / "batched",
                    folds=folds,
                    batch_size=args.batch_size,
                    device=args.device,
                    overwrite=True,
                    progress=False,
                ).seconds

            plain_loop(ensemble, root / "frames", root / "plain")  # warm-up (cuDNN, caches)
            batched()
            # Interleaved repeats, so a noisy neighbour slows both alike; medians of each.
            pairs = [
                (plain_loop(ensemble, root / "frames", root / "plain"), batched())
                for _ in range(args.repeats)
            ]
            plain_s, batched_s = (float(np.median(t)) for t in zip(*pairs))
            emit(
                f"predict frames/s, {label} (batched, threaded decode) vs per-image loop",
                args.frames / batched_s,
                "frames/s",
                baseline=args.frames / plain_s,
                members=len(folds),
                **settings,
            )


if __name__ == "__main__":
    main()
