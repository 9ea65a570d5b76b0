"""Published ImageNet checkpoints into zoo models: the two file formats, and one generic matcher.

Two formats are read, recognised by content (not by file name):
- a TensorFlow checkpoint prefix (`model.ckpt`, with `model.ckpt.index` and `model.ckpt.data-*`
  beside it), the format of the TF-slim model zoo's tarballs; tensors are named by variable scope
  (`InceptionV3/Mixed_5b/Branch_0/Conv2d_0a_1x1/weights`);
- a Keras Applications weights file (legacy HDF5, what `keras.applications` downloads): one group
  per layer, listed in model order in the root attribute `layer_names`; tensors are named here
  `<layer>/<weight>` (`conv1_bn/gamma`; Keras 2's `:0` suffix and the repeated layer prefix are
  dropped).

Each family's file declares, per format, a `CheckpointLayout`: a function naming the checkpoint
tensor of every model weight, the scaling and class count the checkpoint was trained with, and
the scope of its auxiliary head. `load_checkpoint` applies a layout: every model weight is set
exactly once and every checkpoint tensor is used exactly once; anything else is a
`CheckpointError` listing the first unmatched names on both sides. Only bookkeeping tensors
(`global_step`, optimiser slots, see `BOOKKEEPING`) are passed over, and are counted.

Conventions handled by the matcher (not by each family):
- TF-slim's 1001-way heads (class 0 = background) give 1000-way logits: the first column of the
  logits kernel and the first bias are dropped.
- Classifiers stored as convolutions (slim's 1x1-conv logits, VGG's fc6 / fc7 / fc8, Keras
  MobileNet's `conv_preds`) are reshaped into Dense kernels of the same element count.
- A model whose classifier width differs from the checkpoint's (fine-tuning on a new dataset)
  gets the trunk only; the checkpoint's head tensors are then passed over, and counted.
- The auxiliary head loads where the model has one; a checkpoint's auxiliary head is passed over
  when the model has none, and a model with one needs a checkpoint with one.

Reading never runs code: a TF checkpoint is a table of tensors, and only datasets are read from
an HDF5 file (a full-model `.h5`'s `model_config` is ignored).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable

import keras
import numpy as np

FORMATS = ("tf_checkpoint", "keras_h5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5 allows a user block before the superblock; the signature then sits at one of these offsets.
_HDF5_OFFSETS = (0, 512, 1024, 2048, 4096)

# Checkpoint tensors that are not weights of the network.
BOOKKEEPING = re.compile(
    r"(^|/)global_step$|/(Momentum|RMSProp(_1)?|Adam(_1)?|ExponentialMovingAverage)$"
)
LOGITS = "logits"
AUX_LOGITS = "aux_logits"
_SHOW = 5  # unmatched names listed per side in an error


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the model; the message names the
    file and what did not match."""


@dataclasses.dataclass
class Checkpoint:
    """The tensors of one checkpoint file, read lazily.

    path: the prefix (TF) or file (HDF5) as given; format: one of `FORMATS`;
    shapes: tensor name -> shape, in the file's order.
    """

    path: str
    format: str
    shapes: dict[str, tuple[int, ...]]
    _read: Callable[[str], np.ndarray]

    def read(self, name: str) -> np.ndarray:
        try:
            return np.asarray(self._read(name))
        except Exception as error:  # a truncated / damaged data file
            raise CheckpointError(
                f"checkpoint {self.path}: cannot read tensor {name!r} "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                "the file is damaged or truncated: download it again"
            ) from None

    def names(self) -> list[str]:
        return list(self.shapes)

    def has(self, pattern: str) -> bool:
        """True when some tensor name matches the regular expression `pattern`."""
        return any(re.search(pattern, n) for n in self.shapes)


def _is_hdf5(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            for offset in _HDF5_OFFSETS:
                f.seek(offset)
                if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return True
    except OSError:
        return False
    return False


def _tf_prefix(path: str) -> str | None:
    """The TF checkpoint prefix that `path` names (a prefix, its `.index` file, or a folder with
    a `checkpoint` state file), else None."""
    if os.path.isfile(path + ".index"):
        return path
    if path.endswith(".index") and os.path.isfile(path):
        return path[: -len(".index")]
    if os.path.isdir(path):
        import tensorflow as tf

        return tf.train.latest_checkpoint(path)
    return None


def read_checkpoint(path: str) -> Checkpoint:
    """Opens a TF checkpoint prefix or a Keras HDF5 weights file, recognised by content."""
    path = os.fspath(path)
    if os.path.isfile(path) and _is_hdf5(path):
        return _read_hdf5(path)
    prefix = _tf_prefix(path)
    if prefix is not None:
        return _read_tf(prefix)
    if os.path.isfile(path):
        raise CheckpointError(
            f"checkpoint {path}: neither an HDF5 file (Keras Applications weights) nor a "
            "TensorFlow checkpoint prefix with a .index file beside it; pass the prefix "
            "(e.g. .../inception_v3.ckpt) or the .h5 file"
        )
    data = [f for f in _siblings(path) if ".data-" in f]
    if data:
        raise CheckpointError(
            f"checkpoint {path}: {os.path.basename(data[0])} is there but {path}.index is "
            "missing; a TF-slim checkpoint needs both files (unpack the whole tarball)"
        )
    raise CheckpointError(
        f"checkpoint {path}: no such file; pass a TF checkpoint prefix (model.ckpt, with "
        "model.ckpt.index beside it) or a Keras .h5 weights file"
    )


def _siblings(path: str) -> list[str]:
    folder, base = os.path.split(path)
    try:
        return [f for f in os.listdir(folder or ".") if f.startswith(base + ".")]
    except OSError:
        return []


def _read_tf(prefix: str) -> Checkpoint:
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {prefix}: cannot open it as a TensorFlow checkpoint "
            f"({type(error).__name__}); the .index or .data file is damaged or truncated"
        ) from None
    return Checkpoint(
        path=prefix,
        format="tf_checkpoint",
        shapes={n: tuple(shapes[n]) for n in sorted(shapes)},
        _read=reader.get_tensor,
    )


def h5_weight_name(layer: str, weight: str) -> str:
    """`<layer>/<weight>` for a stored weight name (`conv1/kernel:0`, `kernel:0` or `kernel`)."""
    return f"{layer}/{weight.split(':')[0].rsplit('/', 1)[-1]}"


def _read_hdf5(path: str) -> Checkpoint:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            if "layer_names" not in root.attrs:
                raise CheckpointError(
                    f"checkpoint {path}: an HDF5 file without the 'layer_names' attribute of a "
                    "Keras weights file (Keras 3 '.weights.h5' files are not the published "
                    "format; use the legacy .h5 that keras.applications downloads)"
                )
            shapes, where = {}, {}
            for raw in root.attrs["layer_names"]:
                layer = raw.decode() if isinstance(raw, bytes) else str(raw)
                group = root[layer]
                for raw_weight in group.attrs.get("weight_names", []):
                    weight = raw_weight.decode() if isinstance(raw_weight, bytes) else raw_weight
                    name = h5_weight_name(layer, weight)
                    shapes[name] = tuple(group[weight].shape)
                    where[name] = (layer, weight)
    except CheckpointError:
        raise
    except Exception as error:
        raise CheckpointError(
            f"checkpoint {path}: cannot read it as an HDF5 weights file "
            f"({type(error).__name__}); the file is damaged or truncated: download it again"
        ) from None

    def read(name: str) -> np.ndarray:
        layer, weight = where[name]
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            return root[layer][weight][()]

    return Checkpoint(path=path, format="keras_h5", shapes=shapes, _read=read)


# ---------------------------------------------------------------------------------------------
# What a family declares.

NameMap = Callable[[keras.Model, Checkpoint], dict[str, str]]


@dataclasses.dataclass(frozen=True)
class CheckpointLayout:
    """How one family's published checkpoints of one format name the model's weights.

    Attributes:
      format: one of `FORMATS`.
      names: (model, checkpoint) -> {model weight path: checkpoint tensor name} for every weight
        of the model (classifier and auxiliary head included); `load_checkpoint` checks it.
      preprocessing: the scaling the checkpoint was trained with (a `PREPROCESSING` key).
      head_bias: the checkpoint tensor of the classifier's bias (its width is the class count;
        1001 in TF-slim's Inception / MobileNet / NASNet checkpoints, class 0 = background).
      aux_scope: regular expression matching the checkpoint's auxiliary-head tensors.
      published: where the variable names come from (a file of TF-slim or Keras Applications).
    """

    format: str
    names: NameMap
    preprocessing: str
    head_bias: str
    aux_scope: str | None = None
    published: str = ""

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"CheckpointLayout: unknown format {self.format!r}")


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What `load_checkpoint` did: counts of weights set and tensors passed over."""

    checkpoint: str
    format: str
    assigned: int
    head_loaded: bool
    skipped_head: tuple[str, ...]
    skipped_aux: tuple[str, ...]
    bookkeeping: tuple[str, ...]


def layer_of(path: str) -> str:
    """The layer name of a Keras 3 weight path (`Mixed_5b_b0_1x1_conv/kernel` -> the layer; a
    name scope before it, as in Keras' NASNet, is dropped: layer names cannot contain "/")."""
    return path.rsplit("/", 2)[-2]


def _convert(value: np.ndarray, shape: tuple[int, ...], background: bool) -> np.ndarray | None:
    """`value` in the model weight's `shape`: the background class dropped, a convolution's
    kernel reshaped into a Dense one; None when it cannot fit."""
    if background:
        value = value[..., 1:]
    if value.shape == shape:
        return value
    if len(shape) == 2 and value.ndim == 4 and value.size == int(np.prod(shape)):
        return value.reshape(shape)
    return None


def load_checkpoint(
    model: keras.Model, checkpoint: Checkpoint, layout: CheckpointLayout
) -> LoadReport:
    """Sets every weight of `model` from `checkpoint` through `layout`; see the module doc."""
    where = f"checkpoint {checkpoint.path} ({checkpoint.format})"
    names = layout.names(model, checkpoint)
    layer_names = {layer.name for layer in model.layers}
    head_layers = {n for n in (LOGITS, AUX_LOGITS) if n in layer_names}
    width = int(model.get_layer(LOGITS).weights[-1].shape[-1])
    stored = checkpoint.shapes.get(layout.head_bias, (None,))[-1]
    background = checkpoint.format == "tf_checkpoint" and stored == width + 1
    head_loaded = stored in (width, width + 1)

    plan: list[tuple[keras.Variable, str]] = []
    missing, skipped_head = [], []
    for weight in model.weights:
        name = names.get(weight.path)
        in_head = layer_of(weight.path) in head_layers
        if in_head and not head_loaded:
            if name in checkpoint.shapes:
                skipped_head.append(name)
            continue
        if name is None or name not in checkpoint.shapes:
            missing.append(f"{weight.path} (-> {name})" if name else weight.path)
            continue
        plan.append((weight, name))

    used = [n for _, n in plan]
    duplicated = sorted({n for n in used if used.count(n) > 1})
    if duplicated:
        raise CheckpointError(
            f"{where}: the layout maps several model weights to {duplicated[:_SHOW]}; this is a "
            "bug in the family's name map"
        )
    has_aux = AUX_LOGITS in layer_names
    aux = re.compile(layout.aux_scope) if layout.aux_scope else None
    unused, skipped_aux, bookkeeping = [], [], []
    taken = set(used) | set(skipped_head)
    for name in checkpoint.shapes:
        if name in taken:
            continue
        if BOOKKEEPING.search(name):
            bookkeeping.append(name)
        elif aux is not None and aux.search(name) and not has_aux:
            skipped_aux.append(name)
        elif not head_loaded and _is_head_tensor(name, names, model):
            skipped_head.append(name)
        else:
            unused.append(name)
    if missing or unused:
        raise CheckpointError(
            f"{where} does not fit {model.name}: {len(missing)} model weights unmatched "
            f"{missing[:_SHOW]}, {len(unused)} checkpoint tensors unused {unused[:_SHOW]}; "
            "is it a checkpoint of this architecture (and, for BN γ, of these settings)?"
        )

    values = []
    for weight, name in plan:
        shape = tuple(weight.shape)
        in_head = layer_of(weight.path) in head_layers
        value = _convert(checkpoint.read(name), shape, background and in_head)
        if value is None:
            raise CheckpointError(
                f"{where}: tensor {name!r} has shape {checkpoint.shapes[name]} but "
                f"{model.name}'s {weight.path} has {shape}; is it a checkpoint of this "
                "architecture at this input size?"
            )
        values.append(value)
    for (weight, _), value in zip(plan, values, strict=True):
        weight.assign(value.astype(weight.dtype))
    return LoadReport(
        checkpoint=checkpoint.path,
        format=checkpoint.format,
        assigned=len(plan),
        head_loaded=head_loaded,
        skipped_head=tuple(skipped_head),
        skipped_aux=tuple(skipped_aux),
        bookkeeping=tuple(bookkeeping),
    )


def _is_head_tensor(name: str, names: dict[str, str], model: keras.Model) -> bool:
    heads = [
        model.get_layer(n) for n in (LOGITS, AUX_LOGITS) if n in {x.name for x in model.layers}
    ]
    return name in {names.get(w.path) for layer in heads for w in layer.weights}


# ---------------------------------------------------------------------------------------------
# Helpers for the families' name maps.


# Keras weight kind -> TF-slim variable name (BatchNorm variables live in `<scope>/BatchNorm/`).
SLIM_VARIABLES = {
    "kernel": "weights",
    "bias": "biases",
    "depthwise_kernel": "depthwise_weights",
    "pointwise_kernel": "pointwise_weights",
    "gamma": "BatchNorm/gamma",
    "beta": "BatchNorm/beta",
    "moving_mean": "BatchNorm/moving_mean",
    "moving_variance": "BatchNorm/moving_variance",
}


def slim_variable(scope: str, path: str) -> str:
    """TF-slim's name for the Keras weight `path` of a layer that slim builds under `scope`
    (a `conv2d` / `separable_conv2d` / `fully_connected` with its normaliser)."""
    return f"{scope}/{SLIM_VARIABLES[weight_kind(path)]}"


def slim_names(model: keras.Model, scope_of: Callable[[str], str | None]) -> dict[str, str]:
    """{weight path: slim name} for every weight whose layer `scope_of` maps to a slim scope; a
    conv layer and the BN after it (`X_conv`, `X_bn`) usually map to the same scope. A
    DepthwiseConv2D's kernel (Keras 3 calls it `kernel`) is slim's `depthwise_weights`."""
    depthwise = set(_depthwise_kernels(model))
    out = {}
    for weight in model.weights:
        scope = scope_of(layer_of(weight.path))
        if scope is not None:
            name = slim_variable(scope, weight.path)
            out[weight.path] = f"{scope}/depthwise_weights" if weight.path in depthwise else name
    return out


def _depthwise_kernels(model: keras.Model) -> list[str]:
    return [
        weight.path
        for layer in model.layers
        if isinstance(layer, keras.layers.DepthwiseConv2D)
        for weight in layer.weights
        if weight_kind(weight.path) == "kernel"
    ]


def _keras2_depthwise(model: keras.Model, checkpoint: Checkpoint, names: dict[str, str]):
    """Keras 2 (every published Keras Applications file) names a DepthwiseConv2D's kernel
    `depthwise_kernel`, Keras 3 `kernel`: use the one `checkpoint` has."""
    for path in _depthwise_kernels(model):
        keras2 = f"{layer_of(names[path])}/depthwise_kernel"
        if keras2 in checkpoint.shapes:
            names[path] = keras2
    return names


def creation_order(model: keras.Model, kind: str) -> list[str]:
    """Names of the automatically named `kind` layers (conv2d / batch_normalization) in the order
    Keras created them (the counter in the name; `model.layers` is in graph order instead)."""
    found = []
    for layer in model.layers:
        match = _AUTO_NAME.match(layer.name)
        if match and match.group("base") == kind:
            found.append((int(match.group("number") or 0), layer.name))
    return [name for _, name in sorted(found)]


def weight_kind(path: str) -> str:
    """The last component of a Keras 3 weight path: kernel, bias, gamma, depthwise_kernel, ..."""
    return path.rsplit("/", 1)[-1]


def h5_same_names(
    model: keras.Model, checkpoint: Checkpoint, rename: dict[str, str] | None = None
) -> dict[str, str]:
    """The Keras Applications convention: a layer keeps its name (`rename` maps the few layers
    that differ, e.g. our `logits` to Keras' `predictions`)."""
    rename = rename or {}
    out = {}
    for weight in model.weights:
        layer = layer_of(weight.path)
        out[weight.path] = f"{rename.get(layer, layer)}/{weight_kind(weight.path)}"
    return _keras2_depthwise(model, checkpoint, out)


# Keras' automatic layer names: `conv2d`, `conv2d_17`, ...
_AUTO_NAME = re.compile(
    r"^(?P<base>conv2d|batch_normalization|dense|depthwise_conv2d|separable_conv2d)"
    r"(?:_(?P<number>\d+))?$"
)


def _auto_base(name: str) -> str | None:
    match = _AUTO_NAME.match(name)
    return match.group("base") if match else None


def h5_in_order(
    model: keras.Model, checkpoint: Checkpoint, rename: dict[str, str] | None = None
) -> dict[str, str]:
    """For Keras Applications built with Keras' automatic layer names (`conv2d_17`,
    `batch_normalization_17`), which depend on what the saving process built before: layers with
    automatic names are paired in order within their kind (what Keras' own legacy loader does),
    the others by name (`rename` maps the few that differ)."""
    rename = rename or {}
    queues: dict[str, list[str]] = {}
    for name in checkpoint.shapes:
        layer = layer_of(name)
        base = _auto_base(layer)
        if base is not None and layer not in queues.setdefault(base, []):
            queues[base].append(layer)
    out = {}
    for layer in model.layers:
        if not layer.weights:
            continue
        target = rename.get(layer.name, layer.name)
        base = _auto_base(target)
        if base is not None:
            queue = queues.get(base, [])
            target = queue.pop(0) if queue else f"<no more {base} layers in the file>"
        for weight in layer.weights:
            out[weight.path] = f"{target}/{weight_kind(weight.path)}"
    return _keras2_depthwise(model, checkpoint, out)


def keras_h5_layout(
    published: str,
    *,
    in_order: bool = False,
    head: str = "predictions",
    preprocessing: str = "inception",
) -> CheckpointLayout:
    """The layout of a Keras Applications weights file: layers keep their names (`in_order`:
    Keras' automatic names paired in creation order), our `logits` is Keras' `head` layer."""
    pair = h5_in_order if in_order else h5_same_names
    return CheckpointLayout(
        format="keras_h5",
        names=lambda model, checkpoint: pair(model, checkpoint, {LOGITS: head}),
        preprocessing=preprocessing,
        head_bias=f"{head}/bias",
        published=published,
    )
