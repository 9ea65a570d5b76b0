"""The fine-tuning / scratch recipe as one typed object (Model Garden style): `SweepRecipe` says
everything that decides a sweep's cells, `Cell` is one grid point of it at one stage.

The trainer reads fields, never string keys. A cell's identity — the dict whose hash is its id
(`sweep.cell_id`) and which its result JSON records — is derived from these objects in one place,
`Cell.identity()`, and is exactly the dict the sweeps wrote before the recipe was typed, so cell
ids (and resumes of old results folders) are unchanged.

Each default has one home: the fields below (the paper's recipe, SPEC.md / SimCLR B.8); the
binaries' flags take their defaults from here (`transfer_tf/bin/sweep.py`).
"""

from __future__ import annotations

import dataclasses

from transfer_tf.data.pipeline import CROP_AREA, check_crop_area_min
from transfer_tf.protocols import sweep
from transfer_tf.protocols.finetune_grid import l2_coefficient
from transfer_tf.protocols.sources import Source
from transfer_tf.training.config import KERAS_MODEL_PRECISION, MIXED_PRECISION

PROTOCOLS = ("finetune", "scratch")
# Training steps per cell (Sec. 4.2 / 4.3; 40,000 for scratch is from outside the main text).
DEFAULT_STEPS = {"finetune": 20_000, "scratch": 40_000}


@dataclasses.dataclass(frozen=True)
class GridPoint:
    """One point of the hyperparameter grid: learning rate per 256 images, and the grid's weight
    decay (0 = none), used as the L2 coefficient weight_decay / learning_rate."""

    learning_rate: float
    weight_decay: float

    @property
    def l2(self) -> float:
        return l2_coefficient(self.learning_rate, self.weight_decay)


@dataclasses.dataclass(frozen=True)
class SweepRecipe:
    """Everything that decides the cells of one fine-tuning or scratch sweep.

    Attributes:
      protocol: "finetune" or "scratch".
      source: the starting network and its labels (`transfer_tf.protocols.sources`).
      dataset, metric: the target dataset and its metric name.
      grid: the grid points, in grid order (ties in validation go to the earlier point).
      train_steps, batch_size: steps per cell and the global batch (learning rates scale).
      per_class: train on N examples per class (Fig. 9); None = the whole training split.
      seed: data order, augmentation and initialisation.
      crop_area_min, flip: training augmentation (Inception crop's smallest area; flips).
      optimizer ... bn_momentum: the paper's optimiser recipe, fixed for both protocols: SGD with
        Nesterov momentum 0.9, cosine decay to zero without warm-up, no EMA, BN momentum
        max(1 - 10/s, 0.9) with s steps per epoch ("auto").
      mixed_precision, jit_compile: the speed flags (`transfer_tf/training/precision.py`). They
        change the arithmetic, so a cell's identity names them, but only when they differ from
        the defaults ("none", False): cells with the defaults keep the ids they always had.
    """

    protocol: str
    source: Source
    dataset: str
    metric: str
    grid: tuple[GridPoint, ...]
    train_steps: int
    batch_size: int = 256
    per_class: int | None = None
    seed: int = 0
    crop_area_min: float = CROP_AREA[0]
    flip: bool = True
    optimizer: str = "sgd_nesterov"
    momentum: float = 0.9
    lr_schedule: str = "cosine"
    warmup_epochs: float = 0.0
    ema_decay: float = 0.0
    bn_momentum: str = "auto"
    mixed_precision: str = "none"
    jit_compile: bool = False

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol {self.protocol!r}: use one of {PROTOCOLS}")
        if not self.grid:
            raise ValueError(
                "empty hyperparameter grid: pass at least one learning rate and weight decay"
            )
        grid = tuple(p if isinstance(p, GridPoint) else GridPoint(**p) for p in self.grid)
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "crop_area_min", check_crop_area_min(self.crop_area_min))
        for name in ("train_steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name}={getattr(self, name)!r}: must be a positive integer")
        if self.per_class is not None and int(self.per_class) < 1:
            raise ValueError(f"--per_class={self.per_class!r}: must be a positive integer")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"--mixed_precision={self.mixed_precision!r}: use one of {MIXED_PRECISION}"
            )
        if self.mixed_precision != "none" and self.source.init == "keras_model":
            raise ValueError("--" + KERAS_MODEL_PRECISION)

    @property
    def dropout_rate(self) -> float:
        return float(self.source.settings.get("dropout_rate", 0.0))

    @property
    def aux_head(self) -> bool:
        return bool(self.source.settings.get("aux_head", False))

    @property
    def label_smoothing(self) -> float:
        return float(self.source.settings.get("label_smoothing", 0.0))

    def cells(self, stage: str = "grid") -> list[Cell]:
        return [Cell(self, point, stage) for point in self.grid]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid point of a recipe at one stage: "grid" (train on train, score val) or "final"
    (train on train+val, score test)."""

    recipe: SweepRecipe
    point: GridPoint
    stage: str = "grid"

    def __post_init__(self):
        if self.stage not in sweep.STAGES:
            raise ValueError(f"cell stage {self.stage!r}: use one of {sweep.STAGES}")

    def final(self) -> Cell:
        return dataclasses.replace(self, stage="final")

    def identity(self) -> dict:
        """The result schema's cell dict (docs/DESIGN.md); its hash is the cell id."""
        recipe, source = self.recipe, self.recipe.source
        identity = {
            "protocol": recipe.protocol,
            "model": source.label,
            "architecture": source.architecture,
            "settings": source.settings_label,
            "dataset": recipe.dataset,
            "metric": recipe.metric,
            "per_class": recipe.per_class,
            "seed": recipe.seed,
            "stage": self.stage,
            "hparams": {
                "learning_rate": float(self.point.learning_rate),
                "weight_decay": float(self.point.weight_decay),
                "train_steps": int(recipe.train_steps),
                "batch_size": int(recipe.batch_size),
                "dropout_rate": recipe.dropout_rate,
                "aux_head": recipe.aux_head,
                "label_smoothing": recipe.label_smoothing,
                "crop_area_min": float(recipe.crop_area_min),
                "flip": bool(recipe.flip),
            },
        }
        # Added after results existed: only a non-default value enters the hash.
        if recipe.mixed_precision != "none":
            identity["hparams"]["mixed_precision"] = recipe.mixed_precision
        if recipe.jit_compile:
            identity["hparams"]["jit_compile"] = True
        return identity
