"""Loading pretrained weights from local state-dict files (for clusters without internet).

torch is imported on first load, so a spec can ask `is_weights_path` without loading torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

WEIGHT_FILE_SUFFIXES = (".pth", ".pt")


def is_weights_path(weights: str | Path) -> bool:
    """Whether a `weights` setting names a local file rather than a named weight set.

    Anything with a state-dict suffix, a path separator or an existing file is a path, so that a
    mistyped path fails as "file not found" instead of as an unknown weight name.
    """
    s = str(weights)
    return Path(s).suffix in WEIGHT_FILE_SUFFIXES or "/" in s or "\\" in s or Path(s).is_file()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or pickled-object files
        raise ValueError(f"could not read weights file {path}: {e}") from e
    # Training checkpoints often wrap the weights; accept the usual container key.
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} does not contain a state dict of tensors")
    return dict(obj)


def _preview(keys: list[str], n: int = 5) -> str:
    more = f" ... (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_weights_file(
    module: nn.Module,
    path: str | Path,
    *,
    what: str = "encoder",
    ignore_prefixes: tuple[str, ...] = (),
) -> None:
    """Loads a local state-dict file into `module`, requiring every key to match.

    Args:
        module: Receives the weights in place.
        path: A ``.pth``/``.pt`` file saved with ``torch.save(module.state_dict(), path)``, or a
            checkpoint dict holding it under ``"state_dict"``.
        what: Name of the receiving part, used in error messages.
        ignore_prefixes: Keys starting with these are neither loaded nor required, e.g. ``"fc."``
            so an ImageNet classifier's head is skipped when loading a backbone.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is unreadable, or its keys or shapes do not match `module`.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights file not found: {path}")

    def kept(k: str) -> bool:
        return not k.startswith(ignore_prefixes)

    state = {k: v for k, v in _read_state_dict(path).items() if kept(k)}
    expected = {k for k in module.state_dict() if kept(k)}
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"weights file {path} does not match the {what}: "
            f"missing keys [{_preview(missing)}], unexpected keys [{_preview(unexpected)}]"
        )
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches surface here even with matching keys
        raise ValueError(f"weights file {path} does not match the {what}: {e}") from e
