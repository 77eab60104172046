"""Start phase 0 from AudioSet-pretrained PANNs CNN14 weights (Kong et al., 2020).

PANNs publishes its checkpoints (``Cnn14_mAP=0.431.pth``, Zenodo record 3987831) as
``torch.save({"model": state_dict, ...})``; a bare state dict is taken too. Its ``Cnn14`` names
the layers ``bn0``, ``conv_block<b>.conv1/conv2`` and ``conv_block<b>.bn1/bn2``, then ``fc1`` and
``fc_audioset``, with the front end's fixed buffers ``spectrogram_extractor.*`` and
``logmel_extractor.*``. :func:`load_panns` maps them onto :class:`cilaudio.model.CNN14` by name:

- ``bn0`` (BatchNorm over the mel bins in every variant) and the twelve convolutions, always;
- the blocks' BatchNorm layers (``bn1``/``bn2`` -> ``norm1``/``norm2``) only with ``norm: bn``.
  GroupNorm normalises each sample over groups of channels, not each channel over the batch:
  a BatchNorm's running statistics have no place in it, and its scale and shift were learned
  for activations normalised another way. Continual Normalization's BatchNorm follows a
  GroupNorm, so it sees activations normalised per sample, not the raw convolution outputs
  PANNs' statistics describe. Both take the convolutions and ``bn0`` only, and their norms
  start as a fresh model's;
- ``fc1`` (PANNs' 2048 x 2048 layer, which the papers' network does not have), ``fc_audioset``
  (527 AudioSet classes) and the front end's buffers are not used (the features are computed
  beforehand, ``features.front_end: panns``).

Every tensor taken must match the model's shape: a width other than 64 or another number of
mel bins is an error that names the key. The file's path and sha256 are recorded
(:func:`describe`) in the phase-0 checkpoint, the metrics and the report.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import torch

from .model import CNN14, N_BLOCKS

#: PANNs' own names of the parts the network does not use.
NOT_USED_PREFIXES = ("fc1.", "fc_audioset.", "spectrogram_extractor.", "logmel_extractor.")
_BLOCK_KEY = re.compile(r"^conv_block(\d)\.(conv1|conv2|bn1|bn2)\.(.+)$")


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict of a PANNs checkpoint file (``{"model": state}`` or a bare state)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model.pretrained: {path} does not exist; download Cnn14_mAP=0.431.pth from "
                                "https://zenodo.org/record/3987831 (README, 'Starting from PANNs')")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"model.pretrained: cannot read {path} as a PyTorch checkpoint: {exc}") from exc
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or "conv_block1.conv1.weight" not in state:
        keys = list(state)[:4] if isinstance(state, dict) else type(loaded).__name__
        raise ValueError(f"model.pretrained: {path} is not a PANNs CNN14 checkpoint (no 'conv_block1.conv1.weight'; "
                         f"it holds {keys}): give the Cnn14 .pth file PANNs publishes")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def panns_key_map(model: CNN14) -> dict[str, str]:
    """PANNs' key -> this model's key, for every tensor the model takes (see the module docstring)."""
    ours = model.state_dict()
    mapping = {k: k for k in ours if k.startswith("bn0.")}
    for b in range(1, N_BLOCKS + 1):
        for conv in ("conv1", "conv2"):
            mapping[f"conv_block{b}.{conv}.weight"] = f"block{b}.{conv}.weight"
        if model.settings.norm == "bn":
            for i in (1, 2):
                for part in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                    mapping[f"conv_block{b}.bn{i}.{part}"] = f"block{b}.norm{i}.{part}"
    return mapping


def load_panns(model: CNN14, path: str | os.PathLike) -> dict[str, Any]:
    """Copy a PANNs CNN14 checkpoint's weights into ``model`` (see the module docstring);
    returns what was done (:func:`describe`). Nothing is copied unless every tensor fits."""
    state = read_state(path)
    mapping = panns_key_map(model)
    ours = model.state_dict()
    missing = [k for k in mapping if k not in state]
    if missing:
        raise ValueError(f"model.pretrained: {path} lacks {missing[:3]}{' ...' if len(missing) > 3 else ''}: "
                         "it is not a full PANNs CNN14 checkpoint")
    for theirs, mine in mapping.items():
        if tuple(state[theirs].shape) != tuple(ours[mine].shape):
            raise ValueError(
                f"model.pretrained: {path}: '{theirs}' has shape {tuple(state[theirs].shape)} but the model's "
                f"'{mine}' has {tuple(ours[mine].shape)}: PANNs' CNN14 has model.width 64 and 64 mel bins "
                f"(this model: width {model.settings.width}, {model.settings.n_mels} mel bins); set model.width: 64 "
                "and features.n_mels: 64, or remove model.pretrained")
    with torch.no_grad():
        for theirs, mine in mapping.items():
            ours[mine].copy_(state[theirs])
    unused = sorted(k for k in state if k not in mapping)
    unknown = [k for k in unused if not k.startswith(NOT_USED_PREFIXES) and not _BLOCK_KEY.match(k)]
    if unknown:
        raise ValueError(f"model.pretrained: {path} holds {unknown[:3]}, which a PANNs CNN14 does not: is it "
                         "another PANNs model (Cnn10, ResNet38, ...)? Only Cnn14 fits this network")
    return describe(path, loaded=list(mapping), unused=unused)


def describe(path: str | os.PathLike, *, loaded: list[str], unused: list[str]) -> dict[str, Any]:
    """The record of a pretrained start: the file, its sha256, and which PANNs tensors were
    taken and which were not (grouped by layer)."""
    layers = sorted({k.rsplit(".", 1)[0] for k in unused})
    return {"path": str(path), "sha256": file_sha256(path), "n_tensors_loaded": len(loaded),
            "not_used": layers}
