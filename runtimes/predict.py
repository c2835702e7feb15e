"""Classify your own images with an exported artefact: ``python -m runtimes.predict``.

    python -m runtimes.predict runs/export photo.jpg more_photos/ [--format tflite
        --precision int8] [--json]

``runs/export`` is an export folder (its ``manifest.json``), one artefact file in it, or a
checkpoint ``.pth`` (run in PyTorch). Each image goes through the manifest's preprocessing
(``kd_core.data.transforms``), the artefact's real runtime (``runtimes.load_runner``) and the
shipped decision (``kd_core.deploy.Decision``): class probabilities at the shipped temperature,
and the positive class called at the shipped threshold (or, without a positive class, the most
probable class). Folders are searched for ``.jpg``, ``.jpeg`` and ``.png`` files. Every image is
read before the model runs; an unusable one is a one-line error naming it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kd_core import cli
from kd_core.deploy import ContractError, ManifestEntry, load_manifest, manifest_path

if TYPE_CHECKING:
    from runtimes import Runner

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
CHECKPOINT_SUFFIXES = (".pth", ".pt")


class PredictInputError(cli.BadInput):
    """An artefact, export folder or image that cannot be used; the message names it."""


@dataclass(frozen=True)
class Prediction:
    image: str
    probabilities: dict[str, float]  # label -> softmax(logits / temperature)
    decision: str  # the label decided
    positive_probability: float | None  # p of the positive class (binary decisions)
    threshold: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "probabilities": self.probabilities,
                "decision": self.decision, "positive_probability": self.positive_probability,
                "threshold": self.threshold}


def _matching(entries: Sequence[ManifestEntry], where: Path, fmt: str | None,
              precision: str | None) -> list[ManifestEntry]:
    found = [e for e in entries if (fmt is None or e.format == fmt)
             and (precision is None or e.precision == precision)]
    if not found:
        have = ", ".join(f"{e.format}/{e.precision}" for e in entries) or "none"
        asked = "/".join(x for x in (fmt, precision) if x) or "any"
        raise PredictInputError(f"{where}: no artefact {asked} in the manifest (it has {have})")
    return found


def find_artefacts(target: Path, fmt: str | None = None, precision: str | None = None
                   ) -> tuple[list[ManifestEntry], Path]:
    """The manifest entries that may run, in the manifest's order, and the folder their paths
    are relative to: an export folder's artefacts matching ``fmt``/``precision``, one artefact
    file beside its manifest, or a checkpoint (PyTorch)."""
    if not target.exists():
        raise PredictInputError(f"{target}: not found")
    if target.is_file() and target.suffix.lower() in CHECKPOINT_SUFFIXES:
        from runtimes.torch_eager import checkpoint_entry

        return [_as_entry(checkpoint_entry(target), target)], target.parent
    folder = target if target.is_dir() and manifest_path(target).is_file() else target.parent
    try:
        manifest = load_manifest(folder)
    except ContractError as exc:
        raise PredictInputError(str(exc)) from None
    entries = list(manifest.artifacts)
    if target != folder:  # one artefact file
        entries = [e for e in entries if e.file(folder).resolve() == target.resolve()]
        if not entries:
            raise PredictInputError(f"{target}: not an artefact listed in {manifest_path(folder)}")
    return _matching(entries, folder, fmt, precision), folder


def load_first(entries: Sequence[ManifestEntry], root: Path, threads: int = 1
               ) -> tuple[ManifestEntry, Runner]:
    """The first entry whose runtime runs on this host (Core ML needs macOS), loaded."""
    from runtimes import RuntimeLoadError, RuntimeUnavailable, load_runner

    skipped = []
    for entry in entries:
        try:
            runner = load_runner(entry, root, threads)
        except RuntimeUnavailable as exc:
            skipped.append(f"{entry.name} ({exc})")
            continue
        except RuntimeLoadError as exc:
            raise PredictInputError(str(exc)) from None
        if skipped:
            log.info("using %s: %s cannot run on this host", entry.name, "; ".join(skipped))
        return entry, runner
    raise PredictInputError(f"no artefact can run on this host: {'; '.join(skipped)}; pick "
                            "another with --format/--precision")


def _as_entry(entry: Any, source: Path) -> ManifestEntry:
    if isinstance(entry, ManifestEntry):
        return entry
    return ManifestEntry.from_dict(dict(entry), str(source))


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files named, folders searched recursively (sorted); none is an error."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                            and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise PredictInputError(f"{p}: image not found")
    if not files:
        raise PredictInputError(f"no images (.jpg, .jpeg, .png) in {', '.join(map(str, paths))}")
    return files


def predict_images(entry: ManifestEntry, runner: Runner, images: Sequence[Path]
                   ) -> list[Prediction]:
    """Preprocess every image (errors name the file), run the artefact, decide."""
    import numpy as np

    from kd_core.data.transforms import ImageError, preprocess

    try:
        x = np.stack([preprocess(p, entry.preprocessing) for p in images])
    except ImageError as exc:
        raise PredictInputError(str(exc)) from None
    logits = runner.predict(x)
    d = entry.decision
    probs, decided = d.probabilities(logits), d.decide(logits)
    out = []
    for i, path in enumerate(images):
        if d.positive_index is None:
            label, p_pos = d.labels[int(decided[i])], None
        else:
            p_pos = float(probs[i, d.positive_index])
            negative = 1 - d.positive_index if len(d.labels) == 2 else None
            label = d.labels[d.positive_index] if decided[i] else (
                d.labels[negative] if negative is not None else f"not {d.positive_label}")
        out.append(Prediction(str(path), {n: float(v) for n, v in zip(d.labels, probs[i],
                                                                       strict=True)},
                              label, p_pos, d.threshold))
    return out


def _line(p: Prediction) -> str:
    probs = "  ".join(f"{k} {v:.4f}" for k, v in p.probabilities.items())
    if p.positive_probability is None:
        rule = "most probable"
    else:
        sign = ">=" if p.positive_probability >= (p.threshold or 0) else "<"
        rule = f"p {p.positive_probability:.4f} {sign} threshold {p.threshold:.4f}"
    return f"{p.image}: {p.decision} ({rule})  [{probs}]"


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m runtimes.predict", __doc__)
    parser.add_argument("artefact", type=Path, metavar="ARTEFACT_OR_EXPORT_DIR",
                        help="export folder (manifest.json), an artefact in one, or a .pth")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE_OR_DIR",
                        help="image files or folders of images")
    parser.add_argument("--format", help="artefact format in an export folder (tflite, "
                        "executorch, onnx, coreml); default: the first listed that runs here")
    parser.add_argument("--precision", help="artefact precision (fp32, int8, ...)")
    parser.add_argument("--threads", type=int, default=1, help="runtime CPU threads")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser


def _main(args: argparse.Namespace) -> int:
    from kd_core.io import dumps_json

    if args.threads < 1:
        raise PredictInputError(f"--threads must be at least 1, got {args.threads}")
    entries, root = find_artefacts(args.artefact, args.format, args.precision)
    images = image_files(args.images)
    entry, runner = load_first(entries, root, args.threads)
    results = predict_images(entry, runner, images)
    if args.json:
        print(dumps_json({"artefact": entry.name, "format": entry.format,
                          "precision": entry.precision, "labels": list(entry.decision.labels),
                          "temperature": entry.decision.temperature,
                          "threshold": entry.decision.threshold,
                          "predictions": [r.to_dict() for r in results]}))
    else:
        print(f"{entry.name} ({entry.format} {entry.precision}), T = "
              f"{entry.decision.temperature:.3f}:")
        for r in results:
            print(_line(r))
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.json:  # --json: stdout holds the JSON document alone
        cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    sys.exit(main())
