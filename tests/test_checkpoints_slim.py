"""The families with a TF-slim reference net: each zoo model loads the checkpoint that the
`tf_slim` package's own network saves (random weights, randomised BN statistics, slim's variable
names, a TF1 Saver: the format of the TF-slim model zoo's tarballs) and, exported as a SavedModel
and fed uint8 images at its native size, gives slim's logits. Inception v3 is also checked against
Keras Applications' `InceptionV3` and its `.h5` weights file, and with its auxiliary head.

Each reference runs in its own process (tests/reference/), once per net, shared by the tests
through the module's `references`, which starts them in the background as soon as the module's
first test needs one.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from reference.equivalence import (
    SCALINGS,
    assert_logits_close,
    exported_logits,
    run_reference,
    uint8_images,
)

from transfer_tf.models import TrainingSettings, build_model
from transfer_tf.models.checkpoints import CheckpointError

# registry name -> (reference script, its --net, checkpoint scaling, native size, reference args)
REFERENCES = {
    "inception_v1": ("slim_reference.py", "inception_v1", "inception", 224, ()),
    "bn_inception": ("slim_reference.py", "inception_v2", "inception", 224, ()),
    "inception_v3": ("slim_reference.py", "inception_v3", "inception", 299, ()),
    "resnet_50": ("slim_reference.py", "resnet_v1_50", "vgg", 224, ("--num_classes=1000",)),
    "resnet_101": ("slim_reference.py", "resnet_v1_101", "vgg", 224, ("--num_classes=1000",)),
    "resnet_152": ("slim_reference.py", "resnet_v1_152", "vgg", 224, ("--num_classes=1000",)),
    "vgg_16": ("slim_reference.py", "vgg_16", "vgg", 224, ("--num_classes=1000",)),
    "inception_v3_keras": ("keras_reference.py", "InceptionV3", "inception", 299, ()),
}


class References:
    """Each reference once per module, run in the background in the order the tests need them
    (a reference process and the test process's export then share the CPUs): `get(key)` ->
    (out_dir, uint8 images, reference arrays)."""

    def __init__(self, root):
        self.root, self.pending = root, {}
        self.pool = ThreadPoolExecutor(max_workers=1)

    def start(self, key):
        if key not in self.pending:
            self.pending[key] = self.pool.submit(self._run, key)

    def _run(self, key):
        script, net, scaling, size, args = REFERENCES[key]
        images = uint8_images(size)
        out_dir = str(self.root / key)
        scaled = SCALINGS[scaling](images.astype(np.float32))
        return out_dir, images, run_reference(script, out_dir, scaled, f"--net={net}", *args)

    def get(self, key):
        self.start(key)
        return self.pending[key].result()


def reads(key):
    """Marks a test as reading reference `key` (parametrized tests read their `name`)."""

    def mark(test):
        test.reference = key
        return test

    return mark


@pytest.fixture(scope="module")
def references(request, tmp_path_factory):
    started = References(tmp_path_factory.mktemp("references"))
    for item in request.session.items:
        if item.module is request.module:
            params = getattr(item, "callspec", None)
            key = params.params.get("name") if params else getattr(item.function, "reference", None)
            if key is not None:
                started.start(key)
    yield started
    started.pool.shutdown(cancel_futures=True)


def _without_background(logits):
    """TF-slim's Inception heads are 1001-way, class 0 = background; our models are 1000-way."""
    return logits[:, 1:] if logits.shape[-1] == 1001 else logits


@pytest.mark.parametrize(
    "name",
    [
        "inception_v1",
        "bn_inception",
        "inception_v3",
        "resnet_50",
        "resnet_101",
        "resnet_152",
        "vgg_16",
    ],
)
def test_exported_model_from_a_slim_checkpoint_gives_slim_logits(name, references, tmp_path):
    out_dir, images, reference = references.get(name)
    ours = exported_logits(name, f"{out_dir}/model.ckpt", str(tmp_path / "export"), images)
    expected = _without_background(reference["logits"])
    assert expected.shape == (len(images), 1000)
    difference = assert_logits_close(ours["logits"], expected, name)
    print(f"{name}: max |logit difference| / max |logit| = {difference:.1e}")


@reads("inception_v3")
def test_inception_v3_auxiliary_head_gives_slim_aux_logits(references):
    out_dir, images, reference = references.get("inception_v3")
    model = build_model(
        "inception_v3",
        1000,
        TrainingSettings(bn_scale=False, aux_head=True),
        weights=f"{out_dir}/model.ckpt",
    )
    outputs = model(SCALINGS["inception"](images.astype(np.float32)), training=False)
    for key in ("logits", "aux_logits"):
        difference = assert_logits_close(
            outputs[key].numpy(), _without_background(reference[key]), f"inception_v3 {key}"
        )
        print(f"inception_v3 {key}: {difference:.1e}")
    # The aux head is a different function of the image than the main head.
    assert not np.allclose(outputs["aux_logits"].numpy(), outputs["logits"].numpy(), atol=1e-3)


@reads("inception_v3_keras")
def test_inception_v3_from_the_keras_applications_file_gives_keras_logits(references, tmp_path):
    out_dir, images, reference = references.get("inception_v3_keras")
    ours = exported_logits(
        "inception_v3", f"{out_dir}/weights.h5", str(tmp_path / "export"), images
    )
    difference = assert_logits_close(ours["logits"], reference["logits"], "inception_v3 (Keras)")
    print(f"inception_v3 (Keras .h5): {difference:.1e}")


@reads("resnet_50")
def test_resnet_50_checkpoint_into_resnet_101_is_an_error_naming_file_and_names(references):
    out_dir, _, _ = references.get("resnet_50")
    prefix = f"{out_dir}/model.ckpt"
    with pytest.raises(CheckpointError) as error:
        build_model("resnet_101", 1000, weights=prefix)
    message = str(error.value)
    assert prefix in message and "does not fit resnet_101" in message
    assert "resnet_v1_101/" in message  # a model weight with its expected slim name
    assert "resnet_v1_50/" in message  # a checkpoint tensor left unused
