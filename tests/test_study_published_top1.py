"""The study's TensorFlow-free copy of the registry's published top-1 figures."""

import subprocess
import sys

from transfer_tf.study.published_top1 import PUBLISHED_TOP1, published_top1


def test_the_table_equals_the_registry():
    from transfer_tf.models import get_spec, list_models

    registry = {
        name: (get_spec(name).imagenet_top1, get_spec(name).top1_source) for name in list_models()
    }
    assert PUBLISHED_TOP1 == registry


def test_the_model_table_step_imports_no_tensorflow():
    code = (
        "import sys; from transfer_tf.study import model_table; "
        "model_table.model_row('/nonexistent', 'lite', 'efficientnet_lite0', 'public'); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert published_top1("efficientnet_lite0")[0] == 0.751
