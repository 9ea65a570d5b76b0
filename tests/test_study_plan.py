"""The study planner's training-subset sweeps (Fig. 9): which steps, with which flags."""

import pytest

from transfer_tf.study import plan
from transfer_tf.study.steps import topological_order


def _flags(step):
    return dict(a[2:].split("=", 1) for a in step.argv[1:] if a.startswith("--") and "=" in a)


def _plan(tmp_path, **kwargs):
    cfg = plan.StudyConfig(
        study_dir=str(tmp_path),
        target_datasets=("sklearn_digits", "skimage_textures"),
        finetune_datasets=("sklearn_digits",),
        public_models=("efficientnet_lite0",),
        pretrain_models=("mobilenet_v1",),
        finetune_models=("mobilenet_v1_fair",),
        scratch_models=("mobilenet_v1",),
        subset_sizes=(5, 10),
        **kwargs,
    )
    return {s.name: s for s in plan.plan_study(cfg)}


def test_subset_sweeps_for_one_model_cover_the_three_protocols_on_the_finetune_targets(tmp_path):
    """Fig. 9: by default 3 subsets per size (the paper's), seeds 0, 1, 2, in every protocol."""
    steps = _plan(tmp_path, subset_models=("mobilenet_v1_fair",))
    subset = {
        name: (_flags(s)["per_class"], _flags(s).get("seed", "0"))
        for name, s in steps.items()
        if "per_class" in _flags(s)
    }
    assert subset == {
        f"{protocol}-{who}-sklearn_digits-n{n}{suffix}": (str(n), seed)
        for n in (5, 10)
        for suffix, seed in (("", "0"), ("-s1", "1"), ("-s2", "2"))
        for protocol, who in (
            ("logreg", "mobilenet_v1_fair"),
            ("finetune", "mobilenet_v1_fair"),
            ("scratch", "mobilenet_v1"),
        )
    }
    # A subset sweep is the whole-set sweep's command plus --per_class (and --seed for the
    # second and third subsets), with the same deps.
    for name, step in steps.items():
        if name in subset:
            whole = steps[name.rsplit("-n", 1)[0]]
            per_class, seed = subset[name]
            extra = (f"--per_class={per_class}",) + ((f"--seed={seed}",) if seed != "0" else ())
            assert step.argv == (*whole.argv, *extra)
            assert step.deps == whole.deps
    # The scratch result carries the fair label, so Fig. 9 pairs it with that model.
    assert _flags(steps["scratch-mobilenet_v1-sklearn_digits-n5"])["model_label"] == (
        "mobilenet_v1_fair"
    )
    assert set(subset) <= set(steps["analyze"].deps)
    assert len(topological_order(list(steps.values()))) == len(steps)
    one = _plan(tmp_path, subset_models=("mobilenet_v1_fair",), subsets_per_size=1)
    assert not [n for n in one if n.endswith(("-s1", "-s2"))]
    cfg = plan.StudyConfig(
        study_dir=str(tmp_path),
        target_datasets=("sklearn_digits", "skimage_textures"),
        subset_sizes=(4,),
        subsets_per_size=2,
        subset_datasets=("skimage_textures",),
    )
    assert cfg.subsets_for("m", "sklearn_digits") == ((None, 0),)
    assert cfg.subsets_for("m", "skimage_textures") == ((None, 0), (4, 0), (4, 1))
    with pytest.raises(ValueError, match=r"--subset_datasets: \['lfw_faces'\] are not"):
        _plan(tmp_path, subset_datasets=("lfw_faces",))


def test_subset_sweeps_default_to_every_model_and_none_without_sizes(tmp_path):
    every = _plan(tmp_path)
    logreg = sorted(n for n in every if n.startswith("logreg-") and n.endswith("-n5"))
    assert logreg == [
        f"logreg-{m}-sklearn_digits-n5"
        for m in ("efficientnet_lite0", "mobilenet_v1_fair", "mobilenet_v1_inception_default")
    ]
    cfg = plan.StudyConfig(study_dir=str(tmp_path), public_models=("efficientnet_lite0",))
    assert not [s for s in plan.plan_study(cfg) if "per_class" in _flags(s)]


def test_unknown_subset_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--subset_models: 'resnet_50' is not a source model"):
        _plan(tmp_path, subset_models=("resnet_50",))


def test_a_public_model_from_a_published_checkpoint(tmp_path):
    """`--public_models=NAME=PATH`: exported and fine-tuned from the checkpoint, not 'imagenet';
    a path that does not exist fails when the study plans."""
    (tmp_path / "inception_v1.ckpt.index").write_bytes(b"")
    prefix = str(tmp_path / "inception_v1.ckpt")
    cfg = plan.StudyConfig(
        study_dir=str(tmp_path / "study"),
        public_models=(f"inception_v1={prefix}",),
        finetune_models=("inception_v1",),
    )
    steps = {s.name: s for s in plan.plan_study(cfg)}
    for name in ("export-inception_v1", "finetune-inception_v1-sklearn_digits"):
        flags = _flags(steps[name])
        assert flags["model"] == "inception_v1" and flags["checkpoint"] == prefix
        assert "weights" not in flags
    assert "--model=inception_v1:inception_v1:public" in steps["model-table"].argv
    with pytest.raises(
        ValueError,
        match=r"--public_models=inception_v1=/nowhere.ckpt: "
        r"/nowhere.ckpt does not exist",
    ):
        plan.plan_study(
            plan.StudyConfig(study_dir=str(tmp_path), public_models=("inception_v1=/nowhere.ckpt",))
        )


def test_external_sources_and_own_datasets_plan_without_export(tmp_path):
    """An external SavedModel and a .keras file: features read straight from them (no export),
    logistic regression with settings "external", the .keras one fine-tuned; the user's image
    folder is a target whose records step passes --image_folder."""
    hub = tmp_path / "hub"
    hub.mkdir()
    (tmp_path / "net.keras").write_bytes(b"")
    photos = tmp_path / "photos"
    (photos / "cat").mkdir(parents=True)
    cfg = plan.StudyConfig(
        study_dir=str(tmp_path / "study"),
        target_datasets=(),
        external_models=(
            f"hub_net={hub},signature=serving_default,output_key=feature_vector,"
            "input_size=32,scaling=unit,top1=0.5,top1_source=card",
            f"keras_net={tmp_path / 'net.keras'},feature_layer=pool,input_size=32,"
            "scaling=inception",
        ),
        own_datasets=(f"my_photos={photos},metric=mean_per_class",),
        finetune_models=("keras_net",),
    )
    steps = {s.name: s for s in plan.plan_study(cfg)}
    assert not [n for n in steps if n.startswith("export-")]
    records = _flags(steps["records-my_photos"])
    assert records["image_folder"] == str(photos) and records["metric"] == "mean_per_class"
    hub_features = _flags(steps["features-hub_net-my_photos"])
    assert (
        hub_features["saved_model"] == str(hub) and hub_features["output_key"] == "feature_vector"
    )
    assert hub_features["signature"] == "serving_default" and hub_features["scaling"] == "unit"
    keras_features = _flags(steps["features-keras_net-my_photos"])
    assert keras_features["keras_model"] == str(tmp_path / "net.keras")
    assert keras_features["feature_layer"] == "pool"
    assert _flags(steps["logreg-hub_net-my_photos"])["settings"] == "external"
    tune = _flags(steps["finetune-keras_net-my_photos"])
    assert tune["init_keras_model"] == str(tmp_path / "net.keras") and tune["input_size"] == "32"
    assert tune["scaling"] == "inception" and tune["model_label"] == "keras_net"
    table = steps["model-table"].argv
    assert "--model=hub_net::external:0.5" in table and "--top1_source=hub_net=card" in table
    assert "--model=keras_net::external" in table
    assert {"logreg-hub_net-my_photos", "finetune-keras_net-my_photos"} <= set(
        steps["analyze"].deps
    )
    with pytest.raises(ValueError, match="hub_net is an external SavedModel, whose network"):
        plan.plan_study(
            plan.StudyConfig(
                study_dir=str(tmp_path),
                target_datasets=(),
                external_models=cfg.external_models,
                finetune_models=("hub_net",),
            )
        )


def test_predictor_steps_follow_each_features_step(tmp_path):
    """`--predictors`: one transfer-predictors step per source x target after its features step;
    registry models pass their SavedModel (LEEP / NCE need its logits); the report waits for them."""
    steps = _plan(tmp_path, predictors=True, predictors_flags=("--blas_threads=1",))
    found = {n: s for n, s in steps.items() if n.startswith("predictors-")}
    labels = ("efficientnet_lite0", "mobilenet_v1_fair", "mobilenet_v1_inception_default")
    assert set(found) == {
        f"predictors-{m}-{d}" for m in labels for d in ("sklearn_digits", "skimage_textures")
    }
    step = found["predictors-mobilenet_v1_fair-skimage_textures"]
    assert step.deps == ("features-mobilenet_v1_fair-skimage_textures",)
    flags = _flags(step)
    assert flags["saved_model"] == str(tmp_path / "saved_models" / "mobilenet_v1_fair")
    assert flags["settings"] == "fair" and flags["blas_threads"] == "1"
    assert set(found) <= set(steps["analyze"].deps)
    assert not [n for n in _plan(tmp_path) if n.startswith("predictors-")]
