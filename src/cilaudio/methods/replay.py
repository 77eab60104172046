"""Core mechanism: exemplar replay under a clip budget. The memory is chosen by
:func:`cilaudio.exemplar_memory.select` with a selector of
:data:`cilaudio.exemplar_selection.SELECTORS` (a new selector registers itself there and
becomes a value of ``replay``), added to the phase's training set and kept in the checkpoint
(under ``memory``) as the next phase's candidates."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from .. import exemplar_selection
from .registry import Mechanism, PhaseContext, register

log = logging.getLogger(__name__)


@register
class Replay(Mechanism):
    name = "replay"
    stage = "exemplars"
    state_key = "memory"  # read by the evaluation and the report too

    @classmethod
    def setting_schemas(cls) -> dict[str, dict]:
        return {
            "replay": {
                "enum": ["none", *exemplar_selection.SELECTORS], "default": "none",
                "description": "Exemplar replay - none, or the selector that chooses the memory: random (a random "
                               "choice of old clips); annealing (simulated annealing so that the old classes' label "
                               "counts are as even as the budget allows); balanced (greedy class-balanced removal, "
                               "OCDM style). The memory of phase k is chosen from phase k-1's memory and training list.",
            },
            "memory_clips": {
                "type": "integer", "minimum": 0, "default": 0,
                "description": "Exemplar memory budget in clips (replay methods only; must be > 0 then).",
            },
        }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return values["replay"] != "none"

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[str]:
        if values["replay"] != "none" and values["memory_clips"] <= 0:
            return ["a replay method needs memory_clips > 0 (the exemplar budget in clips)"]
        if values["replay"] != "none" and values["data"] == "cumulative":
            return [f"replay: {values['replay']} on a method with data: cumulative would do nothing (it trains on "
                    "every earlier clip already): set replay: none, or data: current"]
        return []

    @classmethod
    def needs_previous_list(cls, values: Mapping[str, Any]) -> bool:
        return values["replay"] != "none"

    def prepare(self, ctx: PhaseContext) -> None:
        """Choose the memory from phase k-1's memory and list; add its excerpts to ``ctx.table``."""
        from .. import exemplar_memory
        from ..lists import read_list
        from ..training_data import with_exemplars

        pool = exemplar_memory.candidates(ctx.previous_state.get(self.state_name()), read_list(ctx.previous_list),
                                          ctx.phase - 1)
        self.memory = exemplar_memory.select(pool, ctx.class_split.seen(ctx.phase - 1),
                                             budget=self.values["memory_clips"], strategy=self.values["replay"],
                                             seed=ctx.seed)
        log.info(f"exemplar memory: {len(self.memory)} of {len(pool)} old clips ({self.values['replay']})")
        ctx.table = with_exemplars(ctx.table, self.memory, phase=ctx.phase, class_split=ctx.class_split,
                                   features=ctx.features, index=ctx.index)

    def state(self) -> list[dict]:
        return self.memory.to_dict("records")
