"""Core mechanism: which clips a phase trains on, with which labels, and how many per epoch
(:func:`cilaudio.training_data.phase_table`)."""

from __future__ import annotations

from typing import Any, Mapping

from .registry import Mechanism, PhaseContext, register


@register
class DataSource(Mechanism):
    name = "data_source"
    stage = "training_set"
    settings = {
        "data": {
            "enum": ["current", "cumulative"], "default": "current",
            "description": "current - train on phase k's list, labelled with phase k's classes only; "
                           "cumulative - train on all lists so far with every seen class (the joint upper bound).",
        },
        "bce_on": {
            "enum": ["new", "all"], "default": "all",
            "description": "new - BCE on the new classes' outputs only (independent learning, IndL); all - BCE on "
                           "every output (old outputs get the phase's labels, i.e. zeros, in finetune).",
        },
        "epoch_size": {
            "enum": ["all", "phase"], "default": "all",
            "description": "all - an epoch passes over every training excerpt once; phase - an epoch draws "
                           "(without replacement) as many excerpts as phase k's own list holds, so a cumulative "
                           "method makes as many updates per phase as the others.",
        },
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return True  # every phase job has a training set

    def prepare(self, ctx: PhaseContext) -> None:
        from ..lists import read_list
        from ..training_data import phase_table

        ctx.table = phase_table(phase=ctx.phase, class_split=ctx.class_split, lists=ctx.train_lists,
                                features=ctx.features, cumulative=self.values["data"] == "cumulative",
                                bce_on=self.values["bce_on"], index=ctx.index)
        if self.values["epoch_size"] == "phase":  # the phase's own list's excerpts (skipped clips: none)
            ctx.epoch_size = sum(len(ctx.index.get(f, ())) for f in read_list(ctx.train_lists[-1])["fname"])
