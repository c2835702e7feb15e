"""Training losses for the teacher and the distilled student. Pure functions on torch tensors.

All losses take raw ``logits`` (N x K) and integer ``targets`` (N,) and return a scalar tensor.
They compute in float32 even when the logits come out of a bf16/fp16 autocast region.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean cross-entropy; with ``weight`` it is the weighted mean, as ``F.cross_entropy``."""
    if weight is not None:
        weight = weight.to(device=logits.device, dtype=torch.float32)
    return F.cross_entropy(logits.float(), targets, weight=weight)


def focal_loss(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 2.0,
    alpha: float | Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Softmax focal loss ``-alpha_t * (1 - p_t)**gamma * log(p_t)`` (Lin et al. 2017).

    ``alpha``: None (no weighting); a float, the weight of class 1 in a binary problem (class 0
    gets ``1 - alpha``); or a per-class tensor of K weights. ``reduction``: "mean" (plain mean
    over samples, also with ``alpha``), "sum" or "none". With ``gamma=0`` and ``alpha=None``
    it equals ``F.cross_entropy``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"focal_loss: unknown reduction {reduction!r}")
    if gamma < 0:
        raise ValueError(f"focal_loss: gamma must be >= 0, got {gamma}")
    log_p = F.log_softmax(logits.float(), dim=-1)
    log_pt = log_p.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    loss = -log_pt
    if gamma != 0:
        pt = log_pt.exp()
        loss = (1.0 - pt).clamp(min=0.0).pow(gamma) * loss
    if alpha is not None:
        loss = _alpha_t(alpha, targets, logits.shape[-1], logits.device) * loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def _alpha_t(alpha: float | Tensor, targets: Tensor, k: int, device: torch.device) -> Tensor:
    if isinstance(alpha, Tensor):
        if alpha.numel() != k:
            raise ValueError(f"focal_loss: alpha has {alpha.numel()} weights for {k} classes")
        return alpha.to(device=device, dtype=torch.float32)[targets.long()]
    if k != 2:
        raise ValueError(f"focal_loss: a scalar alpha needs 2 classes, got {k}; pass a tensor")
    a = torch.tensor([1.0 - float(alpha), float(alpha)], device=device)
    return a[targets.long()]


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton KD term: ``T^2 * KL(softmax(teacher/T) || softmax(student/T))``, batch mean."""
    if temperature <= 0:
        raise ValueError(f"kd_loss: temperature must be > 0, got {temperature}")
    t = float(temperature)
    log_q = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * (t * t)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
    hard_loss_fn: LossFn,
) -> dict[str, Tensor]:
    """``alpha * kd + (1 - alpha) * hard``; returns {loss, task_loss, kd_loss} tensors."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"distillation_loss: alpha must be in [0, 1], got {alpha}")
    task = hard_loss_fn(student_logits, targets)
    kd = kd_loss(student_logits, teacher_logits, temperature)
    return {"loss": alpha * kd + (1.0 - alpha) * task, "task_loss": task, "kd_loss": kd}


def distill_step(
    student: nn.Module,
    teacher: nn.Module,
    images: Tensor,
    targets: Tensor,
    temperature: float,
    alpha: float,
    hard_loss_fn: LossFn,
) -> dict[str, Tensor]:
    """One KD forward: teacher in eval mode without grad, student with grad.

    Returns {loss, task_loss, kd_loss, logits}; ``loss`` keeps the graph for ``backward``,
    ``logits`` (the student's) are detached. The teacher is left in eval mode.
    """
    teacher.eval()
    with torch.no_grad():
        teacher_logits = teacher(images)
    student_logits = student(images)
    out = distillation_loss(
        student_logits, teacher_logits, targets, temperature, alpha, hard_loss_fn
    )
    out["logits"] = student_logits.detach()
    return out


def class_weights(targets: Tensor | np.ndarray | Sequence[int], num_classes: int) -> Tensor:
    """Inverse-frequency class weights (float32, K), normalised to mean 1 over present classes.

    Classes absent from ``targets`` get weight 0 (they never occur as a target anyway).
    """
    t = torch.as_tensor(np.asarray(targets), dtype=torch.long).flatten()
    if t.numel() == 0:
        raise ValueError("class_weights: no targets")
    if int(t.min()) < 0 or int(t.max()) >= num_classes:
        raise ValueError(f"class_weights: targets outside [0, {num_classes})")
    counts = torch.bincount(t, minlength=num_classes).double()
    present = counts > 0
    w = torch.zeros(num_classes, dtype=torch.float64)
    w[present] = 1.0 / counts[present]
    w[present] = w[present] / w[present].mean()
    return w.float()


def make_loss(name: str, gamma: float = 2.0, weight: Tensor | None = None) -> LossFn:
    """The hard-label loss named in the config: "focal" (``weight`` as alpha) or "ce"."""
    if name == "focal":
        return lambda logits, targets: focal_loss(logits, targets, gamma=gamma, alpha=weight)
    if name == "ce":
        return lambda logits, targets: cross_entropy(logits, targets, weight=weight)
    raise ValueError(f"make_loss: unknown loss {name!r}; use 'focal' or 'ce'")
