"""Calibrate once per model and image set: candidates that differ in their float sites reuse it.

During PT2E calibration every observer sees float activations (observers pass their input
through unchanged), so what one ends up holding depends only on the float graph, the calibration
images in their order, the value it observes and its own settings: not on which other sites are
annotated. The repair ladder's rung 3 tries a few plans on one calibration set; each would
calibrate again (4,096 images: about 15 s a try, MobileNetV3-Small at 96 px). A memo in this
process keeps a clone of every calibrated observer under those four; a prepared model whose
observers are all there gets clones instead of a calibration pass, and converts to the same
quantized model bit for bit (``tests/test_int8_observers.py``). Observers it has not seen (a
float site's neighbours observe other values) calibrate as before, the others passing their
input through.

ONNX Runtime's calibration depends on the graph and the images alone (its ranges are computed
for every quantizable tensor, whatever ``nodes_to_exclude`` says): ``onnx_cache_path`` names its
own calibration cache (``quantize_static(calibration_cache_path=...)``) by the same kind of key.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)
MEMO_SIZE = 8  # calibrations kept per process: a format's ladder makes two or three
_MEMO: OrderedDict[str, dict[tuple[str, ...], torch.nn.Module]] = OrderedDict()
_ONNX_CACHE: list[tempfile.TemporaryDirectory[str]] = []


def model_key(model: torch.nn.Module, key: str, *data: torch.Tensor) -> str:
    """A digest of what a calibration (or a QAT fine-tune) of ``model`` depends on besides each
    observer's own settings: ``key`` (the images by name, or how it runs), the model's code
    (an exported graph's, else its module tree) and every tensor it reads, and ``data`` (the
    images themselves, where no name is at hand)."""
    h = hashlib.sha256(key.encode())
    h.update((model.code if isinstance(model, torch.fx.GraphModule) else repr(model)).encode())
    for name, t in [*_tensors(model), *(("data", d) for d in data)]:
        h.update(name.encode())
        h.update(t.detach().cpu().clone().numpy().tobytes())  # a copy: numpy pins storage
    return h.hexdigest()


def _tensors(model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every tensor the model reads: parameters, buffers (persistent or not) and constants
    held as plain attributes."""
    found = [*model.named_parameters(), *model.named_buffers()]
    for prefix, module in model.named_modules():
        found += [(f"{prefix}.{k}", v) for k, v in vars(module).items()
                  if isinstance(v, torch.Tensor)]
    return found


def _is_observer(module: Any) -> bool:
    from torch.ao.quantization.observer import ObserverBase as AoObserver
    from torchao.quantization.pt2e.observer import ObserverBase

    return isinstance(module, (ObserverBase, AoObserver))


def _settings(module: torch.nn.Module) -> str:
    """An observer's class, attributes and (not yet calibrated) buffers."""
    attrs = sorted((k, repr(v)) for k, v in vars(module).items()
                   if not k.startswith("_") and k != "training")
    h = hashlib.sha256(repr((type(module).__qualname__, attrs)).encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().clone().numpy().tobytes())  # a copy: numpy pins storage
    return h.hexdigest()


def observer_keys(prepared: torch.fx.GraphModule
                  ) -> dict[tuple[str, ...], tuple[torch.nn.Module, list[str]]]:
    """Each observer of a prepared (not yet calibrated) model by what it observes (the values,
    through any observer in between, of every call) and its settings, with its module names."""
    found: dict[int, tuple[torch.nn.Module, list[str], list[str]]] = {}
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        module = prepared.get_submodule(str(node.target))
        if not _is_observer(module):
            continue
        source = node.args[0]
        while (isinstance(source, torch.fx.Node) and source.op == "call_module"
               and _is_observer(prepared.get_submodule(str(source.target)))):
            source = source.args[0]
        _, names, sources = found.setdefault(id(module), (module, [], []))
        names.append(str(node.target))
        sources.append(source.name if isinstance(source, torch.fx.Node) else repr(source))
    return {(*sorted(sources), _settings(module)): (module, names)
            for module, names, sources in found.values()}


def calibrate(prepared: torch.fx.GraphModule, batches: Iterable[torch.Tensor],
              key: str | None) -> int | None:
    """Calibrate ``prepared`` on ``batches``; with a calibration ``key`` (``model_key``), the
    observers an earlier calibration on it has seen get clones of theirs and only the others
    observe. Returns how many batches ran, or None when no observer needed them."""
    observers = observer_keys(prepared) if key is not None else {}
    memo = _MEMO.setdefault(key, {}) if key is not None else {}
    if key is not None:
        _MEMO.move_to_end(key)
        while len(_MEMO) > MEMO_SIZE:
            _MEMO.popitem(last=False)
    seen = [k for k in observers if k in memo]
    if observers and len(seen) == len(observers):
        _install(prepared, observers, memo, seen)
        log.info("calibration reused for all %d observers", len(observers))
        return None
    for k in seen:  # pass-through while the others observe
        for name in observers[k][1]:
            setattr(prepared, name, torch.nn.Identity())
    n = 0
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
            n += 1
    _install(prepared, observers, memo, seen)
    if n:
        memo.update({k: copy.deepcopy(m) for k, (m, _) in observers.items() if k not in memo})
    if seen:
        log.info("calibration reused for %d of %d observers", len(seen), len(observers))
    return n


def _install(prepared: torch.fx.GraphModule,
             observers: dict[tuple[str, ...], tuple[torch.nn.Module, list[str]]],
             memo: dict[tuple[str, ...], torch.nn.Module], keys: list[tuple[str, ...]]) -> None:
    for k in keys:
        clone = copy.deepcopy(memo[k])  # shared by every call of the observer, as prepared
        for name in observers[k][1]:
            setattr(prepared, name, clone)


def onnx_cache_path(model_path: Path, method: str, chunk: int | None, calib_key: str) -> Path:
    """Where ONNX Runtime keeps the calibration of ``model_path`` (its bytes) with ``method``
    in chunks of ``chunk`` images on ``calib_key``'s images: a folder that lives as long as
    this process."""
    if not _ONNX_CACHE:
        _ONNX_CACHE.append(tempfile.TemporaryDirectory(prefix="edgekd-calib-"))
    h = hashlib.sha256(f"{method}|{chunk}|{calib_key}|".encode())
    h.update(Path(model_path).read_bytes())
    return Path(_ONNX_CACHE[0].name) / f"{h.hexdigest()}.json"
