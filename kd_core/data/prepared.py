"""The prepared split folder, for every kind of dataset: its files, what it says about the data,
and how a split is read back.

``python -m kd_core.data prepare`` writes ``train_data.csv``, ``val_data.csv``,
``holdout_data.csv``, a CSV of every usable image and, last, ``split_metadata.json``. HAM10000
folders keep their own columns (``lesion_id, image_id, dx, ...``); image-folder and CSV datasets
write ``image_id, label, group, image_path``, and their metadata records ``kind``, ``name`` and
``classes``. Readers never need to know which: ``load_split`` returns a ``SplitData`` whose
``labels_for`` maps every image to the class index of a task or of a model's labels.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kd_core.cli import BadInput

METADATA_NAME = "split_metadata.json"
SPLIT_FILES = {"train": "train_data.csv", "val": "val_data.csv", "holdout": "holdout_data.csv"}
GENERIC_COLUMNS = ["image_id", "label", "group", "image_path"]
GENERIC_ALL = "labeled_data.csv"  # every usable image of an image-folder or CSV dataset
OTHER = "other"  # the negative class of a binary task ("X vs rest")
# HAM10000's class names, in one place (kd_core.data.ham10000 re-exports them): the 7 diagnoses
# (``--target dx``) and melanoma vs rest (``--target mel``). Checkpoints, manifests and the apps
# carry these as their labels.
DX_CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
MEL_CLASSES = ("other", "melanoma")
SYNTHETIC_MARKER = "synthetic.json"  # in a folder written by kd_core.data.synthetic


class DataError(BadInput):
    """Bad input data; the message names the file or row and the problem."""


@dataclass(frozen=True)
class Task:
    """What a model is trained to say: its labels, and the positive class (None: argmax)."""

    labels: tuple[str, ...]
    positive_index: int | None


@dataclass(frozen=True)
class DataInfo:
    """What a prepared folder says about its dataset."""

    kind: str  # "ham10000", "imagefolder" or "csv"
    name: str  # display name ("HAM10000", "synthetic demo data", the folder's name)
    classes: tuple[str, ...]
    default_positive: str | None = None  # HAM10000: "mel"
    aliases: Mapping[str, str] = field(default_factory=dict)  # label -> class ("melanoma")

    def class_of(self, label: str) -> str:
        return self.aliases.get(label, label)

    def binary_labels(self, positive: str) -> tuple[str, str]:
        """("other", name) for "``positive`` vs rest" (HAM10000's mel: "melanoma")."""
        name = next((a for a, c in self.aliases.items() if c == positive), positive)
        negative = OTHER if OTHER not in self.classes else f"not_{positive}"
        return negative, name


@dataclass(frozen=True)
class SplitData:
    image_ids: list[str]
    paths: list[Path]
    targets: np.ndarray  # int64, 1 = the dataset's default positive class (HAM10000: melanoma)
    dx: list[str]  # each image's class (HAM10000: its diagnosis)
    info: DataInfo | None = None  # None: HAM10000
    groups: list[str] = field(default_factory=list)  # lesion, patient, ... ids

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def data(self) -> DataInfo:
        return self.info if self.info is not None else ham_info()

    def labels_for(self, target: str | Sequence[str], positive_index: int | None = None
                   ) -> np.ndarray:
        """Class indices of every image for a task or a model.

        ``target``: "mel" (the default positive class vs rest: 0/1), "dx" (every class, in the
        dataset's order), or a model's labels: labels naming every class of the data give each
        image its class's index; two labels, one of them a class (``positive_index``, default
        the second), give "that class vs rest". Anything else is a ``DataError``."""
        info = self.data
        if isinstance(target, str):
            if target == "mel":
                if info.default_positive is None:
                    raise DataError(f"{info.name}: no default positive class; give the labels")
                return self.targets
            if target == "dx":
                return self._indices(info.classes)
            raise ValueError(f"target must be 'mel', 'dx' or a list of labels, got {target!r}")
        labels = [info.class_of(str(x)) for x in target]
        if set(info.classes) <= set(labels):
            return self._indices(labels)
        pos = 1 if positive_index is None else positive_index
        if len(labels) == 2 and pos in (0, 1) and labels[pos] in info.classes:
            return np.array([pos if c == labels[pos] else 1 - pos for c in self.dx],
                            dtype=np.int64)
        raise DataError(f"the model's labels {list(target)} do not match the classes of "
                        f"{info.name} ({', '.join(info.classes)})")

    def _indices(self, order: Sequence[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(order)}
        return np.array([index[c] for c in self.dx], dtype=np.int64)


def ham_info(name: str = "HAM10000") -> DataInfo:
    return DataInfo("ham10000", name, tuple(DX_CLASSES), "mel", {"melanoma": "mel"})


def task_for(info: DataInfo, target: str = "auto", positive: str | None = None) -> Task:
    """The labels and positive class a run trains for. ``positive``: a binary task, that class vs
    rest. Else HAM10000: ``target`` "mel"/"auto" is melanoma vs rest, "dx" the 7 diagnoses (the
    melanoma class positive); other datasets: every class, decided by argmax."""
    if positive is not None:
        if info.class_of(positive) not in info.classes:
            raise DataError(f"--positive {positive}: not a class of {info.name} (classes: "
                            f"{', '.join(info.classes)})")
        if target == "dx":
            raise DataError("--positive makes a binary task; it cannot be combined with "
                            "--target dx")
        return Task(info.binary_labels(info.class_of(positive)), 1)
    if info.default_positive is None:
        if target not in ("auto", "all"):
            raise DataError(f"--target {target} is a HAM10000 task; {info.name} is an "
                            f"{info.kind} dataset: pass --positive NAME for a binary task "
                            "(default: every class)")
        return Task(info.classes, None)
    if target == "dx":
        return Task(info.classes, info.classes.index(info.default_positive))
    return Task(info.binary_labels(info.default_positive), 1)


def is_prepared_dir(path: Path) -> bool:
    path = Path(path)
    return (path / METADATA_NAME).is_file() and all(
        (path / f).is_file() for f in SPLIT_FILES.values())


def read_split_metadata(prepared_dir: Path) -> dict[str, Any]:
    meta_path = Path(prepared_dir) / METADATA_NAME
    if not meta_path.is_file():
        raise DataError(f"{prepared_dir}: not a prepared folder (no {METADATA_NAME}); run "
                        "`python -m kd_core.data prepare` first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not isinstance(meta["data_dir"], str):
            raise TypeError("data_dir must be a path")
        return meta
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{meta_path}: unreadable split metadata ({exc})") from None


def split_data_dir(prepared_dir: Path) -> Path:
    """The raw data folder a prepared split folder was made from (as recorded)."""
    return Path(read_split_metadata(prepared_dir)["data_dir"])


def data_info(prepared_dir: Path) -> DataInfo:
    """What the prepared folder's dataset is: kind, display name, classes."""
    meta = read_split_metadata(prepared_dir)
    kind = meta.get("kind", "ham10000")
    if kind == "ham10000":
        synthetic = (Path(meta["data_dir"]) / SYNTHETIC_MARKER).is_file()
        return ham_info("synthetic demo data" if synthetic else "HAM10000")
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(
            isinstance(c, str) and c for c in classes):
        raise DataError(f"{Path(prepared_dir) / METADATA_NAME}: classes must list at least 2 "
                        f"names, got {classes!r:.80}")
    return DataInfo(str(kind), str(meta.get("name") or kind), tuple(classes))


def load_split(prepared_dir: Path, split: str) -> SplitData:
    """Read one prepared split; image paths are resolved against the recorded data folder."""
    prepared_dir = Path(prepared_dir)
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {list(SPLIT_FILES)}, got {split!r}")
    info = data_info(prepared_dir)
    data_dir = split_data_dir(prepared_dir)
    path = prepared_dir / SPLIT_FILES[split]
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if info.kind == "ham10000":
            labels, groups = [r["dx"] for r in rows], [r["lesion_id"] for r in rows]
            targets = [int(r["target"]) for r in rows]
        else:
            labels, groups = [r["label"] for r in rows], [r["group"] for r in rows]
            targets = [0] * len(rows)
        unknown = sorted(set(labels) - set(info.classes))
        if unknown:
            raise ValueError(f"unknown class(es) {', '.join(unknown)}")
        return SplitData(
            image_ids=[r["image_id"] for r in rows],
            paths=[data_dir / r["image_path"] for r in rows],
            targets=np.array(targets, dtype=np.int64), dx=labels,
            info=info, groups=groups)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable split file ({type(exc).__name__}: {exc})") from None


def csv_text(columns: list[str], rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def reusable(out: Path, params: dict[str, object], files: Sequence[str]) -> bool:
    """``out`` holds a complete preparation made with ``params``."""
    meta = out / METADATA_NAME
    if not meta.is_file() or not all((out / f).is_file() for f in files):
        return False
    try:
        old = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(old, dict) and all(old.get(k) == v for k, v in params.items())


def write_splits(out: Path, all_name: str, columns: list[str], rows: list[dict[str, str]],
                 by_split: dict[str, list[dict[str, str]]], summary: dict[str, Any]) -> None:
    """Every file of a prepared folder, atomically; ``split_metadata.json`` last (its presence
    marks a complete preparation)."""
    from kd_core.io import atomic_write_text

    atomic_write_text(out / all_name, csv_text(columns, rows))
    for name, split_rows in by_split.items():
        atomic_write_text(out / SPLIT_FILES[name], csv_text(columns, split_rows))
    atomic_write_text(out / METADATA_NAME, json.dumps(summary, indent=2) + "\n")
