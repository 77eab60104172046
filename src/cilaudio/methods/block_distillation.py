"""Feature distillation on an intermediate block: ``1 - cos`` between the old and the new
model's output of one conv block (after its pooling, before its dropout), flattened over the
batch as the papers' L_FD is. The papers distil the last block's embedding
(:mod:`.distillation`); distilling an earlier block keeps the low-level features that every
class shares and leaves the later blocks free to learn the new classes.

It is the worked example of ``docs/adding-a-method.md``: one module, with no change elsewhere.
"""

from __future__ import annotations

from typing import Any, Mapping

from .registry import Batch, Mechanism, Term, register

#: The intermediate points of :data:`cilaudio.model.EMBEDDING_POINTS` (a test checks the model has them).
BLOCKS = ("block1", "block2", "block3", "block4", "block5")


@register
class BlockDistillation(Mechanism):
    name = "block_distillation"
    switch = "block_distill"
    settings = {
        "block_distill": {
            "type": "number", "minimum": 0, "default": 0.0,
            "description": "Weight of the cosine feature distillation on an intermediate block's output "
                           "(0 disables it; beside or instead of feature_distill on the last block).",
        },
        "block_distill_at": {
            "enum": list(BLOCKS), "default": "block4",
            "description": "The block whose output (after its pooling, before its dropout) block_distill compares.",
        },
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return values["block_distill"] > 0

    @classmethod
    def needs_old_model(cls, values: Mapping[str, Any]) -> bool:
        return cls.active(values)

    def embedding_points(self) -> tuple[str, ...]:
        return (self.values["block_distill_at"],)

    def loss(self, batch: Batch) -> dict[str, Any]:
        from ..losses import feature_distillation_loss

        point = self.values["block_distill_at"]
        l_block = feature_distillation_loss(batch.old_embeddings[point].detach(), batch.embeddings[point])
        return {"block_distill": Term(l_block, self.values["block_distill"])}
