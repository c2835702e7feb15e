"""Helpers for the clinical tests: synthetic data with an acquisition-site column, and a small
run folder (tiny checkpoints, real ONNX fp32 + INT8 exports, the real harness) to evaluate."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

SITES = ("alpha", "beta", "gamma", "delta")  # delta gets no melanoma


def site_of(lesion_id: str, melanoma: bool) -> str:
    """A deterministic site per lesion; melanomas never come from ``delta``."""
    h = int(hashlib.sha256(lesion_id.encode()).hexdigest()[:8], 16)
    return SITES[h % 3] if melanoma else SITES[h % 4]


def sited_metadata(data_dir: Path, out: Path) -> Path:
    """``data_dir``'s metadata plus a Dataverse-style ``dataset`` column, written to ``out``."""
    with (data_dir / "HAM10000_metadata.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows, columns = list(reader), [*(reader.fieldnames or []), "dataset"]
    mel = {r["lesion_id"] for r in rows if r["dx"] == "mel"}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "dataset": site_of(r["lesion_id"], r["lesion_id"] in mel)})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(buf.getvalue(), encoding="utf-8", newline="")
    return out


def clinical_run(run: Path, data_dir: Path) -> Path:
    """A pipeline-shaped run folder: ``data/prepared`` (with sites), ``teacher/``, ``student/``
    (checkpoints and config.json), ``export/`` (ONNX fp32 and INT8) and ``benchmark/`` written
    by ``benchmarks.run`` (which writes the clinical outputs and the model card)."""
    from bench_support import export, student_checkpoint

    from benchmarks.run import main as bench_main
    from kd_core.config import Config, KDConfig, StudentConfig, TeacherConfig, save_config
    from kd_core.data.ham10000 import prepare

    metadata = sited_metadata(data_dir, run / "data" / "metadata_with_sites.csv")
    prepared = prepare(data_dir, run / "data" / "prepared", seed=42, metadata=str(metadata),
                       verbose=False)
    (run / "pipeline_profile.json").write_text("{}\n")  # what makes it a pipeline run folder
    student = student_checkpoint(run / "student" / "best.pth", prepared)
    teacher = student_checkpoint(run / "teacher" / "best.pth", prepared, "tiny_resnet", 40, 3)
    save_config(Config(student=StudentConfig(architecture="tiny_mobilenet"),
                       kd=KDConfig(temperature=2.0, alpha=0.5)), run / "student" / "config.json")
    save_config(Config(teacher=TeacherConfig(architecture="tiny_resnet")),
                run / "teacher" / "config.json")
    export(student, run / "export", ("onnx",), ("fp32", "int8"), calib=prepared)
    rc = bench_main(["--artifacts", str(run / "export"), "--student-ckpt", str(student),
                     "--teacher-ckpt", str(teacher), "--data-dir", str(prepared),
                     "--out", str(run / "benchmark"), "--no-latency", "--bootstrap", "50",
                     "--no-gate"])
    assert rc == 0
    return run
