"""PyTorch eager on CPU: runs a checkpoint ``.pth`` (the float teacher and student).

``checkpoint_entry(path, name)`` describes a checkpoint the way a manifest entry describes an
artefact (NCHW float input, dynamic batch, logits out), so the harness treats every model alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtimes import Runner, RuntimeLoadError, register_runtime

FORMAT = "torch"


def checkpoint_entry(path: Path, name: str | None = None) -> dict[str, Any]:
    """A manifest-like entry for a checkpoint: decision fields, NCHW float I/O, file size."""
    from kd_core.checkpoint import CheckpointError, load_checkpoint

    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise RuntimeLoadError(str(exc)) from None
    size = int(ckpt["preprocessing"]["size"])
    metrics = ckpt.get("metrics") or {}
    return {
        "name": name or path.stem,
        "path": path.name,
        "format": FORMAT,
        "precision": "fp32",
        "arch": ckpt["arch"],
        "bytes": path.stat().st_size,
        "input": {"name": "image", "shape": [-1, 3, size, size], "layout": "NCHW",
                  "dtype": "float32", "quantization": None},
        "output": {"name": "logits", "shape": [-1, int(ckpt["num_classes"])],
                   "dtype": "float32", "quantization": None, "kind": "logits"},
        "preprocessing": dict(ckpt["preprocessing"]),
        "labels": list(ckpt["labels"]),
        "positive_index": int(ckpt["positive_index"]),
        "temperature": float(ckpt["temperature"]),
        "threshold": float(ckpt["threshold"]),
        "target_sensitivity": float(metrics.get("target_sensitivity", 0.95)),
    }


@register_runtime(FORMAT)
class TorchRunner(Runner):
    batch_size = 64

    def _import(self) -> None:
        import torchvision  # noqa: F401  (and torch; kd_core.models imports it lazily)

        import kd_core.models  # noqa: F401

    def _load(self) -> None:
        import torch

        from kd_core.checkpoint import CheckpointError, load_model

        torch.set_num_threads(self.threads)
        self.runtime = f"PyTorch {torch.__version__.split('+')[0]} eager"
        try:
            self.model, _ = load_model(self.path)
        except CheckpointError as exc:
            raise RuntimeLoadError(str(exc)) from None

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            rows = [self.model(torch.from_numpy(x[i : i + self.batch_size])).float()
                    for i in range(0, len(x), self.batch_size)]
        return torch.cat(rows).numpy()
