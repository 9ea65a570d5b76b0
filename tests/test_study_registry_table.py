"""The study's TensorFlow-free copy of what it needs of the model registry."""

import json
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


def test_a_finished_studys_headline_prints_without_pandas_or_matplotlib():
    # A resume with nothing left to run only prints headline.json: that must not import the
    # report's stack (pandas, matplotlib: ~4 s on this machine).
    headline = {
        "report_html": "r/report.html",
        "report_md": "r/report.md",
        "correlations": {"logreg/fair": {"r": 0.5, "r_ci": [-1.0, 1.0], "p": 0.25, "n_models": 3}},
        "win_counts": {"finetune_beats_logreg": {"wins": 2, "total": 3}},
        "findings": [{"verdict": "inconclusive", "finding": "Fine-tuning beats scratch"}],
        "skipped": {"fig4": "no features"},
    }
    code = (
        "import json, sys\n"
        "from transfer_tf.bin import study\n"
        "from transfer_tf.analysis.headline import headline_lines\n"
        f"print(json.dumps(headline_lines({headline!r})))\n"
        "print(sorted(m for m in ('pandas', 'matplotlib', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines, heavy = out.stdout.strip().split("\n")
    assert json.loads(lines) == [
        "report: r/report.html",
        "        r/report.md",
        "r[logreg/fair] = 0.500 (95% CI -1.000 to 1.000, p = 0.25, 3 models)",
        "finetune_beats_logreg: 2 of 3",
        "[inconclusive] Fine-tuning beats scratch",
        "skipped fig4: no features",
    ]
    assert heavy == "[]"
