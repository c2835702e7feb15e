"""``MODEL_CARD.md``, generated per run from its results (Mitchell et al. 2019; TRIPOD+AI 2024).

``write_model_card(path)`` takes a results folder (``results.json``) or a pipeline run folder
(holding ``benchmark/``); it reads the results, ``subgroups.json`` (computed first when missing),
the prepared split's ``split_metadata.json``, the float models' ``config.json``, the export's
manifest and, when present, a leave-one-site-out table (``RUN/loso/loso.json``). It writes the
card into the run folder (a results folder inside a pipeline run: the run folder; else the
results folder) and copies it beside the export's ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import model_card_text as text
from benchmarks.clinical_inputs import ClinicalError
from benchmarks.clinical_tables import md_table, num, p_value, shown, with_ci

log = logging.getLogger(__name__)
CARD_NAME = "MODEL_CARD.md"


@dataclass(frozen=True)
class CardInputs:
    results_dir: Path
    card_dir: Path
    results: dict[str, Any]
    clinical: dict[str, Any]
    split_meta: dict[str, Any]
    configs: dict[str, dict[str, Any]]  # role -> its training config.json
    loso: dict[str, Any] | None
    archs: dict[str, str]  # role -> its checkpoint's architecture (``role_archs``)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.results.get("meta") or {})


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def locate(path: Path) -> tuple[Path, Path]:
    """(results folder, folder the card goes into) for a results or pipeline run folder."""
    path = Path(path)
    if (path / "results.json").is_file():
        in_run = (path.parent / "pipeline_profile.json").is_file()
        return path, path.parent if in_run else path
    if (path / "benchmark" / "results.json").is_file():
        return path / "benchmark", path
    raise ClinicalError(f"{path}: neither a results folder (results.json) nor a pipeline run "
                        "folder (benchmark/results.json)")


def gather(path: Path) -> CardInputs:
    from benchmarks.subgroups import write_subgroups

    results_dir, card_dir = locate(path)
    if not (results_dir / "subgroups.json").is_file():
        write_subgroups(results_dir)
    results = _json(results_dir / "results.json")
    meta = results.get("meta") or {}
    split_meta = _json(Path(str(meta.get("prepared", ""))) / "split_metadata.json")
    configs = {}
    for role in ("teacher", "student"):
        ckpt = (meta.get(f"{role}_ckpt") or {}).get("path")
        if ckpt:
            configs[role] = _json(Path(str(ckpt)).parent / "config.json")
    loso = next((_json(p) for p in (card_dir / "loso" / "loso.json",
                                    results_dir / "loso" / "loso.json") if p.is_file()), None)
    return CardInputs(results_dir, card_dir, results, _json(results_dir / "subgroups.json"),
                      split_meta, configs, loso, role_archs(meta, configs))


def role_archs(meta: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]
               ) -> dict[str, str]:
    """role -> the architecture of the checkpoint the run scored: the export manifest's record of
    its source checkpoint when that is the role's checkpoint (same SHA-256), else the role's
    section of the training config beside the checkpoint (a run that trained one role writes the
    other's defaults there too)."""
    source = _json(Path(str(meta.get("artifacts") or ""))).get("source_checkpoint") or {}
    archs = {}
    for role in ("teacher", "student"):
        sha = (meta.get(f"{role}_ckpt") or {}).get("sha256")
        arch = source.get("arch") if sha and sha == source.get("sha256") else (
            (configs.get(role) or {}).get(role) or {}).get("architecture")
        if arch:
            archs[role] = str(arch)
    return archs


# ---- sections --------------------------------------------------------------------------------


def dataset_facts(inp: CardInputs) -> tuple[str, str, str]:
    """(name, source, licence) of the data the model was evaluated on."""
    data_dir = Path(str(inp.split_meta.get("data_dir") or inp.meta.get("data") or ""))
    if (data_dir / "synthetic.json").is_file():
        return "synthetic demo data", text.SYNTHETIC_SOURCE, text.SYNTHETIC_LICENCE
    return "HAM10000", text.HAM10000_SOURCE, text.HAM10000_LICENCE


def data_section(inp: CardInputs) -> list[str]:
    name, source, licence = dataset_facts(inp)
    counts = inp.split_meta.get("counts") or {}
    rows = [[s, str(c.get("images")), str(c.get("lesions")), str(c.get("melanoma")),
             num(c.get("prevalence"))] for s, c in counts.items() if isinstance(c, dict)]
    fractions = inp.split_meta.get("fractions")
    lines = ["## Data", "", f"- dataset: {name}; source: {source}", f"- licence: {licence}",
             f"- metadata file: `{inp.split_meta.get('metadata_file', '?')}`; split by lesion "
             f"(no lesion in two splits), stratified on melanoma and diagnosis, fractions "
             f"{fractions}, seed {inp.split_meta.get('seed')}",
             f"- evaluated on the `{inp.meta.get('split')}` split; outcome: melanoma (dx = mel) "
             "vs every other diagnosis", ""]
    if rows:
        lines += [md_table(["Split", "Images", "Lesions", "Melanomas", "Prevalence"], rows)]
    return lines


def model_section(inp: CardInputs) -> list[str]:
    shipped = inp.meta.get("shipped") or {}
    lines = ["## Model and distillation", ""]
    for role in ("teacher", "student"):
        cfg = inp.configs.get(role) or {}
        arch = inp.archs.get(role, "not recorded")
        # The config section that trained this checkpoint: the one naming its architecture.
        trained = next((r for r in (role, "student", "teacher")
                        if (cfg.get(r) or {}).get("architecture") == arch), role)
        model, train = cfg.get(trained) or {}, cfg.get("training") or {}
        line = (f"- {role}: `{arch}`, {train.get('epochs', '?')} epochs at most, batch "
                f"{train.get('batch_size', '?')}, seed {train.get('seed', '?')}, loss "
                f"{model.get('loss', '?')}, pretrained {model.get('pretrained', '?')}")
        if role == "student" and trained == "student" and cfg.get("kd"):
            line += (f"; distilled with temperature T = {cfg['kd'].get('temperature')} and "
                     f"alpha = {cfg['kd'].get('alpha')} (weight of the teacher's soft targets)")
        lines.append(line)
    lines.append(f"- input: {inp.meta.get('image_size')} px RGB; output: P(melanoma) after "
                 f"temperature scaling (T = {num(shipped.get('temperature'))}), referral when "
                 f"P >= {num(shipped.get('threshold'), 4)} (set on validation for "
                 f"{num(shipped.get('target_sensitivity'), 2)} sensitivity)")
    return lines


def performance_section(inp: CardInputs) -> list[str]:
    c = inp.clinical
    overall = {r["model"]: r for r in c["groups"] if r["factor"] == "overall"}
    head = ["Model", "Precision", "ROC-AUC [95% CI]", "Within-site AUC", "Sensitivity [95% CI]",
            "Specificity [95% CI]", "ECE"]
    body = [[m["name"], str(m["precision"]), with_ci(overall[m["name"]], "roc_auc"),
             num(m.get("within_site_roc_auc")), with_ci(overall[m["name"]], "sensitivity"),
             with_ci(overall[m["name"]], "specificity"), num(overall[m["name"]].get("ece"))]
            for m in c["models"] if shown(m)]
    m = c["meta"]
    lines = ["## Performance (with 95 % intervals)", "",
             f"{m['split']} split: {m['n']} images, {m['n_pos']} melanomas. ROC-AUC intervals: "
             "DeLong; sensitivity and specificity: Wilson.", "", md_table(head, body)]
    base = c.get("site_baseline")
    if base:
        lines += ["", f"A predictor that sees only the acquisition site reaches ROC-AUC "
                      f"{with_ci(base, 'roc_auc')}; the model's value lies in what it adds "
                      "beyond that (see the within-site AUC)."]
    return lines


def subgroup_section(inp: CardInputs) -> list[str]:
    c = inp.clinical
    ref = c["meta"].get("reference")
    head = ["Factor", "Group", "n", "Melanomas", "ROC-AUC [95% CI]", "Sensitivity [95% CI]",
            "Specificity [95% CI]", "Note"]
    body = [[r["factor"], str(r["value"]), str(r["n"]), str(r["n_pos"]), with_ci(r, "roc_auc"),
             with_ci(r, "sensitivity"), with_ci(r, "specificity"),
             "underpowered" if r["underpowered"] else ""]
            for r in c["groups"] if r["model"] == ref and r["factor"] != "overall"]
    lines = ["## Performance by subgroup", "", f"Float student ({ref}); every model and the "
             "paired artefact-vs-float deltas per group are in `subgroups.md`.", ""]
    lines += [md_table(head, body)] if body else ["No subgroup columns in the metadata."]
    lines += [f"- {n}" for n in c.get("notes", [])]
    return lines


def calibration_section(inp: CardInputs) -> list[str]:
    body = [[m["name"], num(m.get("temperature")), num(m["overall"].get("ece")),
             num(m.get("calibration_slope"), 2), num(m.get("calibration_intercept"), 2)]
            for m in inp.clinical["models"] if shown(m)]
    return ["## Calibration", "", "Temperature scaling fitted on validation. Ideal calibration "
            "slope 1 (below 1: overconfident) and intercept 0 (below 0: overestimates risk). "
            "Reliability diagram: `plots/reliability_overlay.png`; decision curve: "
            "`plots/decision_curve.png` (beside the results).", "",
            md_table(["Model", "T", "ECE", "Calibration slope", "Calibration intercept"], body)]


def per_thousand(prevalence: float, r: Mapping[str, Any]) -> dict[str, float] | None:
    """Referrals and missed melanomas per 1,000 lesions at this prevalence."""
    if r.get("sensitivity") is None or r.get("specificity") is None:
        return None
    mel = 1000 * prevalence
    caught, false_pos = mel * r["sensitivity"], (1000 - mel) * (1 - r["specificity"])
    return {"melanomas": mel, "referred": caught + false_pos, "caught": caught,
            "missed": mel - caught, "false_referrals": false_pos,
            "missed_low": mel * (1 - (r.get("sensitivity_ci_high") or r["sensitivity"])),
            "missed_high": mel * (1 - (r.get("sensitivity_ci_low") or r["sensitivity"]))}


def operating_point_section(inp: CardInputs) -> list[str]:
    c = inp.clinical
    prev = float(c["meta"]["prevalence"])
    overall = {r["model"]: r for r in c["groups"] if r["factor"] == "overall"}
    ref = c["meta"].get("reference")
    lines = ["## Operating point in plain words", ""]
    pt = per_thousand(prev, overall[ref]) if ref in overall else None
    thr = next((m["threshold"] for m in c["models"] if m["name"] == ref), None)
    if pt is not None and thr is not None:
        lines.append(
            f"Per 1,000 lesions like those in the {c['meta']['split']} split (melanoma "
            f"prevalence {100 * prev:.1f} %, about {pt['melanomas']:.0f} melanomas), the float "
            f"student at its shipped threshold (refer when P(melanoma) >= {thr:.3f}) would refer "
            f"about {pt['referred']:.0f} lesions for specialist review, {pt['caught']:.0f} of "
            f"them melanomas, and miss about {pt['missed']:.0f} melanomas (95 % interval from "
            f"its sensitivity: {pt['missed_low']:.0f} to {pt['missed_high']:.0f}); about "
            f"{pt['false_referrals']:.0f} of the referred lesions are not melanomas.")
    body = []
    for m in c["models"]:
        q = per_thousand(prev, overall[m["name"]]) if shown(m) else None
        if q is not None:
            body.append([m["name"], f"{q['referred']:.0f}", f"{q['caught']:.0f}",
                         f"{q['missed']:.0f} [{q['missed_low']:.0f}, {q['missed_high']:.0f}]",
                         f"{q['false_referrals']:.0f}"])
    head = ["Model", "Referred / 1,000", "Melanomas caught", "Melanomas missed [95% CI]",
            "Referred, not melanoma"]
    return [*lines, "", md_table(head, body)]


def _worst_site(c: Mapping[str, Any], name: str) -> str:
    deltas = [(r["delta"]["delta_auc"], r["value"]) for r in c["groups"]
              if r["factor"] == "site" and r["model"] == name and r.get("delta")
              and r["delta"].get("delta_auc") is not None]
    if not deltas:
        return "-"
    d, site = min(deltas)
    return f"{site} {d:+.4f}"


def _gate(results: Mapping[str, Any], name: str) -> str:
    gate = results.get("gate") or {}
    if name in {v.get("name") for v in gate.get("violations", [])}:
        return "fail"
    return "pass" if name in gate.get("checked", []) else "-"


def _repair(repair: Mapping[str, Any] | None) -> str:
    """The manifest entry's repair record in a few words: its rung and float sites kept."""
    if not repair:
        return "none recorded"
    parts = [str(repair[k]) for k in ("rung", "summary", "method") if repair.get(k)]
    sites = repair.get("float_sites")
    if isinstance(sites, list):
        parts.append(f"{len(sites)} float site(s)")
    return "; ".join(parts) if parts else json.dumps(repair, sort_keys=True)[:120]


def quantization_section(inp: CardInputs) -> list[str]:
    c = inp.clinical
    sizes = {r.get("name"): r.get("size_bytes") for r in inp.results.get("rows", [])}
    body = []
    for m in c["models"]:
        row = next(r for r in c["groups"] if r["factor"] == "overall" and r["model"] == m["name"])
        if m["role"] != "artifact" or not row.get("delta"):
            continue
        d, size = row["delta"], sizes.get(m["name"])
        body.append([m["name"], str(m["format"]), str(m["precision"]),
                     "-" if size is None else f"{size / 1e6:.2f}",
                     with_ci(d, "delta_auc", 4, signed=True),
                     num(d.get("delta_sensitivity"), 3, True),
                     num(d.get("delta_specificity"), 3, True), p_value(d.get("mcnemar_p")),
                     str(d.get("melanomas_missed_only_by_model")), _worst_site(c, m["name"]),
                     _gate(inp.results, m["name"]), _repair(m.get("repair"))])
    head = ["Artefact", "Format", "Precision", "Size (MB)", "ΔROC-AUC [paired 95% CI]",
            "ΔSens", "ΔSpec", "McNemar p", "Melanomas missed only by it", "Worst site ΔAUC",
            "Gate", "Repair"]
    return ["## Quantization effects per artefact", "",
            "Against the float student on the same images (DeLong paired interval; McNemar on "
            "the referral decisions). The gate judges the point values.", "",
            md_table(head, body) if body else "No artefacts were scored."]


def loso_section(inp: CardInputs) -> list[str]:
    if not inp.loso:
        return []
    from benchmarks.loso import LOSO_NOTE, loso_table

    return ["## Leave-one-site-out", "", LOSO_NOTE, "", loso_table(inp.loso)]


def underpowered_lines(c: Mapping[str, Any]) -> list[str]:
    """One line per factor naming its groups with too few melanomas (count in brackets)."""
    by_factor: dict[str, list[str]] = {}
    for g in c.get("underpowered", []):
        by_factor.setdefault(g["factor"], []).append(f"{g['value']} ({g['n_pos']})")
    if not by_factor:
        return []
    head = (f"- Underpowered groups in this test split (fewer than "
            f"{c['meta']['min_melanomas']} melanomas; melanomas in brackets):")
    return [head, *[f"  - {f}: {', '.join(v)}" for f, v in by_factor.items()]]


def render_card(inp: CardInputs) -> str:
    name, _, _ = dataset_facts(inp)
    arch = inp.archs.get("student", "model")
    sections = [
        [f"# Model card: {arch} melanoma-vs-rest classifier ({name})", "",
         f"_Generated by `benchmarks.model_card` from `{inp.results_dir}` on "
         f"{datetime.now(UTC).date().isoformat()}; regenerate rather than edit._"],
        ["## Intended use", "", *[f"- {s}" for s in text.INTENDED_USE]],
        ["## Out-of-scope use", "", *[f"- {s}" for s in text.OUT_OF_SCOPE]],
        data_section(inp), model_section(inp), performance_section(inp), subgroup_section(inp),
        calibration_section(inp), operating_point_section(inp), quantization_section(inp),
        loso_section(inp),
        ["## Limitations", "", *[f"- {s}" for s in text.LIMITATIONS],
         *underpowered_lines(inp.clinical)],
        ["## TRIPOD+AI items this card covers", "",
         md_table(["Item", "Topic", "Where"], [list(t) for t in text.TRIPOD_AI]), "",
         text.TRIPOD_NOT_COVERED],
    ]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def write_model_card(path: str | Path) -> list[Path]:
    """Write ``MODEL_CARD.md`` for a results or run folder; copy it beside the manifest."""
    from kd_core.io import atomic_write_text

    inp = gather(Path(path))
    card = inp.card_dir / CARD_NAME
    body = render_card(inp)
    atomic_write_text(card, body)
    written = [card]
    manifest = inp.meta.get("artifacts")
    if manifest and Path(str(manifest)).parent.is_dir():
        copy = Path(str(manifest)).parent / CARD_NAME
        atomic_write_text(copy, body)
        written.append(copy)
    return written
