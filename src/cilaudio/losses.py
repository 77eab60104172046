"""Losses of class-incremental multi-label training (``docs/method.md``, section *Training*).

Every reduction is written out explicitly (``reduction="mean"`` or a hand-written sum/mean), never
left to a framework default.

- :func:`bce_loss`: BCE-with-logits with a ``pos_weight``, mean over all elements.
- :func:`masked_bce_loss`: the same over each clip's known entries, then over clips.
- :func:`feature_distillation_loss`: ``1 - cos`` between whole-batch flattened embeddings.
- :func:`output_distillation_kl`: the reference's KL with softmax across classes, averaged over
  every element (batch x classes), times ``T**2``.
- :func:`output_distillation_bce`: a multi-label alternative (per-class sigmoid targets).
- :func:`adaptive_weight`: the output distillation's ``lambda = base * (n_seen / n_new) ** exponent``.

An incremental phase's total, ``L_BCE + w_FD * L_FD + lambda * w_kd * L_OD``, is put together by
the phase job from the BCE and the distillation mechanism's terms
(:class:`cilaudio.methods.distillation.Distillation`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "adaptive_weight",
    "bce_loss",
    "feature_distillation_loss",
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
