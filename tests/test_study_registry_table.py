"""The study's TensorFlow-free copy of what it needs of the model registry."""

import subprocess
import sys

import pytest

from transfer_tf.study.registry_table import (
    AUX_HEAD,
    PUBLISHED_TOP1,
    has_aux_head,
    model_names,
    published_top1,
)


def test_the_table_equals_the_registry():
    from transfer_tf.models import get_spec, list_models

    assert model_names() == list_models()
    registry = {
        name: (get_spec(name).imagenet_top1, get_spec(name).top1_source) for name in list_models()
    }
    assert PUBLISHED_TOP1 == registry
    assert AUX_HEAD == {name for name in list_models() if get_spec(name).has_aux_head}


def test_unknown_names_are_key_errors_naming_the_known_ones():
    with pytest.raises(KeyError, match="unknown model 'nope'; registry models: inception_v1"):
        published_top1("nope")
    with pytest.raises(KeyError, match="unknown model 'nope'"):
        has_aux_head("nope")


def test_planning_and_the_model_table_step_import_no_tensorflow():
    code = (
        "import sys\n"
        "from absl import flags\n"
        "import transfer_tf.bin.study as study\n"
        "from transfer_tf.study import model_table, plan\n"
        "flags.FLAGS(['x', '--flagfile=flags/demo/quick.cfg', '--study_dir=/tmp/no-such-study',\n"
        "             '--pretrain_models=inception_v3', '--pretrain_settings=inception_default',\n"
        "             '--finetune_models=', '--subset_models=', '--scratch_models='])\n"
        "steps = plan.plan_study(study.config_from_flags())\n"
        "pretrain = [s for s in steps if s.name.startswith('pretrain-')][0]\n"
        "model_table.model_row('/nonexistent', 'lite', 'efficientnet_lite0', 'public')\n"
        "print('--aux_head' in pretrain.argv, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    assert published_top1("efficientnet_lite0")[0] == 0.751
