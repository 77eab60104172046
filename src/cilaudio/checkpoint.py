"""Phase checkpoints: a plain dict, loadable on a CPU, written atomically."""

from __future__ import annotations

import os
from typing import Any

import torch

from .atomic import atomic_path
from .model import CNN14, MEMORY_FORMAT, ModelSettings

FORMAT_VERSION = 1


def non_finite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict (weights and buffers) that hold a NaN
    or an infinite value, in the state's order. One host read for the whole state."""
    names = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state[k]).all() for k in names]).tolist()
    return [k for k, ok in zip(names, finite) if not ok]


def describe_tensors(names: list[str], limit: int = 5) -> str:
    """``a, b, c`` or ``a, b, c, ... (12 in all)``."""
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def save_checkpoint(path: str | os.PathLike, *, model: CNN14, classes: list[str], phase: int,
                    method: str, seed: int, params: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """``extra`` holds what later steps need beside the model: the feature settings
    (``features``, so a model can tag new audio) and a replay method's exemplar memory. The
    library version that trained it is recorded as ``code_version``
    (:func:`cilaudio.code_version.code_version`)."""
    from .code_version import code_version

    model_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    bad = non_finite_tensors(model_state)
    if bad:  # checked before anything is written: the file of the last good run stays as it was
        raise ValueError(
            f"{path}: not written: the phase-{phase} model of {method!r} (seed {seed}) holds NaN or "
            f"infinite values in {describe_tensors(bad)}: its training diverged. Lower the learning "
            f"rate ({'training.base.lr' if phase == 0 else 'training.incremental.lr'}) or use fp32 "
            "precision, and rerun")
    state = {
        "code_version": code_version(),
        **(extra or {}),
        "format_version": FORMAT_VERSION,
        "model_state": model_state,
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
    bad = non_finite_tensors(state.get("model_state", {}))
    if bad:  # written before checkpoints were checked: a diverged training
        raise ValueError(
            f"checkpoint {path} holds NaN or infinite values in {describe_tensors(bad)}: the training "
            "that wrote it diverged, and every score of it would be NaN. Delete it and rerun the job that "
            "makes it with a lower learning rate (training.base.lr or training.incremental.lr)")
    model = CNN14(ModelSettings.from_dict(state["settings"]))
    model.load_state_dict(state["model_state"])
    model.to(device).to(memory_format=MEMORY_FORMAT).eval()
    return model, state
