"""Fig. 9's class-balanced subsets: one rule, and the same examples in every protocol.

The records here are single-colour PNGs whose grey value is the example's number, so the
examples an input pipeline yields can be read back from its images."""

import numpy as np
import pytest
import tensorflow as tf
from encoded_images import encode

from transfer_tf.data import make_input
from transfer_tf.data.pipeline import MAX_CYCLE, read_examples
from transfer_tf.data.subsets import class_balanced_subset, evaluation_order
from transfer_tf.data.tfrecords import split_manifests, write_manifest, write_split
from transfer_tf.protocols import logreg
from transfer_tf.protocols.features import FeatureSource, extract_features


def _png(value: int) -> bytes:
    return encode(np.full((6, 6, 3), value, np.uint8))


def _write(root, split, labels, shard_of, *, first=0, num_classes=3):
    """Example k is `e<first + k>`, class labels[k], grey value first + k, in shard shard_of[k]."""
    examples = [
        (f"e{first + k}", int(c), _png(first + k), f"e{first + k}") for k, c in enumerate(labels)
    ]
    shards = write_split(
        root / "grey",
        split,
        iter(examples),
        len(examples),
        num_shards=max(shard_of) + 1,
        shard_of=shard_of,
    )
    write_manifest(
        root / "grey" / f"{split}.manifest.json",
        {
            "dataset": "grey",
            "split": split,
            "num_examples": len(examples),
            "num_classes": num_classes,
            "multi_label": False,
            "class_names": [f"c{c}" for c in range(num_classes)],
            "shards": shards,
        },
    )


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    """train: 3 classes x 8 in 5 shards of unequal sizes; val: 3 classes x 3 in 2 shards."""
    root = tmp_path_factory.mktemp("records")
    rng = np.random.default_rng(7)
    train = rng.permutation(np.repeat([0, 1, 2], 8))
    sizes = [7, 3, 6, 1, 7]
    _write(root, "train", train, [k for k, n in enumerate(sizes) for _ in range(n)])
    _write(root, "val", rng.permutation(np.repeat([0, 1, 2], 3)), [0] * 4 + [1] * 5, first=100)
    _write(root, "test", [0, 1, 2], [0, 0, 0], first=200)
    return root


def test_the_rule_is_exact_per_class_seeded_nested_and_per_class_independent():
    labels = np.array([2, 0, 1, 0, 2, 1, 0, 1, 2, 0, 1, 2, 0])
    four = class_balanced_subset(labels, 3, seed=5)
    assert np.bincount(labels[four]).tolist() == [3, 3, 3]
    assert (np.diff(four) > 0).all()
    np.testing.assert_array_equal(four, class_balanced_subset(labels, 3, seed=5))
    assert set(class_balanced_subset(labels, 2, seed=5)) < set(four)  # nested for one seed
    seeds = {tuple(class_balanced_subset(labels, 3, seed=s)) for s in range(6)}
    assert len(seeds) > 1
    # Class 0's draw does not depend on the other classes' labels.
    relabelled = np.where(labels == 0, 0, 1)
    zeros = set(np.flatnonzero(labels == 0))
    assert set(four) & zeros == set(class_balanced_subset(relabelled, 3, seed=5)) & zeros
    with pytest.raises(ValueError, match=r"class 1 \('b'\) has only 0 examples in"):
        class_balanced_subset(np.array([0, 0, 2, 2]), 1, num_classes=3, class_names="abc")
    with pytest.raises(ValueError, match="multi-label"):
        class_balanced_subset(np.ones((4, 2)), 1)


def test_evaluation_order_by_hand():
    # Shards of 3, 1, 2 records (positions 0-2, 3, 4-5), two open at once: shard 2 opens in
    # slot 1 when shard 1 runs out.
    assert evaluation_order([3, 1, 2], 2).tolist() == [0, 3, 1, 2, 4, 5]
    assert evaluation_order([2, 2], 4).tolist() == [0, 2, 1, 3]
    assert evaluation_order([0, 2], 2).tolist() == [0, 1]


def test_evaluation_order_is_the_order_the_records_are_read_in(tmp_path):
    """More shards than MAX_CYCLE, of unequal sizes (one empty): tf.data's interleave agrees."""
    sizes = [(k * 7) % 5 for k in range(MAX_CYCLE + 4)]
    shard_of = [k for k, n in enumerate(sizes) for _ in range(n)]
    _write(tmp_path, "train", [0] * len(shard_of), shard_of, num_classes=1)
    manifests = split_manifests(tmp_path, "grey", "train")
    assert [s["num_examples"] for s in manifests[0]["shards"]] == sizes
    read = [int(ex["image/id"].numpy()[1:]) for ex in read_examples(tmp_path, "grey", manifests)]
    assert read == evaluation_order(sizes, MAX_CYCLE).tolist()


def _pipeline_ids(root, split, per_class, seed):
    ds = make_input(
        root,
        "grey",
        split,
        image_size=4,
        preprocessing="none",
        training=False,
        batch_size=64,
        seed=seed,
        per_class=per_class,
    )
    images = np.concatenate([x.numpy() for x, _ in ds])
    assert (images == images[:, :1, :1, :1]).all()  # single-colour images came out whole
    return sorted(int(round(v)) for v in images[:, 0, 0, 0])


@pytest.fixture(scope="module")
def grey_features(grey, tmp_path_factory):
    """Features 'extracted' by the real extraction code through a source that returns the mean
    colour: rows, labels and ids in the order transfer-extract-features writes them."""
    out = tmp_path_factory.mktemp("features")
    source = FeatureSource(
        call=lambda images: tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]),
        size=(4, 4),
        label="mean_colour",
        description={},
    )
    extract_features(source, grey, "grey", str(out), log=lambda *_: None)
    split = {s: logreg.load_features(str(out), s) for s in ("train", "val")}
    ids = {s: logreg.load_ids(str(out), s) for s in ("train", "val")}
    return split, ids


@pytest.mark.parametrize("per_class, seed", [(2, 0), (3, 1), (5, 2)])
def test_the_pipeline_and_logistic_regression_select_the_same_records(
    grey, grey_features, per_class, seed
):
    """Fine-tuning and scratch read `make_input(per_class=, seed=)`; logistic regression draws
    from the extracted features: the same record ids, for train and for train+val."""
    splits, ids = grey_features
    # The extracted rows are the records (ids) with their own colours.
    for s in ("train", "val"):
        assert [int(i[1:]) for i in ids[s]] == np.round(splits[s][0][:, 0]).astype(int).tolist()
    y_train = splits["train"][1]
    chosen = logreg.class_balanced_subset(y_train, per_class, seed)
    by_logreg = sorted(int(i[1:]) for i in ids["train"][chosen])
    assert _pipeline_ids(grey, "train", per_class, seed) == by_logreg
    y_trva = np.concatenate([y_train, splits["val"][1]])
    ids_trva = np.concatenate([ids["train"], ids["val"]])
    chosen = logreg.class_balanced_subset(y_trva, per_class, seed)
    by_logreg = sorted(int(i[1:]) for i in ids_trva[chosen])
    assert _pipeline_ids(grey, "train+val", per_class, seed) == by_logreg
    assert len(by_logreg) == 3 * per_class
