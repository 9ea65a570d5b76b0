"""The `predictors` protocol (issue 19): cheap transfer predictors on one model's extracted
features of one dataset, as a resumable sweep (`transfer_tf.protocols.sweep.run_cells`).

One result cell per (model, dataset, predictor) — per seed for the few-shot probes — in the
result schema of docs/DESIGN.md, under `<results_dir>/predictors/`, each with its wall time:

| predictor | `metric` | `val_metric` | `test_metric` |
|---|---|---|---|
| `knn` | the dataset's | at the k chosen on val (train as reference) | test, train+val as reference |
| `fewshot_<S>` | the dataset's | at the λ chosen on val | test (one cell per seed) |
| `logme`, `hscore`, `gbc` | the predictor's name | null | the score on train+val features |
| `leep`, `nce` | the predictor's name | null | the score on train+val source predictions |

`hparams["predictor"]` names the predictor; the other hparams are its settings. kNN and the
few-shot probes write their test predictions and validation curve to `<cell_id>.predictions.npz`.
Multi-label datasets get kNN and LogME only (the others are defined for one label per example);
a few-shot probe with more shots than the smallest training class is skipped and said so.
LEEP and NCE need the source model's class probabilities on train+val: `source_logits()` gives
its logits (`load_source_logits`: the SavedModel's `serving_default` signature).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping

import numpy as np
import scipy.special

from transfer_tf import files
from transfer_tf.metrics import METRICS
from transfer_tf.protocols import predictors as P
from transfer_tf.protocols import sweep

PROTOCOL = "predictors"
FEWSHOT = tuple(f"fewshot_{shots}" for shots in P.FEWSHOT_SHOTS)
PREDICTORS = ("knn", *FEWSHOT, "logme", "leep", "nce", "hscore", "gbc")
NEEDS_LOGITS = ("leep", "nce")
MULTI_LABEL_PREDICTORS = ("knn", "logme")
FEWSHOT_SEEDS = 5
LOGITS_FILE = "source_logits.{split}.npz"  # beside the features, one per split


def fewshot_name(shots: int) -> str:
    return f"fewshot_{shots}"


def check_predictors(names) -> tuple[str, ...]:
    """The names in PREDICTORS order; `fewshot` stands for every few-shot probe."""
    names = [n.strip() for n in names if n.strip()]
    expanded = set()
    for name in names:
        if name == "fewshot":
            expanded.update(FEWSHOT)
        elif name in PREDICTORS or name.startswith("fewshot_"):
            expanded.add(name)
        else:
            raise P.PredictorError(
                f"unknown predictor {name!r}; use some of {', '.join(PREDICTORS)} (or fewshot)"
            )
    for name in expanded:
        shots = name[len("fewshot_") :] if name.startswith("fewshot_") else None
        if shots is not None and (not shots.isdigit() or int(shots) < 1):
            raise P.PredictorError(f"predictor {name!r}: the shots must be a positive integer")
    order = {n: i for i, n in enumerate(PREDICTORS)}
    return tuple(sorted(expanded, key=lambda n: (order.get(n, len(order)), _shots(n) or 0)))


def _shots(name: str) -> int | None:
    return int(name[len("fewshot_") :]) if name.startswith("fewshot_") else None


def predictor_hparams(
    name: str, *, k_grid=P.K_GRID, l2_grid=P.RIDGE_L2_GRID, gbc_pca_dim=P.GBC_PCA_DIM
) -> dict:
    """A cell's hparams: the predictor and the settings that decide its number."""
    shots = _shots(name)
    if name == "knn":
        return {"predictor": name, "k_grid": [int(k) for k in k_grid]}
    if shots is not None:
        l2s = [float(v) for v in l2_grid]
        return {
            "predictor": name,
            "shots": shots,
            "l2_min": min(l2s),
            "l2_max": max(l2s),
            "num_l2": len(l2s),
        }
    if name == "gbc":
        return {"predictor": name, "pca_dim": gbc_pca_dim, "gaussian": "spherical"}
    return {"predictor": name}


class _Data:
    """The splits of one model × dataset, with what several predictors share."""

    def __init__(self, splits, metric: str, source_logits):
        (self.x_tr, self.y_tr), (self.x_va, self.y_va), (self.x_te, self.y_te) = (
            splits["train"],
            splits["val"],
            splits["test"],
        )
        self.multi_label = self.y_tr.ndim == 2
        self.num_classes = (
            self.y_tr.shape[1]
            if self.multi_label
            else int(max(self.y_tr.max(), self.y_va.max(), self.y_te.max())) + 1
        )
        if metric not in METRICS:
            raise P.PredictorError(f"unknown metric {metric!r}; use one of {sorted(METRICS)}")
        self.metric = METRICS[metric]
        self.x_trva = np.concatenate([self.x_tr, self.x_va])
        self.y_trva = np.concatenate([self.y_tr, self.y_va])
        self._source_logits = source_logits
        self._logits = None
        self._stats = None
        self._unit = None

    def unit_splits(self):
        """The splits with rows scaled to unit norm, as k-NN and the few-shot probes use them:
        made once (by the first of those cells, which is charged its time), not once per cell
        (on Food-101-sized features the 20 few-shot cells went from 68.7 to 62.6 s of CPU).
        A second copy of the features in memory."""
        if self._unit is None:
            self._unit = tuple(
                (P.l2_normalize(x), y)
                for x, y in ((self.x_tr, self.y_tr), (self.x_va, self.y_va), (self.x_te, self.y_te))
            )
        return self._unit

    def stats(self) -> P.FeatureStats | None:
        """The train+val scatter matrix and its one eigendecomposition that LogME, H-score and
        GBC share (when N ≥ D), computed by the first of them that runs (LogME, in the default
        order), which is charged its time."""
        if self._stats is None and len(self.x_trva) >= self.x_trva.shape[1]:
            self._stats = P.FeatureStats.of(self.x_trva)
        return self._stats

    def logits(self) -> np.ndarray:
        """The source model's logits on train+val (computed once, on first use)."""
        if self._logits is None:
            logits = np.asarray(self._source_logits(), np.float64)
            if logits.ndim != 2 or len(logits) != len(self.y_trva):
                raise P.PredictorError(
                    f"source logits have shape {logits.shape}; LEEP and NCE need one row per "
                    f"train+val example ({len(self.y_trva)})"
                )
            if not np.all(np.isfinite(logits)):
                raise P.PredictorError("source logits contain NaN or infinite values")
            self._logits = logits
        return self._logits


def _probe_result(result: P.ProbeResult, y_test, test_ids, **curve) -> dict:
    predictions = {"y_true": y_test, "y_pred": result.y_pred, **curve}
    if result.y_score is not None:
        predictions["y_score"] = result.y_score.astype(np.float32)
    if test_ids is not None:
        predictions["ids"] = np.asarray(test_ids)
    return {
        "val_metric": result.val_metric,
        "test_metric": result.test_metric,
        "predictions": predictions,
    }


def _run_knn(cell, data: _Data, test_ids) -> dict:
    result = P.knn(
        *data.unit_splits(),
        data.metric,
        num_classes=data.num_classes,
        k_grid=cell["hparams"]["k_grid"],
        normalized=True,
    )
    return _probe_result(
        result,
        data.y_te,
        test_ids,
        k=result.grid,
        val_curve=result.val_curve,
        chosen_k=np.array(result.chosen),
    )


def _run_fewshot(cell, data: _Data, test_ids) -> dict:
    hp = cell["hparams"]
    l2s = np.logspace(np.log10(hp["l2_min"]), np.log10(hp["l2_max"]), hp["num_l2"])
    result = P.fewshot_ridge(
        *data.unit_splits(),
        data.metric,
        shots=hp["shots"],
        seed=cell["seed"],
        num_classes=data.num_classes,
        l2_grid=l2s,
        normalized=True,
    )
    return _probe_result(
        result,
        data.y_te,
        test_ids,
        l2=result.grid,
        val_curve=result.val_curve,
        chosen_l2=np.array(result.chosen),
        support=result.support,
    )


def _run_logme(cell, data: _Data, test_ids) -> dict:
    result = P.logme(data.x_trva, data.y_trva, stats=data.stats())
    return {"test_metric": result.score, "steps": result.iterations}


def _run_leep(cell, data: _Data, test_ids) -> dict:
    return {"test_metric": P.leep(scipy.special.softmax(data.logits(), axis=1), data.y_trva)}


def _run_nce(cell, data: _Data, test_ids) -> dict:
    return {"test_metric": P.nce(np.argmax(data.logits(), axis=1), data.y_trva)}


def _run_hscore(cell, data: _Data, test_ids) -> dict:
    return {"test_metric": P.h_score(data.x_trva, data.y_trva, stats=data.stats())}


def _run_gbc(cell, data: _Data, test_ids) -> dict:
    hp = cell["hparams"]
    return {
        "test_metric": P.gbc(
            data.x_trva,
            data.y_trva,
            pca_dim=hp["pca_dim"],
            gaussian=hp["gaussian"],
            stats=data.stats(),
        )
    }


RUNNERS = {
    "knn": _run_knn,
    "logme": _run_logme,
    "leep": _run_leep,
    "nce": _run_nce,
    "hscore": _run_hscore,
    "gbc": _run_gbc,
}


def _runner(name: str):
    return _run_fewshot if name.startswith("fewshot_") else RUNNERS[name]


def check_splits(splits: Mapping[str, tuple[np.ndarray, np.ndarray]], dataset: str) -> None:
    for split in ("train", "val", "test"):
        if split not in splits:
            raise P.PredictorError(
                f"{dataset}: the {split} split is missing; extract features for train, val, test"
            )
        P.check_features(*splits[split], f"{dataset} {split}")
    dims = {s: splits[s][0].shape[1] for s in ("train", "val", "test")}
    if len(set(dims.values())) > 1:
        raise P.PredictorError(
            f"{dataset}: feature dimensions differ between splits {dims}; "
            "extract all splits from the same model"
        )
    if len({splits[s][1].ndim for s in ("train", "val", "test")}) > 1:
        raise P.PredictorError(f"{dataset}: some splits are multi-label and some are not")


def plan_cells(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    base: Mapping,
    predictors,
    *,
    fewshot_seeds: int = FEWSHOT_SEEDS,
    k_grid=P.K_GRID,
    gbc_pca_dim: int | None = P.GBC_PCA_DIM,
    unavailable: Mapping[str, str] | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """(the cells to run, {predictor: why it is skipped on this dataset}); `unavailable`:
    predictors known not to run here, with the reason."""
    y_tr = splits["train"][1]
    skipped, cells = {}, []
    smallest = min(P.class_counts(y_tr).values()) if y_tr.ndim == 1 else 0
    for name in check_predictors(predictors):
        shots = _shots(name)
        if name in (unavailable or {}):
            skipped[name] = unavailable[name]
            continue
        if y_tr.ndim == 2 and name not in MULTI_LABEL_PREDICTORS:
            skipped[name] = "defined for single-label data; this dataset is multi-label"
            continue
        if shots is not None and shots > smallest:
            skipped[name] = f"the smallest training class has {smallest} examples (< {shots})"
            continue
        metric = base["metric"] if name == "knn" or shots is not None else name
        hparams = predictor_hparams(name, k_grid=k_grid, gbc_pca_dim=gbc_pca_dim)
        seeds = range(fewshot_seeds) if shots is not None else (0,)
        cells += [dict(base, metric=metric, hparams=hparams, seed=seed) for seed in seeds]
    return cells, skipped


def _unavailable(names, named: bool, data, dataset: str, *, has_logits: bool) -> dict[str, str]:
    """{predictor: why it cannot run here} among `names`; for predictors the user named
    (`named`), the reason is raised as an error instead."""
    unavailable = {}
    needs_logits = [n for n in names if n in NEEDS_LOGITS]
    if needs_logits and not has_logits:
        how = "pass --saved_model (its transfer-export SavedModel)"
        if named:
            raise P.PredictorError(
                f"{', '.join(needs_logits)} need the source model's logits: "
                f"{how}, or leave them out of --predictors"
            )
        unavailable.update(dict.fromkeys(needs_logits, f"needs the source model's logits: {how}"))
    if "gbc" in names and not data.multi_label:
        try:
            P.require_per_class(data.y_trva, 2, f"{dataset} train+val", "GBC (a class variance)")
        except P.PredictorError as e:
            if named:
                raise
            unavailable["gbc"] = str(e).split("; add examples")[0]
    return unavailable


def run_predictors(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
    results_dir: str,
    *,
    model: str,
    dataset: str,
    metric: str,
    architecture: str | None = None,
    settings: str | None = None,
    predictors=None,
    source_logits: Callable[[], np.ndarray] | None = None,
    fewshot_seeds: int = FEWSHOT_SEEDS,
    k_grid=P.K_GRID,
    gbc_pca_dim: int | None = P.GBC_PCA_DIM,
    test_ids=None,
    progress: bool = True,
    log=print,
    inputs: Mapping[str, str] | None = None,
) -> list[dict]:
    """The predictors' cells on `splits` {"train", "val", "test": (features, labels)}; returns
    the records (finished cells are read back, not rerun). `source_logits()`: the source model's
    logits on train then val, only called when LEEP or NCE still has to run.

    `predictors` None: every predictor that applies (LEEP and NCE without `source_logits`, or
    GBC with a one-example class, are skipped and said so); named predictors that cannot run
    are an error instead. Few-shot probes with more shots than a class has are always skipped.
    `inputs`: fingerprints of the features files (and the source SavedModel, `source_fingerprint`);
    a finished cell computed from other inputs runs again (`sweep.run_cells`).
    """
    check_splits(splits, dataset)
    if fewshot_seeds < 1:
        raise P.PredictorError(f"--fewshot_seeds must be ≥ 1, got {fewshot_seeds}")
    named = predictors is not None
    names = check_predictors(PREDICTORS if predictors is None else predictors)
    data = _Data(splits, metric, source_logits)
    unavailable = _unavailable(names, named, data, dataset, has_logits=source_logits is not None)
    base = dict(
        protocol=PROTOCOL,
        model=model,
        architecture=architecture,
        settings=settings,
        dataset=dataset,
        metric=metric,
        stage="final",
        per_class=None,
    )
    cells, skipped = plan_cells(
        splits,
        base,
        names,
        fewshot_seeds=fewshot_seeds,
        k_grid=k_grid,
        gbc_pca_dim=gbc_pca_dim,
        unavailable=unavailable,
    )
    for name, why in skipped.items():
        log(f"predictors {model} {dataset}: skipping {name}: {why}")
    if any(
        c["hparams"]["predictor"] in NEEDS_LOGITS
        and sweep.load_record(sweep.cell_path(results_dir, c)) is None
        for c in cells
    ):
        data.logits()  # a SavedModel that cannot give logits fails before any cell runs

    def run_fn(cell):
        return _runner(cell["hparams"]["predictor"])(cell, data, test_ids)

    return sweep.run_cells(cells, results_dir, run_fn, progress=progress, inputs=inputs)


# ---------------------------------------------------------------------------------------------
# The source model's logits on the target data, for LEEP and NCE.


def logits_signature(saved_model: str):
    """The SavedModel's `serving_default` logits as a `features.FeatureSource`, or a one-line
    error when the SavedModel cannot give them (e.g. a features-only export)."""
    # TensorFlow only here: the forward pass of LEEP / NCE (importing it takes ~7 s on this box).
    import tensorflow as tf

    from transfer_tf.protocols import features

    if not tf.io.gfile.exists(saved_model):
        raise FileNotFoundError(f"--saved_model {saved_model} does not exist")
    signatures = tf.saved_model.load(saved_model).signatures
    need = "LEEP and NCE need the source model's logits from its serving_default signature"
    if "serving_default" not in signatures:
        raise P.PredictorError(
            f"{need}, but SavedModel {saved_model} has only {sorted(signatures)} (a features-only "
            "export); pass the model's transfer-export SavedModel or leave leep and nce out of "
            "--predictors"
        )
    outputs = sorted(signatures["serving_default"].structured_outputs)
    if "logits" not in outputs:
        raise P.PredictorError(
            f"{need}, but serving_default of {saved_model} outputs {outputs}, not 'logits'; pass "
            "the model's transfer-export SavedModel or leave leep and nce out of --predictors"
        )
    return features.load_signature(saved_model, "serving_default", "logits")


def _read_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(files.read_bytes(path))) as data:
        return {k: data[k] for k in data.files}


def source_fingerprint(saved_model: str) -> str:
    """A short hash of a SavedModel's graph and its variables' index (whose entries hold each
    tensor's checksum): another export of other weights has another fingerprint."""
    parts = [files.join(saved_model, "saved_model.pb")]
    index = files.join(saved_model, "variables", "variables.index")
    parts += [index] if files.exists(index) else []
    return sweep.fingerprint([files.sha256_file(p) for p in parts])


def load_source_logits(
    saved_model: str,
    features_dir: str,
    *,
    splits=("train", "val"),
    batch_size: int = 64,
    log=print,
) -> np.ndarray:
    """The source model's logits on `splits` of the dataset the features came from (read from
    the records the features manifest names), in the features' order; cached beside the
    features as `source_logits.<split>.npz` and checked against the features' image ids."""
    from transfer_tf.protocols import features, logreg  # TensorFlow: see logits_signature

    manifest = logreg.load_manifest(features_dir)
    missing = [k for k in ("records_dir", "dataset") if not manifest.get(k)]
    if missing:
        raise P.PredictorError(
            f"{features_dir}/manifest.json lacks {missing}; LEEP and NCE read "
            "the images through it: re-extract the features"
        )
    out, source, model_hash = [], None, source_fingerprint(saved_model)
    for split in splits:
        path = files.join(features_dir, LOGITS_FILE.format(split=split))
        ids = logreg.load_ids(features_dir, split)
        cached = _read_npz(path) if files.exists(path) else None
        if (
            cached is not None
            and str(cached.get("source", "")) == model_hash  # logits of this very SavedModel
            and (ids is None or np.array_equal(cached.get("ids"), ids))
        ):
            out.append(cached["logits"])
            continue
        if source is None:
            source = logits_signature(saved_model)
        arrays, _ = features.extract_split(
            source, manifest["records_dir"], manifest["dataset"], split, batch_size=batch_size
        )
        if ids is not None and not np.array_equal(arrays["ids"], ids):
            raise P.PredictorError(
                f"{manifest['dataset']} {split}: the records' image ids differ from those of "
                f"{features_dir}/{split}.npz; re-extract the features from the same records"
            )
        buffer = io.BytesIO()
        np.savez(buffer, logits=arrays["features"], ids=arrays["ids"], source=model_hash)
        files.atomic_write_bytes(path, buffer.getvalue())
        log(f"{manifest['dataset']} {split}: source logits {arrays['features'].shape} -> {path}")
        out.append(arrays["features"])
    return np.concatenate(out)
