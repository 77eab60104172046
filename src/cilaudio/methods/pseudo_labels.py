"""Pseudo-labels for the old classes on the new clips (the "label absence" problem of
multi-label class-incremental learning, addressed by e.g. KRT and L3A: phase k's clips hold
earlier classes' sounds that phase k's labels do not mark).

Every target entry of an old class that a clip is not labelled for (under independent learning,
all old entries of phase k's clips; for a replayed exemplar, the old classes of other phases)
takes the previous model's confident prediction: 1 where its probability is at least
``pseudo_label_positive``, 0 where it is at most ``pseudo_label_negative``; in between it stays
unknown (no gradient). Known labels are never changed, and neither are the new classes' entries.

The weighting, chosen deliberately (KRT's, whose dynamic pseudo-labels restore the old classes
into the clip's label vector and train one multi-label loss over the whole vector): a filled
entry counts in the BCE exactly like a labelled one. A clip's BCE is the mean over all its
known entries, new and filled alike, so the new classes' share of a clip's loss is what it is
under joint training (5 of the 35-50 entries here), not independent learning's (all of it).
The old classes' ``pos_weight`` is computed after filling, like the new classes' before: at the
start of the phase the previous model labels the phase's whole training set once (the same
labels ``adjust`` gives each batch: it is frozen, in eval mode), and the old group's weight is
negatives / positives over the old entries known then (:func:`cilaudio.losses.pos_weight_by_group`;
before filling no old entry is known and the weight was 1).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from .registry import Batch, Mechanism, PhaseContext, register

if TYPE_CHECKING:  # torch is imported where it is used: the config check at start-up needs none
    import torch


def pseudo_label(targets: torch.Tensor, mask: torch.Tensor, old_logits: torch.Tensor, *,
                 positive: float, negative: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets, mask)`` with the unknown old-class entries filled from ``old_logits``.

    ``targets``/``mask``: ``(batch, n_classes)``, old classes first; ``old_logits``:
    ``(batch, n_old)``. Returns new tensors.
    """
    import torch

    n_old = old_logits.shape[1]
    p = torch.sigmoid(old_logits.detach().float())  # (batch, n_old)
    unknown = mask[:, :n_old] == 0
    pos = unknown & (p >= positive)
    neg = unknown & (p <= negative)
    targets, mask = targets.clone(), mask.clone()
    targets[:, :n_old] = torch.where(pos, torch.ones_like(p), torch.where(neg, torch.zeros_like(p),
                                                                          targets[:, :n_old].float())).to(targets.dtype)
    mask[:, :n_old] = torch.where(pos | neg, torch.ones_like(p), mask[:, :n_old].float()).to(mask.dtype)
    return targets, mask


@register
class PseudoLabels(Mechanism):
    name = "pseudo_labels"
    settings = {
        "pseudo_labels": {
            "type": "boolean", "default": False,
            "description": "Fill the old classes' unknown target entries with the previous model's confident "
                           "predictions (label absence: new clips hold old sounds without labels).",
        },
        "pseudo_label_positive": {
            "type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 0.7,
            "description": "An unknown old-class entry becomes 1 where the previous model's probability is at least this.",
        },
        "pseudo_label_negative": {
            "type": "number", "minimum": 0, "exclusiveMaximum": 1, "default": 0.3,
            "description": "... and 0 where it is at most this; in between it stays unknown (no gradient).",
        },
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return bool(values["pseudo_labels"])

    @classmethod
    def needs_old_model(cls, values: Mapping[str, Any]) -> bool:
        return bool(values["pseudo_labels"])

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[str]:
        errors = []
        if values["pseudo_label_negative"] >= values["pseudo_label_positive"]:
            errors.append("pseudo_label_negative must be below pseudo_label_positive")
        if values["pseudo_labels"] and values["bce_on"] == "all" and values["data"] == "current" \
                and values["replay"] == "none":
            errors.append("pseudo_labels with bce_on: all and no replay has no unknown old entry to fill "
                          "(finetune labels them 0): use bce_on: new")
        return errors

    def prepare(self, ctx: PhaseContext) -> None:
        """The old classes' ``pos_weight`` over the phase's targets after filling (``ctx.pos_weight``)."""
        import torch

        from ..losses import pos_weight_by_group

        n_old = len(ctx.class_split.seen(ctx.phase - 1))
        filled = []
        with torch.no_grad():
            for x, y in ctx.batches(ctx.data):
                mask = (y >= 0).to(y.dtype)  # UNKNOWN (-1) where a clip is not labelled
                t, m = pseudo_label(y.clamp(min=0), mask, ctx.old_model(x)[0][:, :n_old],
                                    positive=self.values["pseudo_label_positive"],
                                    negative=self.values["pseudo_label_negative"])
                filled.append(torch.where(m[:, :n_old] > 0, t[:, :n_old], torch.full_like(t[:, :n_old], -1.0)).cpu())
        old = pos_weight_by_group(torch.cat(filled), [slice(0, n_old)])
        ctx.pos_weight = ctx.pos_weight.clone()
        ctx.pos_weight[:n_old] = old.to(ctx.pos_weight)

    def adjust(self, batch: Batch) -> None:
        if batch.n_old and batch.old_logits is not None:
            batch.targets, batch.mask = pseudo_label(
                batch.targets, batch.mask, batch.old_logits,
                positive=self.values["pseudo_label_positive"], negative=self.values["pseudo_label_negative"])
