"""Core mechanism: the papers' loss - which outputs the BCE trains, cosine feature distillation
(L_FD) and output distillation (L_OD) with the adaptive weight (run by
:func:`cilaudio.losses.incremental_loss` inside :func:`cilaudio.train.incremental_step`)."""

from __future__ import annotations

from typing import Any, Mapping

from .registry import Mechanism, register

OUTPUT_DISTILL = ("none", "kl", "bce")
#: Where the model hands out the embedding (the last block's output, before or after its
#: dropout): :meth:`cilaudio.model.CNN14.forward` takes one of these.
EMBEDDING_POINTS: tuple[str, ...] = ("before_dropout", "after_dropout")
FD_PASSES = ("shared", "second")


@register
class Distillation(Mechanism):
    name = "distillation"
    settings = {
        "bce_on": {
            "enum": ["new", "all"], "default": "all",
            "description": "new - BCE on the new classes' outputs only (independent learning, IndL); all - BCE on "
                           "every output (old outputs get the phase's labels, i.e. zeros, in finetune).",
        },
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
            "enum": list(EMBEDDING_POINTS), "default": "after_dropout",
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
    def needs_old_model(cls, values: Mapping[str, Any]) -> bool:
        return values["feature_distill"] > 0 or values["output_distill"] != "none"
