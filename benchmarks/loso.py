"""Leave-one-site-out: train on every acquisition site but one, test on the one left out.

    python -m benchmarks.loso --data-dir D --out R [--profile quick|cpu|full] [--sites A,B]

For each site S of the metadata's site column (HAM10000 Dataverse release: ``dataset``), the
images of the other sites are split by lesion into train / val / internal holdout with the data
API (``kd_core.data.ham10000.prepare`` on a metadata file restricted to those sites); a model is
trained on them (``kd_core.train.run``; temperature and threshold set on the training sites'
validation split) and scored on every image of S whose lesion the training sites do not hold.
Per held-out site: n, melanomas, ROC-AUC [DeLong 95 % CI], sensitivity and specificity at the
threshold [Wilson], ECE, beside the internal-holdout ROC-AUC. Writes ``R/loso.json`` (strict),
``R/loso.md``, ``R/loso.csv``; each fold lives in ``R/<site>/`` and a finished fold with the same
settings is reused (``--force`` redoes it). Profiles: ``quick`` (tiny model, a few steps: tests),
``cpu`` (MobileNetV3-Small at 64 px, 8 epochs), ``full`` (224 px, 50 epochs: a GPU).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kd_core import cli

log = logging.getLogger(__name__)
LOSO_NOTE = ("Each row: a model trained on the other sites (split by lesion), its threshold set "
             "on their validation split, tested on every image of the held-out site. Internal "
             "holdout: the training sites' own holdout (bootstrap CI of the training run); "
             "held-out site ROC-AUC: DeLong CI; sensitivity and specificity: Wilson.")


@dataclass(frozen=True)
class LosoProfile:
    arch: str
    image_size: int
    epochs: int
    batch_size: int
    max_steps_per_epoch: int | None = None
    patience: int = 10


PROFILES = {
    "quick": LosoProfile("tiny_mobilenet", 32, 2, 32, max_steps_per_epoch=3),
    "cpu": LosoProfile("mobilenet_v3_small", 64, 8, 64),
    "full": LosoProfile("mobilenet_v3_small", 224, 50, 128),
}


@dataclass(frozen=True)
class LosoConfig:
    data_dir: str
    out: str
    profile: LosoProfile
    metadata: str | None = None  # default: the Dataverse file if present, else the Kaggle one
    site_column: str = "dataset"
    sites: tuple[str, ...] | None = None  # default: every site
    seed: int = 42
    device: str = "auto"
    force: bool = False


class LosoError(cli.BadInput):
    """Data that cannot be split by site; names the file and column."""


def load_sites(cfg: LosoConfig) -> tuple[Any, list[str]]:
    """The metadata (``kd_core.data.ham10000.Metadata``) and the sites to hold out in turn."""
    from kd_core.data.ham10000 import metadata_path, read_metadata

    path = metadata_path(Path(cfg.data_dir), cfg.metadata)
    meta = read_metadata(path)
    if cfg.site_column not in meta.columns:
        raise LosoError(f"{path}: no `{cfg.site_column}` column; leave-one-site-out needs the "
                        "site of every image (HAM10000: the Dataverse release's `dataset` "
                        "column); sites are never inferred")
    counts = Counter(r.get(cfg.site_column, "") for r in meta.rows)
    if "" in counts:
        raise LosoError(f"{path}: {counts['']} row(s) have an empty `{cfg.site_column}`")
    sites = sorted(counts, key=lambda s: (-counts[s], s))
    if len(sites) < 2:
        raise LosoError(f"{path}: `{cfg.site_column}` names one site; nothing to hold out")
    unknown = sorted(set(cfg.sites or ()) - set(sites))
    if unknown:
        raise LosoError(f"--sites {','.join(unknown)}: not in {path} ({', '.join(sites)})")
    return meta, [s for s in sites if cfg.sites is None or s in cfg.sites]


def _slug(site: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in site) or "site"


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def fold_rows(rows: Sequence[Mapping[str, str]], site: str, column: str
              ) -> tuple[list[Mapping[str, str]], list[Mapping[str, str]], int]:
    """(training rows: every other site; test rows: ``site``'s images whose lesion no other
    site holds; how many of ``site``'s images were left out for that)."""
    train = [r for r in rows if r[column] != site]
    seen = {r["lesion_id"] for r in train}
    held = [r for r in rows if r[column] == site]
    test = [r for r in held if r["lesion_id"] not in seen]
    if not test:
        raise LosoError(f"{site}: every image's lesion also appears at another site")
    return train, test, len(held) - len(test)


def fold_key(cfg: LosoConfig, meta: Any, site: str) -> str:
    settings = {"profile": asdict(cfg.profile), "seed": cfg.seed, "site": site,
                "site_column": cfg.site_column, "metadata_sha256": meta.sha256,
                "data_dir": str(Path(cfg.data_dir).resolve())}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def train_config(cfg: LosoConfig, prepared: Path, metadata: Path) -> Any:
    from kd_core.config import Config, DataConfig, KDConfig, StudentConfig, TrainingConfig

    p = cfg.profile
    return Config(
        data=DataConfig(data_dir=str(Path(cfg.data_dir).resolve()), prepared_dir=str(prepared),
                        metadata=str(metadata), image_size=p.image_size, seed=cfg.seed),
        training=TrainingConfig(epochs=p.epochs, batch_size=p.batch_size, patience=p.patience,
                                device=cfg.device, seed=cfg.seed,
                                max_steps_per_epoch=p.max_steps_per_epoch),
        student=StudentConfig(architecture=p.arch), kd=KDConfig(alpha=0.0))


def score_site(best: Path, data_dir: Path, rows: Sequence[Mapping[str, str]]
               ) -> dict[str, Any]:
    """The trained model on the held-out site's images, at its shipped decision."""
    import numpy as np

    from benchmarks.accuracy import decode, predict_all
    from benchmarks.subgroups import group_metrics
    from kd_core.checkpoint import decision_of, load_checkpoint
    from kd_core.data.ham10000 import find_images
    from kd_core.data.transforms import Preprocessing
    from runtimes import load_runner
    from runtimes.torch_eager import checkpoint_entry

    ckpt = load_checkpoint(best)
    decision = decision_of(ckpt, best)
    prep = Preprocessing.from_dict(ckpt["preprocessing"])
    paths = find_images(data_dir, [r["image_id"] for r in rows])
    pixels = decode([prep], [paths[r["image_id"]] for r in rows], None)[prep]
    logits = predict_all(load_runner(checkpoint_entry(best), best.parent), pixels, prep)
    y = np.array([r["dx"] == "mel" for r in rows], dtype=np.int64)
    out = group_metrics(y, decision.positive_probability(logits),
                        np.asarray(decision.decide(logits), dtype=bool))
    return {**out, "threshold": decision.threshold, "temperature": decision.temperature}


def run_fold(cfg: LosoConfig, meta: Any, site: str) -> dict[str, Any]:
    """Train on every other site, test on ``site``; reuses a finished fold."""
    from kd_core.data.ham10000 import prepare
    from kd_core.io import atomic_write_text, loads_json, write_json
    from kd_core.train import run

    fold_dir = Path(cfg.out) / _slug(site)
    record, key = fold_dir / "fold.json", fold_key(cfg, meta, site)
    if record.is_file() and not cfg.force:
        old = loads_json(record.read_text(encoding="utf-8"))
        if isinstance(old, dict) and old.get("key") == key:
            log.info("%s: reusing the finished fold in %s", site, fold_dir)
            return old
    col = cfg.site_column
    train_rows, test_rows, excluded = fold_rows(meta.rows, site, col)
    metadata = (fold_dir / "train_sites_metadata.csv").resolve()
    atomic_write_text(metadata, _csv_text(meta.columns, train_rows))
    log.info("%s: training on %d images of the other sites, testing on %d", site,
             len(train_rows), len(test_rows))
    prepared = prepare(Path(cfg.data_dir), fold_dir / "prepared", seed=cfg.seed,
                       metadata=str(metadata), verbose=False)
    best = run("student", train_config(cfg, prepared, metadata), fold_dir / "model", None,
               force=cfg.force)
    internal = loads_json((best.parent / "metrics.json").read_text(encoding="utf-8"))
    hold = internal.get("holdout", {}) if isinstance(internal, dict) else {}
    result = {"site": site, "key": key, "train_images": len(train_rows),
              "train_sites": sorted({r[col] for r in train_rows}),
              "excluded_shared_lesions": excluded,
              "internal_roc_auc": hold.get("roc_auc"),
              "internal_roc_auc_ci_low": hold.get("roc_auc_ci_low"),
              "internal_roc_auc_ci_high": hold.get("roc_auc_ci_high"),
              "checkpoint": str(best),
              **score_site(best, Path(cfg.data_dir), test_rows)}
    write_json(record, result)
    return result


def loso_table(data: Mapping[str, Any]) -> str:
    """The Markdown table of ``loso.json``."""
    from benchmarks.clinical_tables import md_table, num, with_ci

    head = ["Held-out site", "Trained on (images)", "Test images", "Melanomas",
            "Internal holdout AUC [95% CI]", "Held-out site AUC [95% CI]",
            "Sensitivity [95% CI]", "Specificity [95% CI]", "Threshold", "ECE", "Note"]
    body = []
    for f in data["folds"]:
        note = "no melanomas: AUC and sensitivity undefined" if f["n_pos"] == 0 else (
            f"< {data['min_melanomas']} melanomas" if f["underpowered"] else "")
        if f.get("excluded_shared_lesions"):
            note += f" ({f['excluded_shared_lesions']} image(s) of shared lesions left out)"
        body.append([f["site"], f"{', '.join(f['train_sites'])} ({f['train_images']})",
                     str(f["n"]), str(f["n_pos"]), with_ci(f, "internal_roc_auc"),
                     with_ci(f, "roc_auc"), with_ci(f, "sensitivity"), with_ci(f, "specificity"),
                     num(f.get("threshold"), 4), num(f.get("ece")), note.strip()])
    return md_table(head, body)


def run_loso(cfg: LosoConfig) -> dict[str, Any]:
    """Every fold, then ``loso.json``, ``loso.md`` and ``loso.csv`` in ``cfg.out``."""
    from benchmarks.clinical_tables import render_rows_csv
    from benchmarks.subgroups import MIN_MELANOMAS
    from kd_core.io import atomic_write_text, write_json

    meta, sites = load_sites(cfg)
    folds = [run_fold(cfg, meta, s) for s in sites]
    data = {"version": 1, "data_dir": str(cfg.data_dir), "metadata": str(meta.path),
            "site_column": cfg.site_column, "profile": asdict(cfg.profile), "seed": cfg.seed,
            "min_melanomas": MIN_MELANOMAS, "folds": folds}
    out = Path(cfg.out)
    write_json(out / "loso.json", data)
    atomic_write_text(out / "loso.md", f"# Leave-one-site-out\n\n{LOSO_NOTE}\n\n"
                      f"{loso_table(data)}\n")
    atomic_write_text(out / "loso.csv", render_rows_csv(folds, ["site", "n", "n_pos"]))
    return data


def build_parser() -> argparse.ArgumentParser:
    p = cli.parser("python -m benchmarks.loso", __doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, metavar="D",
                   help="HAM10000 folder (images plus a metadata CSV with a site column)")
    p.add_argument("--out", required=True, metavar="R", help="results folder")
    p.add_argument("--profile", choices=sorted(PROFILES), default="quick",
                   help="quick: tests; cpu: a CPU run; full: a GPU")
    p.add_argument("--metadata", help="metadata CSV (default: the HAM10000 metadata CSV with "
                                      "the site column when present)")
    p.add_argument("--site-column", default="dataset", help="the metadata's site column")
    p.add_argument("--sites", help="comma-separated sites to hold out (default: all)")
    p.add_argument("--seed", type=int, default=42, help="split and training seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    for name in ("arch", "image_size", "epochs", "batch_size", "max_steps_per_epoch"):
        p.add_argument(f"--{name.replace('_', '-')}", type=str if name == "arch" else int,
                       help="override the profile's value")
    p.add_argument("--force", action="store_true", help="redo finished folds")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> LosoConfig:
    profile = PROFILES[args.profile]
    overrides = {k: getattr(args, k) for k in asdict(profile)
                 if getattr(args, k, None) is not None}
    if any(isinstance(v, int) and v < 1 for v in overrides.values()):
        raise LosoError(f"profile overrides must be >= 1: {overrides}")
    if not Path(args.data_dir).is_dir():
        raise LosoError(f"--data-dir {args.data_dir}: folder not found")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise LosoError(f"--out {args.out}: exists and is not a folder")
    sites = tuple(s.strip() for s in args.sites.split(",") if s.strip()) if args.sites else None
    return LosoConfig(args.data_dir, args.out, replace(profile, **overrides), args.metadata,
                      args.site_column, sites, args.seed, args.device, args.force)


def _main(args: argparse.Namespace) -> int:
    from kd_core.checkpoint import CheckpointError
    from kd_core.data.ham10000 import DataError
    from kd_core.data.splits import SplitError

    try:
        data = run_loso(config_from_args(args))
    except (DataError, SplitError, CheckpointError) as exc:
        raise LosoError(str(exc)) from None
    print(loso_table(data))
    print(f"\nresults: {Path(args.out) / 'loso.json'}")
    return cli.EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: _main(args))


if __name__ == "__main__":
    raise SystemExit(main())
