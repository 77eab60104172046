"""Test a phase model on the cumulative test list, and compare phase models with CKA."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .atomic import atomic_path, write_text
from .checkpoint import load_checkpoint
from .cka import MinibatchCKA
from .code_version import code_version
from .excerpts import ExcerptTable, FeatureDataset, excerpt_index, excerpts_of
from .lists import read_list
from .exemplar_memory import histogram
from .model import record_activations
from .phases import ClassSplit
from .train import pick_device

log = logging.getLogger(__name__)


def eval_loader(data: FeatureDataset, *, batch_size: int, device: torch.device, num_workers: int = 0) -> DataLoader:
    """Test excerpts in table order, read by ``num_workers`` loader processes (HDF5 reads off
    the main process), into pinned memory when the model is on a GPU."""
    return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


@torch.no_grad()
def predict(model: torch.nn.Module, data: FeatureDataset, *, batch_size: int,
            device: torch.device, num_workers: int = 0) -> np.ndarray:
    """Sigmoid scores (n_excerpts, n_outputs) in eval mode."""
    model.eval()
    out = []
    for x, _ in eval_loader(data, batch_size=batch_size, device=device, num_workers=num_workers):
        logits, _ = model(x.to(device, non_blocking=True))
        out.append(torch.sigmoid(logits).float().cpu().numpy())
    return np.concatenate(out)


def check_scores(scores: np.ndarray, *, checkpoint: str | Path, what: str = "test excerpts") -> None:
    """Refuse scores that hold NaN or infinite values (a model whose training diverged, or whose
    activations overflow): metrics of them would be meaningless, and scikit-learn's own error
    names no file."""
    bad = ~np.isfinite(scores).all(axis=1)  # (n_excerpts,)
    if bad.any():
        raise ValueError(
            f"checkpoint {checkpoint} gives NaN or infinite scores for {int(bad.sum())} of {len(scores)} "
            f"{what}: its training diverged (or its weights overflow float32). Delete it and rerun the job "
            "that makes it with a lower learning rate (training.base.lr or training.incremental.lr); the "
            "phase<k>_history.tsv beside it shows how its loss went")


def _clean(d: dict[str, float | int]) -> dict[str, float | int | None]:
    """JSON-ready metrics: NaN -> ``None``, counts (ints) stay ints, other values floats."""
    return {k: (None if v is None or (isinstance(v, float) and math.isnan(v))
                else int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else float(v))
            for k, v in d.items()}


def subset_metrics(y: np.ndarray, scores: np.ndarray, *, in_base: np.ndarray, group_sizes: list[int],
                   threshold: float = 0.5) -> dict[str, dict[str, float | int]]:
    """:func:`compute_metrics` of each evaluated subset of one phase's test excerpts.

    ``y``, ``scores``: ``(n_excerpts, n_seen_classes)``, the classes in phase order;
    ``in_base``: boolean ``(n_excerpts,)``, the excerpts of phase-0 test clips; ``group_sizes``:
    the number of classes of phases 0..k. Keys: ``all`` (every excerpt and class), ``base``
    (the base classes, ``group_sizes[0]`` columns, on the ``in_base`` excerpts) and
    ``group{j}`` (phase j's classes on every excerpt). Each value counts, under
    ``classes_without_positives``, the classes of that subset without a positive excerpt.
    """
    from .metrics import compute_metrics  # scikit-learn: imported only by jobs that compute metrics

    in_base = np.asarray(in_base, dtype=bool)
    if sum(group_sizes) != y.shape[1]:
        raise ValueError(f"group sizes {list(group_sizes)} add up to {sum(group_sizes)}, "
                         f"not to the {y.shape[1]} classes of the scores")
    if in_base.shape != (y.shape[0],):
        raise ValueError(f"in_base must have one entry per excerpt ({y.shape[0]}); got shape {in_base.shape}")
    n_base = group_sizes[0]
    subsets = {
        "all": compute_metrics(y, scores, threshold),
        "base": compute_metrics(y[in_base, :n_base], scores[in_base, :n_base], threshold),
    }
    start = 0
    for j, size in enumerate(group_sizes):
        subsets[f"group{j}"] = compute_metrics(y[:, start:start + size], scores[:, start:start + size], threshold)
        start += size
    return subsets


def base_head_metrics(model: torch.nn.Module, base_head: torch.Tensor, features: Path, base: ExcerptTable, *,
                      n_base: int, threshold: float, batch_size: int, device: torch.device,
                      num_workers: int = 0) -> dict[str, float | int]:
    """The metrics of an analytic checkpoint's phase-0 ridge head (``base_head``: the ridge
    solution on phase 0's data alone, on the same frozen network) on the base classes (the first
    ``n_base`` columns) of ``base``, the base clips' excerpts, as the ``base`` subset scores the
    phase model: subset ``base_head``. It shows what the closed-form head alone achieves before
    any increment, so that a base score above joint's can be read as head quality rather than
    memory."""
    from .methods.analytic import base_head_model
    from .metrics import compute_metrics

    scores = predict(base_head_model(model, base_head), FeatureDataset(features, base), batch_size=batch_size,
                     device=device, num_workers=num_workers)
    return compute_metrics(base.targets[:, :n_base], scores, threshold)


def phase_metrics(*, checkpoint: Path, class_split: ClassSplit, test_list: Path, base_list: Path,
                  features: Path, meta: dict[str, Any], threshold: float = 0.5, batch_size: int = 64,
                  device: torch.device, index: Any = None, num_workers: int = 0) -> dict:
    """Metrics after one phase, as a JSON-ready record.

    ``all``: every class seen so far on this phase's cumulative test clips. ``base``: the base
    classes on the phase-0 test clips, the same clips after every phase, so that forgetting
    compares like with like. ``group{j}``: phase j's classes on this phase's test clips.
    ``base_head`` (analytic checkpoints only): :func:`base_head_metrics`. Each subset holds the
    keys of :func:`cilaudio.metrics.compute_metrics`, among them ``classes_without_positives``: how many of its classes have no positive test clip and are
    left out of its ``map`` and ``f1_macro``. ``index``: the features' excerpt index, when the
    caller already read it.
    """
    from .metrics import average_precision_per_class

    model, state = load_checkpoint(checkpoint, device=device)
    phase = state["phase"]
    seen = list(class_split.seen(phase))
    if state["classes"] != seen:
        raise ValueError(f"{checkpoint} holds classes that differ from phase {phase} of the class split; "
                         "it comes from another config: delete it and rerun")
    index = excerpt_index(features) if index is None else index
    test_frame = read_list(test_list)
    test = excerpts_of(test_frame, seen, index, source=str(test_list), features=str(features))
    scores = predict(model, FeatureDataset(features, test), batch_size=batch_size, device=device,
                     num_workers=num_workers)
    check_scores(scores, checkpoint=checkpoint, what=f"test excerpts of {test_list}")
    y = test.targets
    base_clips = set(read_list(base_list)["fname"])
    in_base = np.array([test_frame["fname"].iloc[c] in base_clips for c in test.clip], dtype=bool)
    subsets = subset_metrics(y, scores, in_base=in_base,
                             group_sizes=[len(class_split.groups[j]) for j in range(phase + 1)], threshold=threshold)
    base_head = (state.get("analytic") or {}).get("base_head")
    if base_head is not None:  # the analytic method's phase-0 ridge head, on the same base clips
        base = ExcerptTable(test.rows[in_base], test.targets[in_base], test.clip[in_base])
        subsets["base_head"] = base_head_metrics(model, base_head, features, base, n_base=len(class_split.groups[0]),
                                                 threshold=threshold, batch_size=batch_size, device=device,
                                                 num_workers=num_workers)
    ap = average_precision_per_class(y, scores)
    result = {
        **meta,
        "phase": phase,
        "classes": seen,
        "groups": [list(g) for g in class_split.groups[: phase + 1]],
        "n_excerpts": {"all": int(len(y)), "base": int(in_base.sum())},
        "subsets": {k: _clean(v) for k, v in subsets.items()},
        "per_class_ap": {c: (None if math.isnan(a) else float(a)) for c, a in zip(seen, ap)},
    }
    # which library versions trained the model and evaluated it (the report warns when a run mixes
    # versions); a checkpoint written before versions were recorded has None
    result["code_version"] = {"training": state.get("code_version"), "evaluation": code_version()}
    result["pretrained"] = state.get("pretrained")  # the PANNs file phase 0 started from, or None
    if state.get("memory") is not None:
        result["memory"] = {"n_clips": len(state["memory"]),
                            "label_counts": histogram(state["memory"], class_split.seen(phase - 1))}
    log.info(f"phase {phase}: mAP {subsets['all']['map']:.4f}, base mAP {subsets['base']['map']:.4f}, "
             f"F1 micro {subsets['all']['f1_micro']:.4f} on {len(y)} excerpts")
    return result


def evaluate_chain(*, checkpoints: Sequence[Path], phases: Sequence[int], test_lists: Sequence[Path],
                   class_split: ClassSplit, base_list: Path, features: Path, out: Path, meta: dict[str, Any],
                   threshold: float = 0.5, batch_size: int = 64, device: str = "auto",
                   threads: int = 1, num_workers: int = 0) -> list[dict]:
    """:func:`phase_metrics` of every phase model of one chain (method and seed), written as one
    JSON object ``{"phases": [record, ...]}`` in phase order. One job per chain instead of one
    per phase: the job's start-up (Python, PyTorch) costs more than scoring a few hundred clips.
    ``phases[i]`` is the phase of ``checkpoints[i]``, evaluated on ``test_lists[i]``; a checkpoint
    of another phase is an error (the lists would not match it)."""
    if not len(checkpoints) == len(phases) == len(test_lists):
        raise ValueError(f"{len(checkpoints)} checkpoints, {len(phases)} phases and {len(test_lists)} "
                         "test lists: give one phase and one test list per checkpoint")
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    index = excerpt_index(features)
    records = []
    for checkpoint, phase, test_list in zip(checkpoints, phases, test_lists):
        record = phase_metrics(checkpoint=Path(checkpoint), class_split=class_split, test_list=Path(test_list),
                               base_list=base_list, features=features, meta=meta, threshold=threshold,
                               batch_size=batch_size, device=dev, index=index, num_workers=num_workers)
        if record["phase"] != int(phase):
            raise ValueError(f"{checkpoint} is a phase-{record['phase']} model, expected phase {phase}: "
                             "it comes from another config or was moved; delete it and rerun")
        records.append(record)
    write_text(out, json.dumps({"phases": records}, indent=1))
    return records


@torch.no_grad()
def _cka_matrix(model_a: torch.nn.Module, model_b: torch.nn.Module, data: FeatureDataset, *, batch_size: int,
                device: torch.device, num_workers: int = 0) -> tuple[np.ndarray, int]:
    """Linear CKA (unbiased mini-batch HSIC) between every pair of layers of two models in eval
    mode, and the number of excerpts it used."""
    model_a.eval()
    model_b.eval()
    names = model_a.layer_names()
    cka = MinibatchCKA(len(names), len(names))
    used = 0
    for x, _ in eval_loader(data, batch_size=batch_size, device=device, num_workers=num_workers):
        if len(x) < 4:  # the unbiased HSIC needs at least 4 samples
            continue
        x = x.to(device, non_blocking=True)
        with record_activations(model_a) as acts_a:
            model_a(x)
        with record_activations(model_b) as acts_b:
            model_b(x)
        cka.update([acts_a[n] for n in names], [acts_b[n] for n in names])
        used += len(x)
    return cka.compute(), used


def _base_test_data(class_split: ClassSplit, base_list: Path, features: Path) -> FeatureDataset:
    table = excerpts_of(read_list(base_list), list(class_split.groups[0]), excerpt_index(features),
                        source=str(base_list), features=str(features))
    return FeatureDataset(features, table)


@torch.no_grad()
def cka_chain(*, reference: Path, others: Sequence[Path], class_split: ClassSplit, base_list: Path,
              features: Path, out: Path, meta: dict[str, Any], batch_size: int = 64,
              device: str = "auto", threads: int = 1, num_workers: int = 0) -> np.ndarray:
    """Linear CKA between the ``reference`` model (phase 0) and each model of ``others`` (a
    chain's phases), every pair of layers, on the base-class test clips. Saved in one npz:
    ``matrix`` (n_models, layers, layers), ``phase`` (n_models,), ``layers``,
    ``reference_phase``, ``n_excerpts`` and ``meta``; returns the matrices."""
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    model_a, state_a = load_checkpoint(reference, device=dev)
    data = _base_test_data(class_split, base_list, features)
    matrices, phases, used = [], [], 0
    for other in others:
        model_b, state_b = load_checkpoint(other, device=dev)
        matrix, used = _cka_matrix(model_a, model_b, data, batch_size=batch_size, device=dev,
                                   num_workers=num_workers)
        matrices.append(matrix)
        phases.append(int(state_b["phase"]))
        log.info(f"CKA phase {state_a['phase']} vs {state_b['phase']} on {used} excerpts; diagonal "
                 + " ".join(f"{v:.2f}" for v in np.diag(matrix)))
    stacked = np.stack(matrices)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, matrix=stacked, layers=np.array(model_a.layer_names()), phase=np.array(phases),
                     reference_phase=state_a["phase"], n_excerpts=used,
                     **{k: v for k, v in meta.items() if k not in ("phase",)})
    return stacked
