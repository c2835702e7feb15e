"""Any torchvision classifier by name (and timm:<name> with timm installed): the name list matches
torchvision, models build and run at small sizes, ImageNet weights fail clearly offline and load
from a local file, and sizes an architecture cannot take are refused before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kd_core.model_names import TORCHVISION
from kd_core.models import (
    PretrainedWeightsError,
    UnknownModelError,
    create_model,
    get_spec,
    is_known,
    list_models,
)


def test_the_name_list_is_torchvisions_classifiers() -> None:
    import torchvision

    assert list(TORCHVISION) == torchvision.models.list_models(module=torchvision.models)
    assert set(TORCHVISION) <= set(list_models())


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_b0", "regnet_x_400mf",
                                  "shufflenet_v2_x0_5", "mnasnet0_5", "squeezenet1_1",
                                  "googlenet"])
def test_architectures_build_run_and_load_into_torchvision(arch: str) -> None:
    import torchvision

    torch.manual_seed(0)
    model = create_model(arch, num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 40, 40))
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    plain = torchvision.models.get_model(arch, weights=None, num_classes=3,
                                         **({"aux_logits": False} if arch == "googlenet" else {}))
    plain.load_state_dict(model.state_dict())  # the checkpoint promise: loads unchanged


def test_imagenet_weights_offline_say_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as err:
        create_model("mnasnet0_5", 2, pretrained="imagenet")
    msg = str(err.value)
    assert "mnasnet0_5" in msg and "--pretrained none" in msg and "--pretrained /path/to/" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_imagenet_style_weights_load_the_backbone(suffix: str, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = create_model("mnasnet0_5", num_classes=1000)  # an ImageNet-shaped head
    file = tmp_path / f"w{suffix}"
    state = source.state_dict()
    torch.save(state, file) if suffix == ".pth" else save_file(state, str(file))
    model = create_model("mnasnet0_5", num_classes=2, pretrained=str(file))
    for name, value in model.state_dict().items():
        if not name.startswith("classifier"):
            assert torch.equal(value, state[name]), name
    assert model.state_dict()["classifier.1.weight"].shape == (2, 1280)


def test_unknown_and_unfit_architectures_are_refused() -> None:
    assert not is_known("resnet9000") and is_known("convnext_tiny")
    with pytest.raises(UnknownModelError, match="unknown architecture 'resnet9000'"):
        get_spec("resnet9000")
    assert get_spec("vit_b_16").check_size(32) == "vit_b_16 takes 224 px images only"
    assert get_spec("inception_v3").check_size(64) is not None
    assert get_spec("mobilenet_v2").check_size(32) is None


def test_timm_models_by_name() -> None:
    timm = pytest.importorskip("timm")
    assert not is_known("timm:no_such_model")
    model = create_model("timm:test_efficientnet", num_classes=3).eval()
    reference = timm.create_model("test_efficientnet", pretrained=False, num_classes=3)
    reference.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_timm_without_timm_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(UnknownModelError, match="timm is not installed"):
        get_spec("timm:resnet18")


def test_a_checkpoint_of_any_architecture_rebuilds(tmp_path: Path) -> None:
    """MNASNet reads its state dict's version metadata, which a checkpoint's plain dict of
    tensors lacks: it still loads."""
    from kd_core.checkpoint import build_checkpoint, load_model, save_checkpoint
    from kd_core.data.transforms import Preprocessing

    model = create_model("mnasnet0_5", num_classes=4).eval()
    path = save_checkpoint(build_checkpoint(model, "mnasnet0_5", ["a", "b", "c", "d"],
                                            Preprocessing(size=32), threshold=None,
                                            positive=None), tmp_path / "m.pth")
    loaded, ckpt = load_model(path)
    assert ckpt["positive_index"] is None and ckpt["threshold"] is None
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
