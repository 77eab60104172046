"""Reading the CKA files that the workflow's `cka` job writes, and naming their layers' kinds.

A file holds the linear CKA between every layer of the phase-0 model and every layer of one
later phase's model (``matrix`` (layers, layers), scalar ``phase``) or of a chain of them
(``matrix`` (n, layers, layers), ``phase`` (n,)), with the layer names, the method and the seed.
The figures (:mod:`cilaudio.reporting.plots`) and the CKA summary of the comparison page
(:func:`cilaudio.reporting.statistics.cka_layer_summary`) read them here; nothing here needs
matplotlib.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

import numpy as np

BLOCK = re.compile(r"^block(\d+)\.")


def load_cka(path: str | os.PathLike) -> list[dict]:
    """The CKA records of one file, one per compared phase model: a file of one phase
    (``matrix`` (layers, layers), scalar ``phase``) or of a chain (``matrix`` (n, layers, layers),
    ``phase`` (n,), what the workflow's `cka` job writes). Keys: matrix, layers, phase, method, seed."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("matrix", "layers", "phase", "method") if k not in z.files]
        if missing:
            raise KeyError(f"{path}: CKA file lacks {missing}")
        matrix = np.asarray(z["matrix"], dtype=float)  # ([n,] layers of phase 0, layers of phase k)
        phases = np.atleast_1d(z["phase"]).astype(int)
        layers = [str(s) for s in z["layers"]]
        method = str(z["method"])
        seed = int(z["seed"]) if "seed" in z.files else None
    matrices = matrix[None] if matrix.ndim == 2 else matrix
    if matrices.ndim != 3 or matrices.shape[1:] != (len(layers), len(layers)):
        raise ValueError(f"{path}: matrix shape {matrix.shape} does not match {len(layers)} layer names")
    if len(matrices) != len(phases):
        raise ValueError(f"{path}: {len(matrices)} matrices but {len(phases)} phases")
    return [{"matrix": m, "layers": layers, "phase": int(k), "method": method, "seed": seed}
            for m, k in zip(matrices, phases)]


def load_cka_files(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """:func:`load_cka` of every file, in order."""
    return [r for p in paths for r in load_cka(p)]


def is_norm_layer(layer: str) -> bool:
    """Whether the layer named ``layer`` (``block3.norm1``) is a normalisation layer."""
    return "norm" in layer.rsplit(".", 1)[-1] or layer.rsplit(".", 1)[-1].startswith(("bn", "gn", "cn"))


def block_number(layer: str) -> int | None:
    """``b`` of a layer named ``block<b>.<...>``; None for other layers (the classifier)."""
    m = BLOCK.match(layer)
    return int(m.group(1)) if m else None
