"""Core mechanism: which clips a phase trains on, and how many per epoch (run by
:func:`cilaudio.train.training_set` and :func:`cilaudio.train.train_incremental`)."""

from __future__ import annotations

from .registry import Mechanism, register


@register
class DataSource(Mechanism):
    name = "data_source"
    settings = {
        "data": {
            "enum": ["current", "cumulative"], "default": "current",
            "description": "current - train on phase k's list, labelled with phase k's classes only; "
                           "cumulative - train on all lists so far with every seen class (the joint upper bound).",
        },
        "epoch_size": {
            "enum": ["all", "phase"], "default": "all",
            "description": "all - an epoch passes over every training excerpt once; phase - an epoch draws "
                           "(without replacement) as many excerpts as phase k's own list holds, so a cumulative "
                           "method makes as many updates per phase as the others.",
        },
    }
