"""Losses of class-incremental multi-label training (``docs/method.md``, section *Training*).

Every reduction is written out explicitly (``reduction="mean"`` or a hand-written sum/mean), never
left to a framework default.

- :func:`bce_loss`: BCE-with-logits with a ``pos_weight``, mean over all elements.
- :func:`masked_bce_loss`: the same over each clip's known entries, then over clips.
- :func:`feature_distillation_loss`: ``1 - cos`` between whole-batch flattened embeddings.
- :func:`output_distillation_kl`: the reference's KL with softmax across classes, averaged over
  every element (batch x classes), times ``T**2``.
- :func:`output_distillation_bce`: a multi-label alternative (per-class sigmoid targets).
- :func:`incremental_loss`: ``L_BCE + w_FD * L_FD + lambda * w_kd * L_OD`` with the adaptive
  ``lambda = base * (n_seen / n_new) ** exponent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IncrementalLossSettings",
    "adaptive_weight",
    "bce_loss",
    "feature_distillation_loss",
    "incremental_loss",
    "output_distillation_bce",
    "output_distillation_kl",
    "masked_bce_loss",
    "pos_weight_by_group",
    "pos_weight_from_labels",
]


def pos_weight_from_labels(labels: Tensor) -> Tensor:
    """Scalar ``#negative entries / #positive entries`` of a 0/1 ``(n_clips, n_classes)`` matrix."""
    if labels.dim() != 2:
        raise ValueError(f"labels must be (n_clips, n_classes), got shape {tuple(labels.shape)}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must contain only 0 and 1")
    n_pos = int((labels == 1).sum().item())
    if n_pos == 0:
        raise ValueError("labels have no positive entry: pos_weight is undefined")
    n_neg = labels.numel() - n_pos
    return torch.tensor(n_neg / n_pos, dtype=torch.float32)


def pos_weight_by_group(targets: Tensor, groups: Sequence[slice]) -> Tensor:
    """One ``pos_weight`` per column group, spread over its columns: ``(n_classes,)``.

    ``targets``: ``(n_clips, n_classes)`` with 0/1 where a clip is labelled for a class and any
    other value (the training code's ``UNKNOWN``, -1) where it is not (no BCE term). For each group of columns (e.g. the old classes
    and the new ones), the weight is ``#negative / #positive`` over that group's KNOWN entries,
    so it means the same whatever other columns a method trains: phase 0 (one group) and the
    new classes of independent learning get exactly the reference's value (its phase's own
    training labels). A group with no positive entry gets 1: it has no positive term for the
    weight to multiply (e.g. finetune's old columns, all 0).
    """
    if targets.dim() != 2:
        raise ValueError(f"targets must be (n_clips, n_classes), got shape {tuple(targets.shape)}")
    weights = torch.ones(targets.shape[1], dtype=torch.float32)
    covered = torch.zeros(targets.shape[1], dtype=torch.bool)
    for group in groups:
        block = targets[:, group]
        if covered[group].any():
            raise ValueError(f"column groups overlap at {group}")
        covered[group] = True
        n_pos = int((block == 1).sum())
        n_neg = int((block == 0).sum())
        if n_pos:
            weights[group] = n_neg / n_pos
    if not bool(covered.all()):
        raise ValueError("the column groups must cover every column")
    return weights


def bce_loss(logits: Tensor, targets: Tensor, pos_weight: Tensor | float) -> Tensor:
    """BCE-with-logits with a ``pos_weight`` (a scalar, or one per class), mean over all elements.

    ``logits`` and ``targets``: ``(batch, n_classes)``.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    return F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=_pos_weight(pos_weight, logits), reduction="mean"
    )


def _pos_weight(pos_weight: Tensor | float, logits: Tensor) -> Tensor:
    """``pos_weight`` as a 0-d tensor or a ``(n_classes,)`` one on the logits' device."""
    pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    if pw.numel() == 1:
        return pw.reshape(())
    if pw.dim() != 1 or pw.numel() != logits.shape[1]:
        raise ValueError(f"pos_weight must be a scalar or ({logits.shape[1]},), got shape {tuple(pw.shape)}")
    return pw


def masked_bce_loss(logits: Tensor, targets: Tensor, mask: Tensor, pos_weight: Tensor | float) -> Tensor:
    """BCE-with-logits over the entries where ``mask`` is 1: the mean over each clip's known
    entries, then the mean over the clips that have any.

    Entries outside the mask (labels a clip does not have in this phase: old classes under
    independent learning, classes of other phases for a replayed exemplar) get no gradient.
    Every clip weighs the same whatever number of classes it is labelled for (an exemplar of
    phase 0, labelled for 30 classes, and a new clip, labelled for 5). With every entry known
    it is the plain mean over all elements. ``pos_weight``: a scalar or one value per class
    ``(n_classes,)``.
    """
    if not (logits.shape == targets.shape == mask.shape):
        raise ValueError(f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and mask "
                         f"{tuple(mask.shape)} differ")
    elementwise = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits.dtype), pos_weight=_pos_weight(pos_weight, logits),
        reduction="none")  # (batch, n_classes)
    m = mask.to(logits.dtype)
    per_clip_known = m.sum(dim=1)  # (batch,)
    per_clip = (elementwise * m).sum(dim=1) / per_clip_known.clamp(min=1.0)  # (batch,)
    has_known = (per_clip_known > 0).to(logits.dtype)
    return (per_clip * has_known).sum() / has_known.sum().clamp(min=1.0)


def feature_distillation_loss(old_embedding: Tensor, new_embedding: Tensor) -> Tensor:
    """``1 - cos(old, new)`` with each embedding flattened over the whole batch into one vector."""
    if old_embedding.shape != new_embedding.shape:
        raise ValueError(
            f"embeddings differ in shape: {tuple(old_embedding.shape)} vs {tuple(new_embedding.shape)}"
        )
    old = old_embedding.reshape(-1)  # (batch * C * T * F,)
    new = new_embedding.reshape(-1)
    return 1.0 - F.cosine_similarity(old, new, dim=0, eps=1e-8)


def _check_logits_pair(old_logits: Tensor, new_old_logits: Tensor, temperature: float) -> None:
    if old_logits.shape != new_old_logits.shape or old_logits.dim() != 2:
        raise ValueError(
            f"expected two (batch, n_old) logit tensors, got {tuple(old_logits.shape)} "
            f"and {tuple(new_old_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")


def output_distillation_kl(old_logits: Tensor, new_old_logits: Tensor, temperature: float) -> Tensor:
    """``T**2 * mean_{i,c} p_old[i,c] * (log p_old[i,c] - log p_new[i,c])``.

    ``p = softmax(logits / T)`` across classes; the mean runs over every element
    (batch x classes), as the reference does, not per sample.
    """
    _check_logits_pair(old_logits, new_old_logits, temperature)
    log_p_old = F.log_softmax(old_logits / temperature, dim=1)  # (batch, n_old)
    log_p_new = F.log_softmax(new_old_logits / temperature, dim=1)  # (batch, n_old)
    elementwise = log_p_old.exp() * (log_p_old - log_p_new)  # (batch, n_old)
    return elementwise.sum() / elementwise.numel() * temperature**2


def output_distillation_bce(old_logits: Tensor, new_old_logits: Tensor, temperature: float) -> Tensor:
    """Multi-label output distillation: ``T**2 * mean_{i,c} BCE(sigmoid(new/T), sigmoid(old/T))``.

    Each old class is distilled independently with the soft target ``sigmoid(old/T)`` and
    binary cross-entropy on ``new/T`` (mean over batch x classes). Unlike the softmax KL it is
    not invariant to adding a constant to all logits of a clip, so it keeps each class's
    absolute presence score. Its minimum is the entropy of the soft targets, not 0.
    """
    _check_logits_pair(old_logits, new_old_logits, temperature)
    soft_targets = torch.sigmoid(old_logits / temperature)  # (batch, n_old)
    loss = F.binary_cross_entropy_with_logits(new_old_logits / temperature, soft_targets, reduction="mean")
    return loss * temperature**2


def adaptive_weight(*, n_seen: int, n_new: int, base: float = 5.0, exponent: float = 0.66) -> float:
    """``base * (n_seen / n_new) ** exponent`` (n_seen includes the current phase's classes)."""
    if n_new < 1 or n_seen < n_new:
        raise ValueError(f"need 1 <= n_new <= n_seen, got n_seen={n_seen}, n_new={n_new}")
    return float(base * (n_seen / n_new) ** exponent)


_BCE_ON = ("new", "all")
_OUTPUT_DISTILL = ("none", "kl", "bce")


@dataclass
class IncrementalLossSettings:
    """Settings of :func:`incremental_loss`.

    Attributes:
        bce_on: ``"new"`` (independent learning: BCE on the new classes' logits only) or ``"all"``.
        feature_distill: weight of ``L_FD`` (0 disables it).
        output_distill: ``"none"``, ``"kl"`` (reference) or ``"bce"`` (multi-label variant).
        temperature: distillation temperature ``T``.
        lambda_base, lambda_exponent: adaptive weight ``base * (n_seen / n_new) ** exponent``.
        kd_weight: extra factor ``w_kd`` on ``lambda * L_OD``.
    """

    bce_on: str
    feature_distill: float
    output_distill: str
    temperature: float = 2.0
    lambda_base: float = 5.0
    lambda_exponent: float = 0.66
    kd_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.bce_on not in _BCE_ON:
            raise ValueError(f"unknown bce_on {self.bce_on!r}; allowed: {list(_BCE_ON)}")
        if self.output_distill not in _OUTPUT_DISTILL:
            raise ValueError(f"unknown output_distill {self.output_distill!r}; allowed: {list(_OUTPUT_DISTILL)}")
        if self.feature_distill < 0:
            raise ValueError(f"feature_distill must be >= 0, got {self.feature_distill!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        if self.kd_weight < 0 or self.lambda_base < 0:
            raise ValueError("kd_weight and lambda_base must be >= 0")


def incremental_loss(
    *,
    logits: Tensor,
    targets: Tensor,
    n_old: int,
    pos_weight: Tensor | float,
    settings: IncrementalLossSettings,
    old_logits: Tensor | None = None,
    old_embedding: Tensor | None = None,
    new_embedding: Tensor | None = None,
    mask: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor | float]]:
    """Total loss of an incremental phase and its parts, for logging (detached tensors, so that
    reading them does not make the CPU wait for the GPU at every step; ``lambda`` is a float).

    ``total = BCE + feature_distill * L_FD + lambda * kd_weight * L_OD`` with
    ``lambda = adaptive_weight(n_seen=n_classes, n_new=n_classes - n_old)``.

    Args:
        logits: new model's logits ``(batch, n_classes)`` (old classes first).
        targets: ``(batch, n_classes)`` 0/1 labels (entries outside ``mask`` are ignored).
        n_old: number of classes of earlier phases (0 <= n_old < n_classes).
        pos_weight: BCE ``pos_weight``, a scalar or one per class ``(n_classes,)``.
        old_logits: frozen old model's logits ``(batch, n_old)`` (needed for output distillation).
        old_embedding, new_embedding: last-block embeddings (needed when ``feature_distill > 0``).
            The old model's tensors are detached here: the teacher gets no gradient.
        mask: ``(batch, n_classes)`` 0/1 map of the target entries that count in the BCE
            (:func:`masked_bce_loss`: mean over each clip's known entries, then over clips).
            Without it: every entry, or the new classes' only when ``bce_on == "new"``.
    """
    if logits.dim() != 2 or targets.shape != logits.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must be equal 2-D")
    n_classes = logits.shape[1]
    if not 0 <= n_old < n_classes:
        raise ValueError(f"need 0 <= n_old < n_classes, got n_old={n_old}, n_classes={n_classes}")

    if mask is None:
        mask = torch.ones_like(logits)
        if settings.bce_on == "new":
            mask[:, :n_old] = 0
    l_bce = masked_bce_loss(logits, targets, mask, pos_weight)
    total = l_bce
    parts: dict[str, Tensor | float] = {"bce": l_bce.detach()}

    if settings.feature_distill > 0:
        if old_embedding is None or new_embedding is None:
            raise ValueError("feature distillation needs old_embedding and new_embedding")
        l_fd = feature_distillation_loss(old_embedding.detach(), new_embedding)
        total = total + settings.feature_distill * l_fd
        parts["feature_distill"] = l_fd.detach()

    if settings.output_distill != "none":
        if n_old == 0:
            raise ValueError("output distillation needs old classes (n_old > 0)")
        if old_logits is None:
            raise ValueError("output distillation needs old_logits")
        if old_logits.shape != (logits.shape[0], n_old):
            raise ValueError(f"old_logits must be (batch, {n_old}), got {tuple(old_logits.shape)}")
        fn = output_distillation_kl if settings.output_distill == "kl" else output_distillation_bce
        l_od = fn(old_logits.detach(), logits[:, :n_old], settings.temperature)
        lam = adaptive_weight(
            n_seen=n_classes,
            n_new=n_classes - n_old,
            base=settings.lambda_base,
            exponent=settings.lambda_exponent,
        )
        total = total + lam * settings.kd_weight * l_od
        parts["output_distill"] = l_od.detach()
        parts["lambda"] = lam

    parts["total"] = total.detach()
    return total, parts
