"""One training run's folder, `model_dir`, and what lives in it:

    config.json   everything needed to rebuild the network and rerun the run (TrainConfig)
    ckpt/         tf.train.CheckpointManager checkpoints
    tb/           TensorBoard event files
    history.csv   the evaluation metric against step: step, epoch, eval_split, eval_metric

Every reader and writer of a run (the loop, export, fine-tuning's initialisation, the study's
model table) names these files through `RunDir`, so the layout has one home.
"""

from __future__ import annotations

import csv
import dataclasses
import os

CONFIG_NAME = "config.json"
CKPT_SUBDIR = "ckpt"
TB_SUBDIR = "tb"
HISTORY_NAME = "history.csv"


@dataclasses.dataclass(frozen=True)
class RunDir:
    path: str

    @property
    def config(self) -> str:
        return os.path.join(self.path, CONFIG_NAME)

    @property
    def ckpt(self) -> str:
        return os.path.join(self.path, CKPT_SUBDIR)

    @property
    def tb(self) -> str:
        return os.path.join(self.path, TB_SUBDIR)

    @property
    def history(self) -> str:
        return os.path.join(self.path, HISTORY_NAME)

    def latest_checkpoint(self) -> str | None:
        import tensorflow as tf  # only readers of checkpoints need TensorFlow

        return tf.train.latest_checkpoint(self.ckpt)

    def read_history(self, up_to_step: int | None = None) -> list[dict]:
        """[{"step", "epoch", "eval_metric"}] from history.csv ([] without one); a line cut by a kill and
        rows after `up_to_step` are left out. (Runs before 2026-12 named the column val_metric
        whatever split it held.)"""
        if not os.path.exists(self.history):
            return []
        with open(self.history) as f:
            rows = list(csv.DictReader(f))
        out = []
        for row in rows:
            try:
                metric = row.get("eval_metric", row.get("val_metric"))
                epoch = float(row["epoch"]) if row.get("epoch") else None
                entry = {"step": int(row["step"]), "epoch": epoch, "eval_metric": float(metric)}
            except (KeyError, TypeError, ValueError):
                continue
            if up_to_step is None or entry["step"] <= up_to_step:
                out.append(entry)
        return out
