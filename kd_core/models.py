"""Model registry: teachers, students and tiny test models behind one ``create_model``.

Every classification architecture of torchvision is registered by its name
(``kd_core.model_names.TORCHVISION``), built with ``torchvision.models.get_model(arch,
num_classes=K)`` so a checkpoint's ``state_dict`` loads unchanged into torchvision, with
torchvision's ImageNet weights on request. Tiny models use the same torchvision classes at a
fraction of the width, so tests exercise the real ops (hardswish, squeeze-excite, residual adds)
in seconds. ``timm:<name>`` builds a timm model (the ``timm`` extra), registered on first use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kd_core.cli import BadInput
from kd_core.model_names import FIXED_INPUT, MIN_INPUT, TIMM_PREFIX, TORCHVISION

StateDict = dict[str, torch.Tensor]


class PretrainedWeightsError(BadInput):
    """Pretrained weights were asked for but cannot be had (no network, no file, wrong model)."""


class UnknownModelError(BadInput, KeyError):
    """An architecture name that is not registered."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str  # "teacher", "student", "any" or "test"
    build: Callable[[int], nn.Module]
    imagenet: Callable[[], StateDict] | None = None  # fetches the ImageNet weights
    default_lr: float = 2e-3  # one-cycle max lr when training from scratch
    input_size: int | None = None  # the only input size it takes, if it has one
    min_size: int = 1  # smallest input size that survives its downsampling

    def check_size(self, size: int) -> str | None:
        """Why ``size`` px inputs do not suit this architecture, or None."""
        if self.input_size is not None and size != self.input_size:
            return f"{self.name} takes {self.input_size} px images only"
        if size < self.min_size:
            return f"{self.name} needs images of at least {self.min_size} px"
        return None


MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str, role: str, weights: Callable[[], StateDict] | None = None,
    default_lr: float = 2e-3, **facts: int | None,
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    def deco(fn: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelSpec(name, role, fn, weights, default_lr, **facts)  # type: ignore[arg-type]
        return fn

    return deco


def list_models(role: str | None = None) -> list[str]:
    return sorted(n for n, s in MODELS.items() if role is None or s.role == role)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS and name.startswith(TIMM_PREFIX):
        _register_timm(name)
    if name not in MODELS:
        raise UnknownModelError(
            f"unknown architecture {name!r}; registered: {', '.join(list_models())} "
            f"(or {TIMM_PREFIX}NAME with timm installed)")
    return MODELS[name]


def is_known(name: str) -> bool:
    """``name`` builds (a timm name only when timm is installed and knows it)."""
    try:
        get_spec(name)
    except UnknownModelError:
        return False
    return True


def _torchvision(arch: str, num_classes: int) -> nn.Module:
    import torchvision

    extra = {"aux_logits": False, "init_weights": True} if arch in (
        "googlenet", "inception_v3") else {}
    model: nn.Module = torchvision.models.get_model(arch, weights=None,
                                                    num_classes=num_classes, **extra)
    return model


def _torchvision_imagenet(arch: str) -> StateDict:
    """torchvision's ImageNet weights of ``arch`` (IMAGENET1K_V1 where there is one), fetched
    once into the torch hub cache; no network is a ``PretrainedWeightsError`` saying what to do."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    weights = getattr(enum, "IMAGENET1K_V1", None) or next(iter(enum))
    try:
        state: StateDict = weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"cannot fetch ImageNet weights for {arch} from {weights.url} ({exc}). "
            "Without network access, train from scratch with --pretrained none, or download the "
            "file elsewhere and pass its path: --pretrained /path/to/"
            f"{Path(weights.url).name}"
        ) from None
    return state


_ROLES = {"resnet18": "teacher", "resnet34": "teacher", "resnet50": "teacher",
          "mobilenet_v3_small": "student", "mobilenet_v3_large": "student"}
for _arch in TORCHVISION:
    register_model(_arch, _ROLES.get(_arch, "any"), partial(_torchvision_imagenet, _arch),
                   default_lr=3e-3 if _arch.startswith("mobilenet") else 2e-3,
                   input_size=FIXED_INPUT.get(_arch), min_size=MIN_INPUT.get(_arch, 1)
                   )(partial(_torchvision, _arch))


def _register_timm(name: str) -> None:
    """Register ``timm:<model>`` if timm is installed and knows the model."""
    model = name[len(TIMM_PREFIX):]
    try:
        import timm
    except ImportError:
        raise UnknownModelError(f"{name}: timm is not installed (pip install timm, or the "
                                "project's timm extra)") from None
    if not model or not timm.is_model(model):
        raise UnknownModelError(f"{name}: timm has no model {model!r} (timm.list_models() "
                                "lists them)")

    def build(num_classes: int) -> nn.Module:
        built: nn.Module = timm.create_model(model, pretrained=False, num_classes=num_classes)
        return built

    def imagenet() -> StateDict:
        try:
            state: StateDict = timm.create_model(model, pretrained=True).state_dict()
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise PretrainedWeightsError(
                f"cannot fetch pretrained weights for {name} ({first}). Without network "
                "access, train from scratch with --pretrained none, or pass a local weights "
                "file: --pretrained PATH") from None
        return state

    register_model(name, "any", imagenet)(build)


@register_model("tiny_resnet", "test")
def tiny_resnet(num_classes: int) -> nn.Module:
    """A two-stage ResNet (BasicBlock, 8 and 16 channels): a teacher for tests."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=num_classes, width_per_group=64)
    # Shrink every stage: rebuild with narrow widths through the public constructor pieces.
    model.inplanes = 8
    model.conv1 = nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(8)
    model.layer1 = model._make_layer(BasicBlock, 8, 1)
    model.layer2 = model._make_layer(BasicBlock, 16, 1, stride=2)
    model.layer3 = model._make_layer(BasicBlock, 16, 1, stride=2)
    model.layer4 = model._make_layer(BasicBlock, 16, 1, stride=2)
    model.fc = nn.Linear(16, num_classes)
    return model


@register_model("tiny_mobilenet", "test")
def tiny_mobilenet(num_classes: int) -> nn.Module:
    """MobileNetV3 at toy width: hardswish, hardsigmoid squeeze-excite, residual adds."""
    from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

    cfg = partial(InvertedResidualConfig, width_mult=1.0)
    setting = [
        cfg(8, 3, 8, 8, True, "RE", 2, 1),
        cfg(8, 3, 24, 12, False, "RE", 2, 1),
        cfg(12, 3, 32, 12, False, "RE", 1, 1),
        cfg(12, 5, 48, 16, True, "HS", 2, 1),
        cfg(16, 5, 64, 16, True, "HS", 1, 1),
    ]
    return MobileNetV3(setting, last_channel=64, num_classes=num_classes)


def create_model(arch: str, num_classes: int = 2, pretrained: str = "none") -> nn.Module:
    """Build ``arch`` with a ``num_classes`` head. ``pretrained``: "none", "imagenet" or a file.

    "imagenet" loads torchvision's weights (downloaded once into the torch hub cache) for every
    layer but the classifier head. A file path loads a state_dict (``torch.load(weights_only=True)``
    or safetensors), for example ImageNet weights saved where the network is unreachable.
    """
    spec = get_spec(arch)
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    model = spec.build(num_classes)
    if pretrained in ("none", "", None):
        return model
    if pretrained == "imagenet":
        state = _imagenet_state_dict(spec)
    else:
        state = _state_dict_from_file(Path(pretrained))
    _load_backbone(model, state, source=pretrained)
    return model


def _imagenet_state_dict(spec: ModelSpec) -> StateDict:
    if spec.imagenet is None:
        raise PretrainedWeightsError(f"{spec.name} has no ImageNet weights; use --pretrained none")
    return spec.imagenet()


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedWeightsError(f"--pretrained {path}: weights file not found (use none, "
                                     "imagenet or a weights file)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path)))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PretrainedWeightsError(f"{path}: not a weights-only torch file ({exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise PretrainedWeightsError(f"{path}: expected a state_dict (a dict of tensors)")
    return obj


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor whose name and shape match; the new head keeps its fresh init."""
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(usable) < len(own) // 2:
        raise PretrainedWeightsError(
            f"{source}: only {len(usable)} of {len(own)} tensors match this architecture; "
            "is it the right model?"
        )
    load_weights(model, usable, strict=False)


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool = True
                 ) -> Any:
    """``model.load_state_dict(state)`` for a plain dict of tensors too (a checkpoint's, a
    safetensors file's): modules that read the state dict's version metadata (torchvision's
    MNASNet) get the model's own."""
    if getattr(state, "_metadata", None) is None:
        ordered: Any = OrderedDict(state)
        ordered._metadata = getattr(model.state_dict(), "_metadata", None)
        state = ordered
    return model.load_state_dict(state, strict=strict)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
