"""Core mechanism: the papers' distillation - cosine feature distillation (L_FD) on the
embedding and output distillation (L_OD) with the adaptive weight, each a loss term of
:mod:`cilaudio.losses` computed on the batch the phase job hands to :meth:`Distillation.loss`."""

from __future__ import annotations

from typing import Any, Mapping

from .registry import Batch, Mechanism, Term, register

OUTPUT_DISTILL = ("none", "kl", "bce")
#: The points of :data:`cilaudio.model.EMBEDDING_POINTS` that feature distillation offers: the
#: last block's output before or after its dropout (a test checks the model has them).
FD_EMBEDDINGS: tuple[str, ...] = ("before_dropout", "after_dropout")
FD_PASSES = ("shared", "second")


@register
class Distillation(Mechanism):
    name = "distillation"
    settings = {
        "feature_distill": {
            "type": "number", "minimum": 0, "default": 0.0,
            "description": "Weight of the cosine feature distillation L_FD (0 disables it).",
        },
        "output_distill": {
            "enum": list(OUTPUT_DISTILL), "default": "none",
            "description": "Output distillation from the previous phase's model - kl (softmax across classes, the "
                           "papers' choice), bce (per-class sigmoid targets), or none.",
        },
        "temperature": {
            "type": "number", "exclusiveMinimum": 0, "default": 2.0,
            "description": "Output distillation temperature T (the loss is scaled by T^2); the top-level "
                           "`distillation` block sets it for every method that distils.",
        },
        "lambda_base": {
            "type": "number", "minimum": 0, "default": 5.0,
            "description": "Adaptive weight lambda = lambda_base * (n_seen / n_new) ** lambda_exponent.",
        },
        "lambda_exponent": {"type": "number", "default": 0.66, "description": "Exponent of the adaptive weight."},
        "kd_weight": {
            "type": "number", "minimum": 0, "default": 1.0,
            "description": "Extra factor on lambda * L_OD (1 in the papers).",
        },
        "fd_embedding": {
            "enum": list(FD_EMBEDDINGS), "default": "after_dropout",
            "description": "Where feature distillation takes the new model's embedding (the last conv block's "
                           "pooled output) - after_dropout (the reference's point - in training it carries the "
                           "dropout mask, the old model's in eval mode does not) or before_dropout.",
        },
        "fd_pass": {
            "enum": list(FD_PASSES), "default": "shared",
            "description": "shared - one forward pass of the new model per batch serves BCE, L_FD and L_OD; second - "
                           "L_FD on a second forward pass with its own dropout masks, as the reference code runs it "
                           "(twice the forward cost, and BatchNorm statistics move twice per step).",
        },
    }
    # the output distillation's settings act only with output_distill, the feature
    # distillation's only with feature_distill > 0 (registry.complete refuses them otherwise)
    requires = {
        **{s: "output_distill" for s in ("temperature", "lambda_base", "lambda_exponent", "kd_weight")},
        **{s: "feature_distill" for s in ("fd_embedding", "fd_pass")},
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return values["feature_distill"] > 0 or values["output_distill"] != "none"

    @classmethod
    def needs_old_model(cls, values: Mapping[str, Any]) -> bool:
        return cls.active(values)

    def embedding_points(self) -> tuple[str, ...]:
        return (self.values["fd_embedding"],) if self.values["feature_distill"] > 0 else ()

    def loss(self, batch: Batch) -> dict[str, Any]:
        """``feature_distill * L_FD`` on the embedding (of this batch's pass, or of a second pass
        with ``fd_pass: second``) and ``lambda * kd_weight * L_OD`` on the old classes' logits,
        ``lambda = lambda_base * (n_seen / n_new) ** lambda_exponent``; the unweighted terms and
        lambda are logged."""
        from ..losses import adaptive_weight, feature_distillation_loss, output_distillation_bce, output_distillation_kl

        v = self.values
        terms: dict[str, Any] = {}
        if v["feature_distill"] > 0:
            point = v["fd_embedding"]
            if point not in batch.old_embeddings:
                raise ValueError(f"feature distillation needs the old model's embedding at {point!r}")
            new = batch.embeddings[point]
            if v["fd_pass"] == "second":  # the reference's way: a pass with its own dropout masks
                new = batch.model.features(batch.x, (point,))[1][point]
            terms["feature_distill"] = Term(feature_distillation_loss(batch.old_embeddings[point].detach(), new),
                                            v["feature_distill"])
        if v["output_distill"] != "none":
            n_classes = batch.logits.shape[1]
            if batch.n_old == 0:
                raise ValueError("output distillation needs old classes (n_old > 0)")
            if batch.old_logits is None or batch.old_logits.shape != (batch.logits.shape[0], batch.n_old):
                raise ValueError(f"output distillation needs the old model's logits (batch, {batch.n_old})")
            distill = output_distillation_kl if v["output_distill"] == "kl" else output_distillation_bce
            l_od = distill(batch.old_logits.detach(), batch.logits[:, :batch.n_old], v["temperature"])
            lam = adaptive_weight(n_seen=n_classes, n_new=n_classes - batch.n_old, base=v["lambda_base"],
                                  exponent=v["lambda_exponent"])
            terms["output_distill"] = Term(l_od, lam * v["kd_weight"])
            terms["lambda"] = lam
        return terms
