"""Sources from outside the registry as one study entry: what the planner and the model table need.

    LABEL=PATH[,option=value...]

PATH is a SavedModel folder or a `.keras` file. Options: `signature`, `output_key` (SavedModel),
`feature_layer` (Keras file, required), `input_size`, `scaling` (what the model does not record;
see transfer-extract-features), `top1` (its source accuracy, a fraction, for the model table),
`top1_source` (where that number comes from; no commas). For example

    hub_net=/models/hub,signature=serving_default,output_key=feature_vector,input_size=224,scaling=unit,top1=0.803
    my_net=/models/my_net.keras,feature_layer=avg_pool,scaling=none,top1=0.712

`ExternalSource.extract_flags()` are the transfer-extract-features flags that read it (no export
step); `model_table_entry()` / `given()` the model table's row (settings "external"). No
TensorFlow here: the planner imports it.
"""

from __future__ import annotations

import dataclasses
import os

from transfer_tf.study.model_table import given_top1

SETTINGS = "external"
_OPTIONS = (
    "signature",
    "output_key",
    "feature_layer",
    "input_size",
    "scaling",
    "top1",
    "top1_source",
)


@dataclasses.dataclass(frozen=True)
class ExternalSource:
    label: str
    path: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def is_keras(self) -> bool:
        return self.path.endswith(".keras")

    def option(self, name: str) -> str | None:
        return dict(self.options).get(name)

    def extract_flags(self) -> list[str]:
        """Flags of transfer-extract-features (plus --records_dir, --dataset, --features_dir)."""
        source = "--keras_model" if self.is_keras else "--saved_model"
        flags = [f"{source}={self.path}", f"--model_label={self.label}"]
        for name in ("signature", "output_key", "feature_layer", "input_size", "scaling"):
            if self.option(name) is not None:
                flags.append(f"--{name}={self.option(name)}")
        return flags

    def model_table_entry(self) -> str:
        """`--model=` of `python -m transfer_tf.study.model_table` (no architecture)."""
        top1 = self.option("top1")
        return f"{self.label}::{SETTINGS}" + (f":{top1}" if top1 is not None else "")

    def given(self) -> dict | None:
        """The model table's user-given source accuracy (`write_model_table(given=...)`)."""
        if self.option("top1") is None:
            return None
        return {"top1": self.option("top1"), "top1_source": self.option("top1_source")}


def parse_external_source(entry: str) -> ExternalSource:
    """An `--external_models` entry; errors name the entry and what is wrong."""
    head, *rest = entry.split(",")
    label, sep, path = head.partition("=")
    if not sep or not label or not path:
        raise ValueError(f"--external_models={entry!r}: expected LABEL=PATH[,option=value...]")
    options = []
    for part in rest:
        name, sep, value = part.partition("=")
        if not sep or name not in _OPTIONS:
            raise ValueError(
                f"--external_models={entry!r}: {part!r} is not option=value with option one of "
                f"{', '.join(_OPTIONS)}"
            )
        options.append((name, value))
    source = ExternalSource(label, os.path.abspath(path), tuple(options))
    if not os.path.exists(source.path):
        raise ValueError(f"--external_models={entry!r}: {source.path} does not exist")
    if source.is_keras and source.option("feature_layer") is None:
        raise ValueError(f"--external_models={entry!r}: a .keras file needs feature_layer=NAME")
    if not source.is_keras and source.option("feature_layer") is not None:
        raise ValueError(f"--external_models={entry!r}: feature_layer is for .keras files")
    if source.option("top1") is not None:
        given_top1(source.option("top1"), label)
    return source
