"""Fig. 3's ladder: every training-settings label a study can pretrain with, as data.

The paper (Sec. 4.1, Fig. 3) names four choices of Inception's training recipe that hurt fixed
features: (1) BN without the scale γ, (2) label smoothing, (3) dropout, (4) the auxiliary head.
Its Fig. 3 draws configurations from the most regularised, Inception's default (leftmost), to
none of the four, the "fair" setting of ResNets and DenseNets (rightmost), each labelled with
"+" (enabled) / "−" (disabled) per choice. Issue 16 asks for each choice switched off on its
own, so the ladder holds both: Inception default, the four one-choice removals, the removals
accumulated in the paper's order (γ, then label smoothing, then dropout), and fair. A label's
place in `RUNGS` is its place on the figure's x-axis (most regularised first).

Plain data, free of TensorFlow: the study planner and the analysis read it without loading the
model zoo (importing `transfer_tf.models` costs ~10 s); `TrainingSettings.from_label` builds
the record from it.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of the four Inception-default choices (Sec. 4.1)."""

    name: str  # the choice, in the paper's words
    field: str  # its `TrainingSettings` field
    inception: object  # the field's value with the choice (Inception's default)
    fair: object  # the field's value without it (the fair setting)
    removed: str  # the word a settings label uses for its removal
    tick: str  # its row in the figure's "+" / "−" labels


# In the order the paper lists them (Sec. 4.1).
CHOICES = (
    Choice("bn_without_gamma", "bn_scale", False, True, "with_bn_gamma", "BN γ"),
    Choice("label_smoothing", "label_smoothing", 0.1, 0.0, "no_label_smoothing", "label smooth."),
    Choice("dropout", "dropout_rate", 0.2, 0.0, "no_dropout", "dropout"),
    Choice("aux_head", "aux_head", True, False, "no_aux_head", "aux head"),
)
_BY_NAME = {c.name: c for c in CHOICES}


@dataclasses.dataclass(frozen=True)
class Rung:
    """A training configuration: Inception's default with the choices in `removed` switched off."""

    removed: tuple[str, ...]

    @property
    def label(self) -> str:
        if not self.removed:
            return "inception_default"
        if len(self.removed) == len(CHOICES):
            return "fair"
        words = [c.removed for c in CHOICES if c.name in self.removed]
        return "_".join(["inception_default", *words])

    def values(self) -> dict:
        """The four `TrainingSettings` fields of this configuration."""
        return {c.field: c.fair if c.name in self.removed else c.inception for c in CHOICES}

    def tick(self) -> str:
        """The paper's label under a point: one "+" / "−" line per choice (BN γ "+" = with γ)."""
        lines = []
        for c in CHOICES:
            enabled = (
                (c.name in self.removed) if c.field == "bn_scale" else c.name not in self.removed
            )
            lines.append(f"{c.tick} {'+' if enabled else '−'}")
        return "\n".join(lines)


_ALL = tuple(c.name for c in CHOICES)
# The x-axis of Fig. 3, most regularised first.
RUNGS = (
    Rung(()),
    *(Rung((c.name,)) for c in CHOICES),  # one choice switched off at a time (issue 16)
    Rung(_ALL[:2]),  # accumulated in the paper's order: γ, then label smoothing, then dropout
    Rung(_ALL[:3]),
    Rung(_ALL),
)
assert len({r.removed for r in RUNGS}) == len(RUNGS) and all(
    set(r.removed) <= set(_BY_NAME) for r in RUNGS
)
BY_LABEL = {r.label: r for r in RUNGS}
LABELS = tuple(BY_LABEL)
# The one-at-a-time ladder issue 16 asks for: both ends and each choice removed alone.
ONE_REMOVED = ("inception_default", *(Rung((c.name,)).label for c in CHOICES), "fair")


def rung(label: str) -> Rung:
    """The configuration of a settings label; a ValueError naming the known labels."""
    if label not in BY_LABEL:
        raise ValueError(
            f"unknown training-settings label {label!r}; use one of {', '.join(LABELS)}"
        )
    return BY_LABEL[label]


def ordered(labels) -> list[str]:
    """`labels` (unique) in Fig. 3's order; labels off the ladder (e.g. "public") after it,
    alphabetically."""
    unique = list(dict.fromkeys(map(str, labels)))
    on = [label for label in LABELS if label in unique]
    return on + sorted(label for label in unique if label not in BY_LABEL)
