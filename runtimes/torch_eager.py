"""PyTorch eager on CPU: runs a checkpoint ``.pth`` (the float teacher and student).

``checkpoint_entry(path, name)`` describes a checkpoint the way a manifest entry describes an
artefact (NCHW float input, dynamic batch, logits out), so the harness treats every model alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kd_core.data.transforms import Preprocessing
from kd_core.deploy import ManifestEntry
from runtimes import Runner, RuntimeLoadError, register_runtime

FORMAT = "torch"


def checkpoint_entry(path: Path, name: str | None = None) -> ManifestEntry:
    """A manifest entry for a checkpoint (NCHW float input, dynamic batch, logits out), with
    its decision and dataset; ``extra["arch"]`` names its architecture."""
    from kd_core.checkpoint import CheckpointError, decision_of, load_checkpoint

    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
        decision = decision_of(ckpt, path)
    except CheckpointError as exc:
        raise RuntimeLoadError(str(exc)) from None
    prep = Preprocessing.from_dict(ckpt["preprocessing"])
    dataset = ckpt.get("dataset")
    return ManifestEntry(
        name=name or path.stem, path=path.name, format=FORMAT, precision="fp32",
        input={"name": "image", "shape": [-1, 3, prep.size, prep.size], "layout": "NCHW",
               "dtype": "float32", "quantization": None},
        output={"name": "logits", "shape": [-1, int(ckpt["num_classes"])], "dtype": "float32",
                "quantization": None, "kind": "logits"},
        decision=decision, preprocessing=prep, bytes=path.stat().st_size,
        dataset=dataset if isinstance(dataset, str) else None,
        extra={"arch": str(ckpt["arch"])})


@register_runtime(FORMAT, "PyTorch eager")
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
