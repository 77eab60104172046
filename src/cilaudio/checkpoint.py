"""Phase checkpoints: a plain dict, loadable on a CPU, written atomically."""

from __future__ import annotations

import os
from typing import Any

import torch

from .atomic import atomic_path
from .model import CNN14, ModelSettings

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, *, model: CNN14, classes: list[str], phase: int,
                    method: str, seed: int, params: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """``extra`` holds what later steps need beside the model: the feature settings
    (``features``, so a model can tag new audio) and a replay method's exemplar memory. The
    library version that trained it is recorded as ``code_version``
    (:func:`cilaudio.code_version.code_version`)."""
    from .code_version import code_version

    state = {
        "code_version": code_version(),
        **(extra or {}),
        "format_version": FORMAT_VERSION,
        "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "settings": model.settings.to_dict(),
        "classes": list(classes),
        "phase": phase,
        "method": method,
        "seed": seed,
        "params": params,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[CNN14, dict]:
    """Rebuild the model of a checkpoint; returns (model in eval mode, checkpoint dict)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}; delete it and rerun the job that makes it") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a checkpoint of this project (format {FORMAT_VERSION})")
    model = CNN14(ModelSettings.from_dict(state["settings"]))
    model.load_state_dict(state["model_state"])
    model.to(device).eval()
    return model, state
