"""Golden and property tests of kd_core.losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kd_core.losses import (
    class_weights,
    cross_entropy,
    distill_step,
    distillation_loss,
    focal_loss,
    kd_loss,
    make_loss,
)


def _random(n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * 3, torch.randint(0, k, (n,), generator=g)


# --------------------------------------------------------------------------- KD loss


def test_kd_loss_golden_hand_computed() -> None:
    # T = 2. Logits chosen so that softmax(logits / T) is a simple fraction:
    # row 1: teacher [2 ln2, 0, 0] / 2 = [ln2, 0, 0] -> p = [1/2, 1/4, 1/4]
    #        student [0, 0, 0]                       -> q = [1/3, 1/3, 1/3]
    #        KL(p||q) = 1/2 ln(3/2) + 2 * 1/4 ln(3/4) = 1/2 ln(9/8)
    # row 2: teacher [0, 0, 0]                       -> p = [1/3, 1/3, 1/3]
    #        student [0, 2 ln3, 0] / 2 = [0, ln3, 0] -> q = [1/5, 3/5, 1/5]
    #        KL(p||q) = 1/3 (2 ln(5/3) + ln(5/9)) = 1/3 ln(125/81)
    # batchmean * T^2 = 4 * (1/2 ln(9/8) + 1/3 ln(125/81)) / 2 = ln(9/8) + 2/3 ln(125/81)
    #                 = 0.117783... + 2/3 * 0.433864... = 0.40702609074295837
    expected = 0.40702609074295837
    assert expected == pytest.approx(math.log(9 / 8) + 2 / 3 * math.log(125 / 81), abs=1e-15)
    teacher = torch.tensor([[2 * math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2 * math.log(3), 0.0]])
    assert kd_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected, abs=1e-6)


def test_kd_loss_zero_when_equal_and_positive_otherwise() -> None:
    logits, _ = _random(16, 7)
    assert kd_loss(logits, logits.clone(), 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(logits, logits.flip(0), 4.0).item() > 0.01
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(logits, logits, 0.0)


def test_distillation_loss_mixes_terms() -> None:
    s, y = _random(8, 3, seed=1)
    t, _ = _random(8, 3, seed=2)
    hard = make_loss("ce")
    out = distillation_loss(s, t, y, temperature=3.0, alpha=0.25, hard_loss_fn=hard)
    assert set(out) == {"loss", "task_loss", "kd_loss"}
    assert out["task_loss"].item() == pytest.approx(F.cross_entropy(s, y).item(), abs=1e-6)
    assert out["kd_loss"].item() == pytest.approx(kd_loss(s, t, 3.0).item(), abs=1e-6)
    mixed = 0.25 * out["kd_loss"].item() + 0.75 * out["task_loss"].item()
    assert out["loss"].item() == pytest.approx(mixed, abs=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(s, t, y, 3.0, 1.5, hard)


def _net() -> nn.Module:
    # BatchNorm and Dropout behave differently in train and eval mode
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.5),
        nn.Linear(4, 2),
    )


def test_distill_step_grads_only_in_student() -> None:
    torch.manual_seed(0)
    student, teacher = _net(), _net()
    teacher.train()
    images, targets = torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    hard = make_loss("focal")
    out = distill_step(student, teacher, images, targets, 2.0, 0.5, hard)
    assert set(out) == {"loss", "task_loss", "kd_loss", "logits"}
    assert out["loss"].requires_grad and not out["logits"].requires_grad
    assert out["logits"].shape == (4, 2)
    out["loss"].backward()
    assert not teacher.training
    with torch.no_grad():  # the KD term used the eval-mode teacher (running BN stats, no dropout)
        ref = distillation_loss(out["logits"], teacher(images), targets, 2.0, 0.5, hard)
    assert out["kd_loss"].item() == pytest.approx(ref["kd_loss"].item(), abs=1e-6)
    assert all(p.grad is None for p in teacher.parameters())
    grads = [p.grad for p in student.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)


# --------------------------------------------------------------------------- focal / CE


@pytest.mark.parametrize("k", [2, 7])
def test_focal_gamma0_equals_cross_entropy(k: int) -> None:
    logits, y = _random(64, k, seed=k)
    got = focal_loss(logits, y, gamma=0.0, alpha=None)
    assert got.item() == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)
    per = focal_loss(logits, y, gamma=0.0, reduction="none")
    torch.testing.assert_close(per, F.cross_entropy(logits, y, reduction="none"))


def test_focal_per_class_alpha_gamma0_is_weighted_ce_per_sample() -> None:
    logits, y = _random(32, 3, seed=3)
    w = torch.tensor([0.5, 1.0, 2.0])
    per = focal_loss(logits, y, gamma=0.0, alpha=w, reduction="none")
    torch.testing.assert_close(per, F.cross_entropy(logits, y, weight=w, reduction="none"))
    assert focal_loss(logits, y, 0.0, w, "sum").item() == pytest.approx(per.sum().item(), 1e-6)


def test_focal_golden_and_downweights_easy_examples() -> None:
    # logits [0, ln3], target 1: p_t = 3/4; gamma 2: (1/4)^2 * -ln(3/4) = 0.017980129528236306
    logits, y = torch.tensor([[0.0, math.log(3)]]), torch.tensor([1])
    assert focal_loss(logits, y, gamma=2.0).item() == pytest.approx(0.017980129528236306, 1e-6)
    # scalar alpha 0.25 weights the positive class (1) by 0.25 and class 0 by 0.75
    assert focal_loss(logits, y, 2.0, alpha=0.25).item() == pytest.approx(0.25 * 0.0179801295)
    assert focal_loss(logits, torch.tensor([0]), 0.0, alpha=0.25).item() == pytest.approx(
        0.75 * math.log(4), rel=1e-6
    )
    big, yb = _random(64, 4, seed=4)
    assert focal_loss(big, yb, 2.0).item() < F.cross_entropy(big, yb).item()


def test_focal_rejects_bad_arguments() -> None:
    logits, y = _random(4, 3)
    with pytest.raises(ValueError, match="2 classes"):
        focal_loss(logits, y, alpha=0.25)
    with pytest.raises(ValueError, match="weights for 3 classes"):
        focal_loss(logits, y, alpha=torch.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        focal_loss(logits, y, reduction="max")


def test_focal_gradient_finite_for_confident_logits() -> None:
    logits = torch.tensor([[40.0, -40.0], [-3.0, 3.0]], requires_grad=True)
    focal_loss(logits, torch.tensor([0, 1]), gamma=0.5).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_cross_entropy_and_make_loss() -> None:
    logits, y = _random(16, 3, seed=5)
    w = torch.tensor([1.0, 2.0, 3.0])
    ref = F.cross_entropy(logits, y, weight=w).item()
    assert cross_entropy(logits, y, w).item() == pytest.approx(ref, abs=1e-6)
    assert make_loss("ce", weight=w)(logits, y).item() == pytest.approx(ref, abs=1e-6)
    assert make_loss("focal", gamma=0.0)(logits, y).item() == pytest.approx(
        F.cross_entropy(logits, y).item(), abs=1e-6
    )
    assert make_loss("focal", gamma=2.0)(logits, y).item() < F.cross_entropy(logits, y).item()
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")


def test_class_weights_inverse_frequency() -> None:
    # counts [3, 1] -> 1/count [1/3, 1] -> mean 2/3 -> [0.5, 1.5]
    torch.testing.assert_close(class_weights([0, 0, 0, 1], 2), torch.tensor([0.5, 1.5]))
    # class 2 absent -> weight 0; present classes still average 1
    w = class_weights(torch.tensor([0, 1, 1, 1]), 3)
    torch.testing.assert_close(w, torch.tensor([1.5, 0.5, 0.0]))
    with pytest.raises(ValueError, match="outside"):
        class_weights([0, 3], 3)
