"""Model registry: teachers, students and tiny test models behind one ``create_model``.

Each entry builds a plain ``nn.Module`` with a head of ``num_classes``; torchvision architectures
are built with ``torchvision.models.<arch>(num_classes=K)`` so a checkpoint's ``state_dict`` loads
unchanged into torchvision. Tiny models use the same torchvision classes at a fraction of the
width, so tests exercise the real ops (hardswish, squeeze-excite, residual adds) in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from kd_core.cli import BadInput


class PretrainedWeightsError(BadInput):
    """Pretrained weights were asked for but cannot be had (no network, no file, wrong model)."""


class UnknownModelError(BadInput, KeyError):
    """An architecture name that is not registered."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: str  # "teacher", "student" or "test"
    build: Callable[[int], nn.Module]
    torchvision_weights: str | None = None  # name of the torchvision weights enum
    default_lr: float = 2e-3  # one-cycle max lr when training from scratch


MODELS: dict[str, ModelSpec] = {}


def register_model(
    name: str, role: str, weights: str | None = None, default_lr: float = 2e-3
) -> Callable[[Callable[[int], nn.Module]], Callable[[int], nn.Module]]:
    def deco(fn: Callable[[int], nn.Module]) -> Callable[[int], nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        MODELS[name] = ModelSpec(name, role, fn, weights, default_lr)
        return fn

    return deco


def list_models(role: str | None = None) -> list[str]:
    return sorted(n for n, s in MODELS.items() if role is None or s.role == role)


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UnknownModelError(
            f"unknown architecture {name!r}; registered: {', '.join(list_models())}")
    return MODELS[name]


def _torchvision(arch: str, num_classes: int) -> nn.Module:
    import torchvision

    model: nn.Module = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    return model


for _arch, _weights in [("resnet18", "ResNet18_Weights"), ("resnet34", "ResNet34_Weights"),
                        ("resnet50", "ResNet50_Weights")]:
    register_model(_arch, "teacher", _weights, default_lr=2e-3)(partial(_torchvision, _arch))
for _arch, _weights in [("mobilenet_v3_small", "MobileNet_V3_Small_Weights"),
                        ("mobilenet_v3_large", "MobileNet_V3_Large_Weights")]:
    register_model(_arch, "student", _weights, default_lr=3e-3)(partial(_torchvision, _arch))


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


def _imagenet_state_dict(spec: ModelSpec) -> dict[str, torch.Tensor]:
    if spec.torchvision_weights is None:
        raise PretrainedWeightsError(f"{spec.name} has no ImageNet weights; use --pretrained none")
    import torchvision

    weights = getattr(torchvision.models, spec.torchvision_weights).IMAGENET1K_V1
    try:
        state: dict[str, torch.Tensor] = weights.get_state_dict(progress=True, check_hash=True)
    except Exception as exc:
        raise PretrainedWeightsError(
            f"cannot fetch ImageNet weights for {spec.name} from {weights.url} ({exc}). "
            "Without network access, train from scratch with --pretrained none, or download the "
            "file elsewhere and pass its path: --pretrained /path/to/"
            f"{Path(weights.url).name}"
        ) from None
    return state


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
    model.load_state_dict(usable, strict=False)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
