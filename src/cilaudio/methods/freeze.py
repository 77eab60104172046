"""Core mechanism: the TASLP paper's selective updates - conv blocks whose weights (and, if
asked, BatchNorm statistics) stay fixed in phases 1..K (:func:`cilaudio.model.set_frozen_blocks`)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .registry import Mechanism, PhaseContext, register

log = logging.getLogger(__name__)


@register
class Freeze(Mechanism):
    name = "freeze"
    switch = "freeze_blocks"  # freeze_norm_stats acts only on frozen blocks
    stage = "model"
    settings = {
        "freeze_blocks": {
            "type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 6}, "uniqueItems": True,
            "default": [],
            "description": "Conv blocks (1-6) whose weights stay fixed in phases 1..K (the TASLP paper's selective "
                           "updates; e.g. [1, 2, 3]).",
        },
        "freeze_norm_stats": {
            "type": "boolean", "default": False,
            "description": "Also keep the frozen blocks' BatchNorm running statistics fixed (requires_grad=False "
                           "alone does not stop them from moving).",
        },
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return bool(values["freeze_blocks"])

    def prepare(self, ctx: PhaseContext) -> None:
        from ..model import set_frozen_blocks

        blocks, stats = tuple(self.values["freeze_blocks"]), bool(self.values["freeze_norm_stats"])
        set_frozen_blocks(ctx.model, blocks, freeze_norm_stats=stats)
        log.info(f"frozen blocks {list(blocks)} ({'with' if stats else 'without'} their norm statistics)")
