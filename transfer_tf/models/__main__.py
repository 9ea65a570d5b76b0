"""`python -m transfer_tf.models [name ...]`: the model table (builds each model once, with a
1000-way classifier and the paper's fair settings)."""

from __future__ import annotations

import sys

import keras

from transfer_tf.models import build_model, count_params, get_spec, list_models


def model_table(names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        spec = get_spec(name)
        model = build_model(name, 1000)
        rows.append(
            {
                "name": name,
                "params": count_params(model, spec.params_counted),
                "published_params": spec.published_params,
                "feature_dim": model.output["features"].shape[-1],
                "input_size": spec.input_size,
                "imagenet_top1": spec.imagenet_top1,
            }
        )
        del model
        keras.backend.clear_session()
    return rows


def main(argv: list[str]) -> int:
    names = argv or list_models()
    unknown = [n for n in names if n not in list_models()]
    if unknown:
        print(f"unknown model(s) {unknown}; choose from {list_models()}", file=sys.stderr)
        return 2
    header = (
        f"{'name':<22}{'params':>14}{'published':>14}{'feature dim':>13}{'input':>7}{'top-1':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in model_table(names):
        print(
            f"{row['name']:<22}{row['params']:>14,d}{row['published_params']:>14,d}"
            f"{row['feature_dim']:>13d}{row['input_size']:>7d}{100 * row['imagenet_top1']:>7.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
