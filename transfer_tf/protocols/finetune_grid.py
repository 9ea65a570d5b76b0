"""Hyperparameter grids of fine-tuning (Sec. 4.2) and training from scratch (Sec. 4.3).

The values follow SPEC.md (from SimCLR, appendix B.8, which states it follows this protocol):

- fine-tuning: 7 learning rates log-spaced in [1e-4, 0.1] × (7 weight decays log-spaced in
  [1e-6, 1e-3], plus no weight decay) = 56 cells;
- from scratch: 7 learning rates log-spaced in [1e-3, 1.0] × 8 weight decays log-spaced in
  [1e-5, 10^-1.5] = 56 cells.

A grid weight decay `wd` is used as the L2 coefficient wd / learning_rate (the protocol "divides
the weight decay by the learning rate"). Learning rates are for a batch of 256 and scale linearly
with the batch size B (peak rate lr · B / 256), while the coefficient divides by the unscaled grid
rate, so with SGD the per-step shrinkage of the weights is lr(t) / lr · wd · B / 256: `wd` at the
start of the cosine schedule at the paper's batch of 256, `wd · B / 256` at another batch (the
mini-study's batches of 16-32 decay 8-16x less per step than their grid value says).

`num_learning_rates` / `num_weight_decays` shrink a grid to that many log-spaced values over the
same range (one value: the geometric middle of the range), for quick runs and tests.
"""

from __future__ import annotations

import numpy as np
from absl import flags

FINETUNE_LR_RANGE = (-4.0, -1.0)  # log10
FINETUNE_WD_RANGE = (-6.0, -3.0)
SCRATCH_LR_RANGE = (-3.0, 0.0)
SCRATCH_WD_RANGE = (-5.0, -1.5)


def log_spaced(log10_range: tuple[float, float], count: int) -> list[float]:
    """`count` values log-spaced over 10**range, ends included; 1 value = the geometric middle."""
    lo, hi = log10_range
    if count < 1:
        raise ValueError(f"a grid needs at least one value, got count={count}")
    if count == 1:
        return [float(10 ** ((lo + hi) / 2))]
    return [float(v) for v in np.logspace(lo, hi, count)]


def _cells(learning_rates, weight_decays) -> list[dict]:
    return [
        {"learning_rate": float(lr), "weight_decay": float(wd)}
        for lr in learning_rates
        for wd in weight_decays
    ]


def finetune_grid(
    num_learning_rates: int = 7, num_weight_decays: int = 7, *, include_no_decay: bool = True
) -> list[dict]:
    """[{learning_rate, weight_decay}, ...]: 7 × (7 + 1) = 56 cells by default (wd 0 = none)."""
    decays = log_spaced(FINETUNE_WD_RANGE, num_weight_decays) if num_weight_decays else []
    if include_no_decay:
        decays = decays + [0.0]
    if not decays:
        raise ValueError(
            "finetune_grid: no weight decay values (num_weight_decays=0 and no 'none')"
        )
    return _cells(log_spaced(FINETUNE_LR_RANGE, num_learning_rates), decays)


def scratch_grid(num_learning_rates: int = 7, num_weight_decays: int = 8) -> list[dict]:
    """[{learning_rate, weight_decay}, ...]: 7 × 8 = 56 cells by default."""
    return _cells(
        log_spaced(SCRATCH_LR_RANGE, num_learning_rates),
        log_spaced(SCRATCH_WD_RANGE, num_weight_decays),
    )


def explicit_grid(learning_rates, weight_decays) -> list[dict]:
    """A grid from explicit value lists (flags --learning_rates / --weight_decays)."""
    learning_rates = [float(v) for v in learning_rates]
    weight_decays = [float(v) for v in weight_decays]
    bad = [v for v in learning_rates if not v > 0] + [v for v in weight_decays if v < 0]
    if bad or not learning_rates or not weight_decays:
        raise ValueError(
            f"grid values must be learning rates > 0 and weight decays >= 0, got "
            f"learning_rates={learning_rates}, weight_decays={weight_decays}"
        )
    return _cells(learning_rates, weight_decays)


def l2_coefficient(learning_rate: float, weight_decay: float) -> float:
    """The L2 coefficient the training loss uses for a grid cell: weight_decay / learning_rate."""
    return float(weight_decay) / float(learning_rate) if weight_decay else 0.0


# Flags that choose a grid (shared by transfer-finetune / -scratch and transfer-study).

GRID_FLAGS = (
    "learning_rates",
    "weight_decays",
    "num_learning_rates",
    "num_weight_decays",
    "no_decay_cell",
)


def define_grid_flags(protocol: str, flag_values: flags.FlagValues) -> None:
    """The flags that choose a sweep's grid (GRID_FLAGS; no_decay_cell for fine-tuning only).

    Defined here, not in bin/: the study planner reads a flagfile's grid exactly as the binary
    will, into a private FlagValues, and the library never imports a binary.
    """
    fv = flag_values
    finetune = protocol == "finetune"
    flags.DEFINE_list(
        "learning_rates", None, "Explicit learning rates (per 256 images).", flag_values=fv
    )
    flags.DEFINE_list("weight_decays", None, "Explicit weight decays (0 = none).", flag_values=fv)
    flags.DEFINE_integer(
        "num_learning_rates", 7, "Shrink the grid: this many learning rates.", flag_values=fv
    )
    flags.DEFINE_integer(
        "num_weight_decays",
        7 if finetune else 8,
        "Shrink the grid: this many weight decays.",
        flag_values=fv,
    )
    if finetune:
        flags.DEFINE_boolean(
            "no_decay_cell", True, "Include weight decay 'none' in the grid.", flag_values=fv
        )


def grid_from_flags(protocol: str, fv) -> list[dict]:
    """The grid that --learning_rates / --weight_decays or the --num_* flags describe."""
    if fv.learning_rates or fv.weight_decays:
        if not (fv.learning_rates and fv.weight_decays):
            raise ValueError("pass both --learning_rates and --weight_decays, or neither")
        return explicit_grid(fv.learning_rates, fv.weight_decays)
    if protocol == "finetune":
        return finetune_grid(
            fv.num_learning_rates, fv.num_weight_decays, include_no_decay=fv.no_decay_cell
        )
    return scratch_grid(fv.num_learning_rates, fv.num_weight_decays)
