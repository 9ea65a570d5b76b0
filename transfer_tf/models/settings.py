"""The four ImageNet training choices the paper studies (Sec. 4.1, Fig. 3), as one record.

`bn_scale`, `dropout_rate` and `aux_head` change the network that `build_model` returns;
`label_smoothing` is applied by the loss during training and is carried here so that a single
object (and a single flagfile) records all four choices of a run. The labels a study pretrains
with (Fig. 3's ladder) are data in `transfer_tf/settings_ladder.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from transfer_tf import settings_ladder


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """ImageNet training choices that the paper found to change the penultimate features.

    Attributes:
      bn_scale: BatchNormalization layers learn a scale γ (the "fair" setting) when True.
      dropout_rate: rate of a Dropout layer inserted between the pooled features and the logits;
        0 means no Dropout layer at all.
      aux_head: add the Inception auxiliary classifier (`aux_logits` output); only for models
        whose `ModelSpec.has_aux_head` is True.
      label_smoothing: label-smoothing factor for the training loss (not part of the network).
    """

    bn_scale: bool = True
    dropout_rate: float = 0.0
    aux_head: bool = False
    label_smoothing: float = 0.0

    def __post_init__(self):
        if not isinstance(self.bn_scale, bool) or not isinstance(self.aux_head, bool):
            raise TypeError(
                f"TrainingSettings.bn_scale and .aux_head must be bool, got bn_scale="
                f"{self.bn_scale!r}, aux_head={self.aux_head!r}"
            )
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise ValueError(
                f"TrainingSettings.dropout_rate must be in [0, 1), got {self.dropout_rate!r}"
            )
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ValueError(
                f"TrainingSettings.label_smoothing must be in [0, 1), got {self.label_smoothing!r}"
            )

    @classmethod
    def fair(cls) -> TrainingSettings:
        """The paper's retrained setting: BN with γ, no dropout, no aux head, no smoothing."""
        return cls(bn_scale=True, dropout_rate=0.0, aux_head=False, label_smoothing=0.0)

    @classmethod
    def inception_default(cls) -> TrainingSettings:
        """Inception's published recipe (Szegedy et al. 2016; Fig. 3 leftmost point).

        BN without γ, label smoothing 0.1, dropout keep-probability 0.8 before the logits
        (TF-slim's `dropout_keep_prob=0.8`), and the auxiliary head.
        """
        return cls(bn_scale=False, dropout_rate=0.2, aux_head=True, label_smoothing=0.1)

    @classmethod
    def from_label(cls, label: str) -> TrainingSettings:
        """A study's settings label (`transfer_tf.settings_ladder`: "fair", "inception_default",
        or Inception's default with choices removed, e.g. "inception_default_no_dropout")."""
        return cls(**settings_ladder.rung(label).values())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"TrainingSettings.from_dict: unknown keys {unknown}; expected a subset of "
                f"{sorted(known)}"
            )
        return cls(**values)
