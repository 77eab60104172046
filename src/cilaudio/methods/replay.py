"""Core mechanism: exemplar replay under a clip budget (the memory is chosen by
:func:`cilaudio.exemplar_memory.select` with a selector of :data:`cilaudio.exemplar_selection.SELECTORS`; a new
selector registers itself there and becomes a value of ``replay``)."""

from __future__ import annotations

from typing import Any, Mapping

from .. import exemplar_selection
from .registry import Mechanism, register


@register
class Replay(Mechanism):
    name = "replay"

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
