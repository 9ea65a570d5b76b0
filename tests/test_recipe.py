"""The typed fine-tuning / scratch recipe: its cells keep the ids the sweeps wrote before the recipe
was typed (pinned from that code, commit 70797a1), and bad values fail when the recipe is made."""

import dataclasses

import pytest

from transfer_tf.protocols import sweep
from transfer_tf.protocols.finetune import make_recipe
from transfer_tf.protocols.finetune_grid import scratch_grid
from transfer_tf.protocols.recipe import GridPoint, SweepRecipe
from transfer_tf.protocols.sources import source_from_registry

SETTINGS = {"bn_scale": True, "dropout_rate": 0.2, "aux_head": False, "label_smoothing": 0.1}


def _recipe(**changes):
    source = source_from_registry("mobilenet_v1", weights=None, input_size=32, settings=SETTINGS)
    args = dict(
        dataset="sklearn_digits",
        grid=scratch_grid(2, 1),
        train_steps=6,
        batch_size=16,
        per_class=5,
        crop_area_min=0.5,
    )
    return make_recipe("scratch", source, **{**args, **changes})


def test_cells_keep_the_ids_of_the_untyped_sweeps():
    cells = _recipe().cells()
    assert [sweep.cell_id(c.identity()) for c in cells] == [
        "scratch-mobilenet_v1-sklearn_digits-grid-n5-8eaca53089666ec9",
        "scratch-mobilenet_v1-sklearn_digits-grid-n5-2f4e071dfcab7184",
    ]
    assert cells[0].identity() == {
        "protocol": "scratch",
        "model": "mobilenet_v1",
        "architecture": "mobilenet_v1",
        "settings": "custom",
        "dataset": "sklearn_digits",
        "metric": "top1",
        "per_class": 5,
        "seed": 0,
        "stage": "grid",
        "hparams": {
            "learning_rate": 0.001,
            "weight_decay": 10**-3.25,
            "train_steps": 6,
            "batch_size": 16,
            "dropout_rate": 0.2,
            "aux_head": False,
            "label_smoothing": 0.1,
            "crop_area_min": 0.5,
            "flip": False,
        },
    }
    final = cells[1].final()
    assert final.stage == "final" and final.identity()["hparams"] == cells[1].identity()["hparams"]
    # The trainer's L2 coefficient: the grid's weight decay divided by the learning rate.
    assert cells[1].point == GridPoint(1.0, 10**-3.25)
    assert cells[1].point.l2 == pytest.approx(10**-3.25)


def test_bad_recipes_fail_when_made():
    with pytest.raises(ValueError, match=r"--train_steps=0: must be a positive integer"):
        _recipe(train_steps=0)
    with pytest.raises(ValueError, match=r"--batch_size=-2: must be a positive integer"):
        _recipe(batch_size=-2)
    with pytest.raises(ValueError, match=r"--per_class=0: must be a positive integer"):
        _recipe(per_class=0)
    with pytest.raises(ValueError, match="empty hyperparameter grid"):
        _recipe(grid=[])
    with pytest.raises(ValueError, match=r"crop_area_min=1.5"):
        _recipe(crop_area_min=1.5)
    with pytest.raises(ValueError, match=r"protocol 'logreg'"):
        SweepRecipe("logreg", _recipe().source, "sklearn_digits", "top1", (GridPoint(1, 0),), 5)


def test_speed_flags_enter_the_identity_only_when_not_default():
    from transfer_tf.protocols.finetune import RunOptions, train_config

    default = _recipe().cells()
    explicit = _recipe(mixed_precision="none", jit_compile=False).cells()
    assert [c.identity() for c in explicit] == [c.identity() for c in default]
    assert train_config(default[0], "/r", RunOptions()).mixed_precision == "none"

    fast = _recipe(mixed_precision="mixed_bfloat16", jit_compile=True).cells()
    hparams = fast[0].identity()["hparams"]
    assert hparams == {
        **default[0].identity()["hparams"],
        "mixed_precision": "mixed_bfloat16",
        "jit_compile": True,
    }
    assert fast[0].final().identity()["hparams"] == hparams
    assert sweep.cell_id(fast[0].identity()) != sweep.cell_id(default[0].identity())
    run = train_config(fast[0].final(), "/r", RunOptions())
    assert run.mixed_precision == "mixed_bfloat16" and run.jit_compile is True
    only_xla = _recipe(jit_compile=True).cells()[0].identity()["hparams"]
    assert "mixed_precision" not in only_xla and only_xla["jit_compile"] is True
    with pytest.raises(ValueError, match=r"--mixed_precision='fp8': use one of"):
        _recipe(mixed_precision="fp8")
    # A .keras start's layers keep their saved float32 policy: refused, not silently float32.
    keras_start = dataclasses.replace(_recipe().source, init="keras_model")
    with pytest.raises(ValueError, match="keeps the float32 dtype its layers were saved with"):
        dataclasses.replace(_recipe(), source=keras_start, mixed_precision="mixed_bfloat16")
