"""The class-balanced training subsets of Fig. 9: one rule, one example order, every protocol.

The paper trains logistic regression, fine-tuning and training from scratch on "dataset subsets
consisting of different numbers of examples per class", three subsets per size (Sec. 4.3,
Fig. 9). So that the three protocols see the same examples at one (size, seed), all of them
draw through `class_balanced_subset` over the same order of a split's examples:

- the *evaluation order*: the order in which `pipeline.read_examples` yields one split (its
  shards interleaved one record at a time, at most `pipeline.MAX_CYCLE` open at once), which is
  the order `transfer-extract-features` writes a split's feature rows in;
- "train+val" is train's examples in that order, then val's (as logistic regression
  concatenates its features; the input pipeline interleaves the shards of both splits when it
  reads them, so it maps the subset back to its own order with `evaluation_order`).

The rule (`SUBSET_RULE`): for each class c, a permutation of that class's members drawn from
`numpy.random.default_rng([seed, c])`, and its first `per_class` entries. A class's draw
depends on no other class, and for one seed the subsets are nested (4 per class within 8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Recorded in the `inputs` of every per_class sweep cell: a cell computed under an earlier rule
# (logistic regression and the input pipeline drew different examples until this module)
# is stale and computed again. Bump it whenever the examples a (size, seed) selects change.
SUBSET_RULE = "2"
SUBSET_INPUTS = {"subset_rule": SUBSET_RULE}


def class_balanced_subset(
    labels: np.ndarray,
    per_class: int,
    seed: int = 0,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    what: str = "the training split",
) -> np.ndarray:
    """Sorted indices (into `labels`) of exactly `per_class` examples of every class.

    Args:
      labels: int class of each example, in the evaluation order (module docstring).
      per_class: examples per class (Fig. 9's subset size), ≥ 1.
      seed: which subset (the paper draws 3 per size).
      num_classes: every class in [0, num_classes) must have `per_class` examples (default:
        the classes present in `labels`).
      class_names, what: for the error message.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            "per_class subsets need single-label data; a class-balanced subset of a "
            "multi-label dataset is not defined"
        )
    if int(per_class) < 1:
        raise ValueError(f"per_class must be ≥ 1, got {per_class}")
    if int(seed) < 0:
        raise ValueError(f"the subset seed must be ≥ 0, got {seed}")
    classes = np.unique(labels) if num_classes is None else np.arange(num_classes)
    chosen = []
    for c in classes:
        members = np.flatnonzero(labels == c)
        if len(members) < per_class:
            name = f" ({class_names[c]!r})" if class_names is not None else ""
            raise ValueError(
                f"per_class={per_class}: class {c}{name} has only {len(members)} examples in "
                f"{what}; use a value ≤ {len(members)}"
            )
        rng = np.random.default_rng([int(seed), int(c)])
        chosen.append(rng.permutation(members)[:per_class])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)


def evaluation_order(shard_sizes: Sequence[int], cycle_length: int) -> np.ndarray:
    """Manifest positions (shards concatenated) in the order a deterministic
    `tf.data.Dataset.interleave(cycle_length, block_length=1)` over the shards yields them.

    tf.data's interleave: `cycle_length` slots, visited in turn; an empty slot opens the next
    shard in its place when its turn comes; a slot whose shard is exhausted is emptied and the
    turn passes to the next slot.
    """
    sizes = [int(s) for s in shard_sizes]
    starts = np.cumsum([0, *sizes])[:-1]
    slots: list[list[int] | None] = [None] * max(1, int(cycle_length))
    next_shard, order, k = 0, [], 0
    while next_shard < len(sizes) or any(s is not None for s in slots):
        slot = slots[k]
        if slot is None:
            if next_shard < len(sizes):
                slots[k] = [next_shard, 0]
                next_shard += 1
            else:
                k = (k + 1) % len(slots)
            continue
        shard, position = slot
        if position < sizes[shard]:
            order.append(starts[shard] + position)
            slot[1] += 1
        else:
            slots[k] = None
        k = (k + 1) % len(slots)
    return np.asarray(order, np.int64)
