"""Groups: the grid points of a sweep, within which (and only within which) trials compete.

Grid axes (typically ``arch`` and ``held_out_centre``, often ``p`` too) are expanded into groups.
Sampled axes are searched *inside* each group: each group gets its own Optuna study and, with
ASHA, its own bracket, so a trial on held-out centre 4 (a hard fold) is never stopped because
trials on centre 1 (an easy one) score higher, and TPE never transfers what it learned about one
architecture to another.

``search.num_samples`` is per group: a sweep runs ``len(groups) * num_samples`` trials.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from search_spaces.axes import Axis

GroupKey = tuple[tuple[str, Any], ...]


def expand_groups(axes: Sequence[Axis]) -> list[dict[str, Any]]:
    """Every combination of the grid axes' values (one empty group when there are none)."""
    grid = [a for a in axes if a.is_grid]
    combos = itertools.product(*(a.values for a in grid))
    return [{a.name: v for a, v in zip(grid, combo)} for combo in combos]


def group_key(config: Mapping[str, Any], grid_axes: Sequence[str]) -> GroupKey:
    """The group a trial config belongs to: its values on the grid axes, in a fixed order."""
    return tuple((name, config.get(name)) for name in grid_axes)


def _label_part(name: str, value: Any) -> str:
    if name == "held_out_centre":
        return f"C{value}"
    return value if isinstance(value, str) else f"{name}={value}"


def group_label(key: GroupKey) -> str:
    """``(("arch", "unet"), ("held_out_centre", 2), ("p", 0.5))`` → ``"unet/C2/p=0.5"``."""
    return "/".join(_label_part(name, v) for name, v in key) or "all"
