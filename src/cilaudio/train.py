"""One training phase: phase 0 on the base classes, or an incremental phase of a method.

One flat loop: learning rate, forward, loss, backward, step, log. The model of phase k starts
from phase k-1's checkpoint with a grown classifier; the old model (a frozen copy of phase
k-1's, in eval mode) provides the distillation targets. The new model runs ONE forward pass
per batch (the reference code runs two, with different dropout masks, and computes L_FD on
the second); BCE, L_FD and L_OD all use that pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_path
from .batches import training_batches
from .checkpoint import describe_tensors, load_checkpoint, non_finite_tensors, save_checkpoint
from .excerpts import FeatureDataset, excerpt_index
from .losses import masked_bce_loss, pos_weight_by_group
from .features import read_settings
from .model import CNN14, MEMORY_FORMAT, ModelSettings
from . import methods as method_registry
from .training_data import UNKNOWN, training_set
from .phases import ClassSplit
from .progress import Progress, _duration
from .sgd import SGD
from .training_history import EXPLODING_RISE, exploded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptimSettings:
    """SGD with momentum, cosine annealing from ``lr`` to ``lr_min`` stepped once per epoch."""

    epochs: int
    batch_size: int
    lr: float
    lr_min: float
    momentum: float = 0.9
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class ExecutionSettings:
    """How training data reaches the model: what changes the speed, not the weights.

    ``num_workers``: loader processes. ``in_memory``: read the phase's features into RAM once
    instead of streaming from HDF5. ``features_on_gpu``: with CUDA, hold them in GPU memory and
    index batches there (no loader processes, no copies per step). ``pin_memory``/non-blocking
    copies are used whenever the device is CUDA. The workflow reads these from the config, not
    as rule params, so changing them reruns nothing
    (:func:`cilaudio.workflow_steps.execution_settings`).
    """

    num_workers: int = 0
    in_memory: bool = False
    features_on_gpu: bool = False


@dataclass(frozen=True)
class NumericSettings:
    """The arithmetic of training: what changes the weights' last bits (on a GPU), and so is a
    rule param. ``precision``: ``fp32``, or ``bf16``/``fp16`` autocast (fp16 with a gradient
    scaler). ``deterministic``: deterministic algorithms (cuDNN included) so that a GPU rerun
    gives the same weights; the CPU is deterministic either way.
    """

    precision: str = "fp32"
    deterministic: bool = False


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool, device: torch.device) -> None:
    """Deterministic algorithms (cuDNN included) when asked; else let cuDNN pick the fastest
    convolution algorithms for the fixed input size (``cudnn.benchmark``). Ops without a
    deterministic implementation only warn (``warn_only``) and are named in the log."""
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic results; it must be set before
        # the first cuBLAS call of the process
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # only when the state changes: the call imports torch's compiler (about 2 s of a job's
    # start-up on a CPU), and a fresh process has deterministic algorithms off already
    if (torch.are_deterministic_algorithms_enabled() != deterministic
            or (deterministic and not torch.is_deterministic_algorithms_warn_only_enabled())):
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic


def phase_seed(seed: int, phase: int) -> int:
    return seed * 1009 + phase


def autocast(device: torch.device, precision: str):
    """Mixed precision context for the forward pass and the loss."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


def pos_weights_of(targets: np.ndarray, n_old: int) -> torch.Tensor:
    """One ``pos_weight`` for the old classes' columns and one for the new classes' (phase 0:
    one for all), each negatives / positives over that group's known entries
    (:func:`cilaudio.losses.pos_weight_by_group`); ``(n_classes,)``."""
    n = targets.shape[1]
    groups = [slice(0, n_old), slice(n_old, n)] if n_old else [slice(0, n)]
    return pos_weight_by_group(torch.from_numpy(targets), groups)


def _describe_pos_weight(pw: torch.Tensor, n_old: int) -> str:
    if n_old:
        return f"pos_weight old classes {pw[0].item():.3f}, new classes {pw[n_old].item():.3f}"
    return f"pos_weight {pw[0].item():.3f}"


def history_path(out: Path) -> Path:
    """The per-epoch table of a phase job (``phase3.pt`` -> ``phase3_history.tsv``)."""
    return out.with_name(out.stem + "_history.tsv")


def resume_path(out: Path) -> Path:
    """Where a phase job keeps its state between epochs (deleted when the phase finishes)."""
    return out.with_name(out.name + ".resume")


def fingerprint(params: dict[str, Any], inputs: Sequence[Path]) -> str:
    """Identity of a training job: its settings and the size and time of its input files.
    A resume state whose fingerprint differs belongs to another job and is not used."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for p in inputs:
        st = Path(p).stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def run_id(job_id: str, numeric: NumericSettings, device: torch.device) -> str:
    """The identity of a resume state: the job's fingerprint, its arithmetic precision and the
    device type. A state of an fp32, bf16 or CPU run is then never resumed by an fp16 run on a GPU
    (whose scaler and masks it does not hold), nor the other way round."""
    return f"{job_id}|precision={numeric.precision}|device={device.type}"


def _cuda_rng_states() -> list[torch.Tensor] | None:
    """Every CUDA generator's state (dropout on a GPU draws from them), or None without CUDA."""
    return torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None


def training_state(*, run_id: str, epoch: int, model: torch.nn.Module, opt, sched, scaler, sampler_gen,
                   history: Sequence[dict]) -> dict[str, Any]:
    """Everything a resumed run needs to continue as if never stopped: weights, optimiser,
    scheduler, gradient scaler, every random generator (CPU, CUDA, the sampler's, Python's and
    NumPy's) and the history."""
    return {"job_id": run_id, "epoch": epoch, "model": model.state_dict(), "scaler": scaler.state_dict(),
            "history": list(history), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "torch_rng": torch.get_rng_state(), "cuda_rng": _cuda_rng_states(),
            "sampler_rng": sampler_gen.get_state(), "python_rng": random.getstate(),
            "numpy_rng": np.random.get_state()}


def restore_training_state(state: dict[str, Any], *, model: torch.nn.Module, opt, sched, scaler, sampler_gen,
                           what: str = "training") -> None:
    """The inverse of :func:`training_state`. A disabled gradient scaler saves an empty state:
    there is nothing to load then (loading it into an enabled scaler raises). CUDA generators are
    restored only when this process has as many CUDA devices as the run that saved them."""
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    cuda = state.get("cuda_rng")
    if cuda is not None:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
            torch.cuda.set_rng_state_all(cuda)
        else:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            log.warning(f"{what}: the resume state holds {len(cuda)} CUDA generator state(s) but this "
                        f"process sees {n} CUDA device(s): the dropout masks after the resume differ "
                        "from those of an uninterrupted run")
    sampler_gen.set_state(state["sampler_rng"])
    random.setstate(state["python_rng"])
    np.random.set_state(state["numpy_rng"])


class TrainingDiverged(RuntimeError):
    """Training diverged: the job stops before anything of the failing epoch is written; the
    state of the last good epoch (``<checkpoint>.resume``) is kept."""


class NonFiniteLoss(TrainingDiverged):
    """A loss term became NaN or infinite."""


class ExplodingLoss(TrainingDiverged):
    """A loss term rose by orders of magnitude within an epoch (still finite)."""


class NonFiniteWeights(TrainingDiverged):
    """A weight or buffer of the model (e.g. BatchNorm's running variance) became NaN or infinite."""


_FIXES = ("a lower learning rate (training.base.lr for phase 0, training.incremental.lr for the "
          "others), fp32 precision or a look at the input features (NaN or inf in the HDF5 file) are the "
          "usual fixes")


def _epoch_means(sums: dict[str, Any], n_batches: int) -> dict[str, float]:
    """Per-epoch means of the accumulated loss terms (one host sync per epoch)."""
    return {k: float(v) / max(n_batches, 1) for k, v in sums.items()}


def _check_finite(means: dict[str, float], *, what: str, epoch: int, epochs: int) -> None:
    bad = [k for k, v in means.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLoss(
            f"{what}: loss term(s) {', '.join(bad)} became NaN or infinite in epoch {epoch} of {epochs} "
            f"(epoch means: {means}). Nothing of this epoch was saved; {_FIXES}")


def _check_rise(means: dict[str, float], start: dict[str, float], *, what: str, epoch: int, epochs: int) -> None:
    """Stop when a loss term exploded over the epoch (:func:`cilaudio.training_history.exploded`):
    its mean against ``start``, the previous epoch's means (the first step's values in the
    first epoch of a job)."""
    bad = exploded(means, start)
    if bad:
        detail = ", ".join(f"{k} {start.get(k, float('nan')):.3g} -> {means[k]:.3g}" for k in bad)
        raise ExplodingLoss(
            f"{what}: loss term(s) {', '.join(bad)} rose by orders of magnitude in epoch {epoch} of "
            f"{epochs} ({detail}; more than {EXPLODING_RISE:g} times the larger of the term's and the "
            f"total's value at the start of the epoch): training diverged. Nothing of this epoch was "
            f"saved; {_FIXES}")


def _check_epoch(means: dict[str, float], before: dict[str, float], model: torch.nn.Module, *, what: str,
                 epoch: int, epochs: int) -> None:
    """Stop a diverging run before its epoch is saved: the epoch's loss ``means`` must be finite
    and must not have exploded against ``before``, and the weights must be finite."""
    _check_finite(means, what=what, epoch=epoch, epochs=epochs)
    _check_rise(means, before, what=what, epoch=epoch, epochs=epochs)
    _check_weights(model, what=what, epoch=epoch, epochs=epochs)


def _check_weights(model: torch.nn.Module, *, what: str, epoch: int, epochs: int) -> None:
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise NonFiniteWeights(
            f"{what}: the model's {describe_tensors(bad)} became NaN or infinite in epoch {epoch} of "
            f"{epochs}, although every loss term stayed finite: training diverged. Nothing of this "
            f"epoch was saved; {_FIXES}")


def fit(*, model: CNN14, data: FeatureDataset, optim: OptimSettings, seed: int, device: torch.device,
         step_loss, what: str, execution: ExecutionSettings = ExecutionSettings(),
         numeric: NumericSettings = NumericSettings(), epoch_size: int | None = None,
         resume: Path | None = None, job_id: str = "", tensorboard: Path | None = None) -> list[dict]:
    """Train for ``optim.epochs`` epochs; with ``resume``, save the whole training state there
    after every epoch (atomically) and continue from it when it exists and belongs to this job.

    The state holds the model, optimiser, scheduler, RNG states (global and the sampler's), the
    epoch and the history so far, so a resumed run ends with the same weights and history as
    an uninterrupted one. ``step_loss(x, y)`` returns the loss and its parts (detached tensors
    or floats); their sums are read once per epoch. Returns the history: one dict per epoch with
    ``epoch``, ``lr`` (the rate the epoch trained with), the mean of every loss part, ``seconds``
    and ``clips_per_s``. Training that diverges stops the job (:class:`TrainingDiverged`) before
    the epoch's state is saved: a part that is NaN or infinite (:class:`NonFiniteLoss`), one that
    rose by orders of magnitude (:class:`ExplodingLoss`), or a weight or buffer that is not
    finite (:class:`NonFiniteWeights`).
    With ``tensorboard``, the same figures are written there as TensorBoard events.
    """
    model.to(memory_format=MEMORY_FORMAT)
    opt = SGD(model.parameters(), lr=optim.lr, momentum=optim.momentum,
                          weight_decay=optim.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=optim.epochs, eta_min=optim.lr_min)
    epoch_size = epoch_size or len(data)
    batches = training_batches(data, optim.batch_size, seed=seed, device=device, epoch_size=epoch_size,
                               num_workers=execution.num_workers, features_on_gpu=execution.features_on_gpu)
    sampler_gen = batches.sampler.generator
    scaler = torch.amp.GradScaler(device.type, enabled=numeric.precision == "fp16" and device.type == "cuda")
    run = run_id(job_id, numeric, device)
    history, first_epoch = _resume(resume, run=run, model=model, opt=opt, sched=sched, scaler=scaler,
                                   sampler_gen=sampler_gen, what=what, epochs=optim.epochs)
    writer = _tensorboard_writer(tensorboard, history)
    total = (optim.epochs - first_epoch) * epoch_size
    progress = Progress(total=total, what="clips", logger=log, prefix=f"{what}: ")
    start = time.monotonic()
    for epoch in range(first_epoch, optim.epochs):
        model.train()
        epoch_start = time.monotonic()
        sums: dict[str, Any] = {}
        first: dict[str, Any] = {}  # the first step's parts: the reference of a job's first epoch
        n_batches = 0
        lr = opt.param_groups[0]["lr"]
        for x, y in batches:
            x = x.to(device, non_blocking=True)  # (batch, frames, mels)
            y = y.to(device, non_blocking=True)  # (batch, classes seen)
            with autocast(device, numeric.precision):
                loss, parts = step_loss(x, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            if not n_batches:
                first = dict(parts)
            n_batches += 1
            progress.step(len(x))
        means = _epoch_means(sums, n_batches)
        _check_epoch(means, history[-1] if history else _epoch_means(first, 1), model, what=what,
                     epoch=epoch + 1, epochs=optim.epochs)
        sched.step()
        seconds = time.monotonic() - epoch_start
        history.append({"epoch": epoch + 1, "lr": lr, **means, "seconds": round(seconds, 3),
                        "clips_per_s": round(epoch_size / seconds, 1) if seconds > 0 else float("nan")})
        if writer is not None:
            _tensorboard_epoch(writer, history[-1])
        if resume is not None and epoch + 1 < optim.epochs:
            state = training_state(run_id=run, epoch=epoch, model=model, opt=opt, sched=sched,
                                   scaler=scaler, sampler_gen=sampler_gen, history=history)
            with atomic_path(resume) as tmp:
                torch.save(state, tmp)
        elapsed = time.monotonic() - start
        done = (epoch + 1 - first_epoch) * epoch_size
        rate = done / elapsed if elapsed > 0 else float("nan")
        shown = " ".join(f"{k}={v:.4f}" for k, v in means.items())
        log.info(f"{what}: epoch {epoch + 1}/{optim.epochs} {shown} lr={lr:.2e} "
                 f"{rate:.1f} clips/s ETA {_duration((total - done) / rate if rate else 0)}")
    if writer is not None:
        writer.close()
    return history


def _resume(resume: Path | None, *, run: str, model, opt, sched, scaler, sampler_gen, what: str,
            epochs: int) -> tuple[list[dict], int]:
    """Restore the training state saved at ``resume`` when it exists and belongs to this job
    (``run``); returns the history of the epochs it holds and the first epoch still to train
    (``[], 0``: start afresh)."""
    if resume is None or not resume.exists():
        return [], 0
    try:
        state = torch.load(resume, map_location="cpu", weights_only=False)
    except Exception as exc:  # a state file we cannot read is only lost time
        log.warning(f"{what}: ignoring unreadable resume state {resume}: {exc}")
        return [], 0
    if state.get("job_id") != run:
        log.info(f"{what}: {resume} belongs to another configuration or input; starting afresh")
        return [], 0
    restore_training_state(state, model=model, opt=opt, sched=sched, scaler=scaler,
                           sampler_gen=sampler_gen, what=what)
    first_epoch = state["epoch"] + 1
    log.info(f"{what}: resuming after epoch {first_epoch} of {epochs} from {resume}")
    return list(state.get("history", [])), first_epoch


def _tensorboard_writer(folder: Path | None, history: Sequence[dict]):
    """A TensorBoard writer for ``folder`` (None: off), with the epochs of ``history`` already
    written again (after a resume the folder may hold them, or not)."""
    if folder is None:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # tensorboard is an optional dependency
        raise RuntimeError("training.tensorboard is on but the `tensorboard` package is not installed: "
                           "`pip install tensorboard` (or `.venv/bin/pip install -e '.[tensorboard]'`), "
                           f"or set training.tensorboard: false ({exc})") from exc
    writer = SummaryWriter(log_dir=str(folder), purge_step=len(history) + 1 if history else None)
    for row in history:
        _tensorboard_epoch(writer, row)
    return writer


def _tensorboard_epoch(writer, row: dict) -> None:
    for key, value in row.items():
        if key != "epoch":
            writer.add_scalar(key if key in ("lr", "seconds", "clips_per_s") else f"loss/{key}",
                              value, global_step=row["epoch"])
    writer.flush()


def write_history(path: Path, history: Sequence[dict], *, phase: int, method: str, seed: int) -> None:
    """The per-epoch table of one phase job (TSV, one row per epoch), written atomically."""
    frame = pd.DataFrame(list(history))
    frame.insert(0, "phase", phase)
    frame.insert(0, "seed", seed)
    frame.insert(0, "method", method)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False)


def train_base(*, class_split: ClassSplit, train_list: Path, features: Path, out: Path,
               model_settings: dict[str, Any], optim: OptimSettings, seed: int,
               execution: ExecutionSettings = ExecutionSettings(), numeric: NumericSettings = NumericSettings(),
               device: str = "auto", threads: int = 1, params: dict | None = None,
               tensorboard: Path | None = None, pretrained: Path | None = None) -> None:
    """Phase 0: BCE with one scalar pos_weight on the base classes, from a fresh CNN14 or, with
    ``pretrained``, from PANNs' AudioSet weights (:func:`cilaudio.pretrained.load_panns`: the
    checkpoint records the file and its hash). Writes the checkpoint ``out`` and its per-epoch
    table (:func:`history_path`)."""
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    set_determinism(numeric.deterministic, dev)
    s = phase_seed(seed, 0)
    seed_everything(s)
    data = training_set(phase=0, class_split=class_split, lists=[train_list], features=features,
                        cumulative=False, in_memory=execution.in_memory)
    classes = list(class_split.seen(0))
    model = CNN14(ModelSettings(n_classes=len(classes), **model_settings)).to(dev)
    extra: dict[str, Any] = {"features": read_settings(features)}
    if pretrained is not None:
        from .pretrained import load_panns

        extra["pretrained"] = load_panns(model, pretrained)
        log.info(f"phase 0 starts from {pretrained} (sha256 {extra['pretrained']['sha256'][:12]}...): "
                 f"{extra['pretrained']['n_tensors_loaded']} tensors taken; not used: "
                 f"{', '.join(extra['pretrained']['not_used'])}")
    pos_weight = pos_weights_of(data.table.targets, 0).to(dev)
    log.info(f"phase 0: {len(data)} excerpts, {len(classes)} classes, {_describe_pos_weight(pos_weight, 0)}, "
             f"device {dev}, model {model.settings}")

    def step_loss(x, y):
        logits, _ = model(x)
        loss = masked_bce_loss(logits, y, torch.ones_like(y), pos_weight)
        return loss, {"bce": loss.detach(), "total": loss.detach()}

    resume = resume_path(out)
    job_id = fingerprint({"params": params, "model": model_settings, "optim": optim, "seed": seed},
                         [train_list, features, *([pretrained] if pretrained is not None else [])])
    history = fit(model=model, data=data, optim=optim, execution=execution, numeric=numeric, seed=s, device=dev,
                   step_loss=step_loss, what="phase 0", resume=resume, job_id=job_id, tensorboard=tensorboard)
    save_checkpoint(out, model=model, classes=classes, phase=0, method="base", seed=seed,
                    params=params or {}, extra=extra)
    # after the checkpoint: a history table stands only beside a finished phase
    write_history(history_path(out), history, phase=0, method="base", seed=seed)
    resume.unlink(missing_ok=True)


def check_previous(state: dict, *, path: Path, class_split: ClassSplit, phase: int) -> None:
    """The previous checkpoint must hold exactly the classes seen before this phase."""
    expected = list(class_split.seen(phase - 1))
    if state["classes"] != expected:
        raise ValueError(
            f"{path} was trained on {len(state['classes'])} classes {state['classes'][:3]}... but phase "
            f"{phase} of the current class split expects phase {phase - 1}'s {len(expected)} classes "
            f"{expected[:3]}...; it comes from another class split: delete it and rerun"
        )


def check_model_settings(state: dict, *, path: Path, expected: dict[str, Any]) -> None:
    """The previous checkpoint's model must have the configured settings ``expected``."""
    for key, value in expected.items():
        if state["settings"].get(key) != value:
            raise ValueError(
                f"{path} is a model with {key}={state['settings'].get(key)!r} but the config says "
                f"model.{key}={value!r}: it comes from another configuration; delete it (and the "
                "later phases) and rerun")


def frozen_copy(path: Path, *, device: torch.device) -> CNN14:
    """The model of checkpoint ``path`` in eval mode with no gradient: the old model of
    distillation and pseudo-labels."""
    old_model, _ = load_checkpoint(path, device=device)
    old_model.eval()
    for p in old_model.parameters():
        p.requires_grad_(False)
    return old_model


def train_incremental(*, phase: int, class_split: ClassSplit, train_lists: Sequence[Path], features: Path,
                      previous: Path, out: Path, method_name: str, method: dict[str, Any],
                      optim: OptimSettings, seed: int, execution: ExecutionSettings = ExecutionSettings(),
                      numeric: NumericSettings = NumericSettings(), device: str = "auto",
                      threads: int = 1, params: dict | None = None,
                      expected_model: dict[str, Any] | None = None, tensorboard: Path | None = None) -> None:
    """Phase k >= 1 of a method: start from phase k-1's model, grow the classifier, train.

    ``method``: the method's settings with every default filled in
    (:func:`cilaudio.methods.complete`); each is carried out by its mechanism, through the
    hooks of :class:`cilaudio.methods.Mechanism`. ``train_lists`` ends with phase k's list;
    cumulative methods give every list up to k, methods that read phase k-1's list (replay's
    exemplar candidates) give it before phase k's.
    """
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    set_determinism(numeric.deterministic, dev)
    s = phase_seed(seed, phase)
    seed_everything(s)
    model, state = load_checkpoint(previous, device=dev)
    check_previous(state, path=previous, class_split=class_split, phase=phase)
    check_model_settings(state, path=previous, expected=expected_model or {})
    n_old = model.settings.n_classes
    n_new = len(class_split.groups[phase])
    old_model = frozen_copy(previous, device=dev) if method_registry.needs_old_model(method) else None
    model.grow_classifier(n_new)
    model.to(dev)
    mechanisms = method_registry.active_mechanisms(method)
    ctx = method_registry.PhaseContext(
        phase=phase, class_split=class_split, model=model, old_model=old_model, previous_state=state,
        train_lists=list(train_lists),
        previous_list=train_lists[-2] if method_registry.needs_previous_list(method) else None,
        features=features, index=excerpt_index(features), device=dev, seed=s, in_memory=execution.in_memory,
        batch_size=optim.batch_size)
    for mechanism in mechanisms:
        if mechanism.stage in method_registry.DATA_STAGES:
            mechanism.prepare(ctx)
    ctx.data = FeatureDataset(features, ctx.table, in_memory=execution.in_memory)
    ctx.pos_weight = pos_weight = pos_weights_of(ctx.data.table.targets, n_old).to(dev)
    log.info(f"phase {phase} ({method_name}): {len(ctx.data)} excerpts, {n_old} old + {n_new} new classes, "
             f"{_describe_pos_weight(pos_weight, n_old)}, device {dev}, "
             f"settings {method_registry.without_defaults(method)}, mechanisms {[m.name for m in mechanisms]}")
    for mechanism in mechanisms:
        if mechanism.stage not in method_registry.DATA_STAGES:
            mechanism.prepare(ctx)
    if ctx.pos_weight is not pos_weight:  # a mechanism changed it (pseudo-labels: after filling)
        pos_weight = ctx.pos_weight.to(dev)
        log.info(f"after the mechanisms' preparation: {_describe_pos_weight(pos_weight, n_old)}")
    step_loss = incremental_step(model=model, old_model=old_model, n_old=n_old, pos_weight=pos_weight,
                                 mechanisms=mechanisms)

    epoch_size = None
    if ctx.epoch_size is not None:
        epoch_size = min(len(ctx.data), ctx.epoch_size)
        log.info(f"epoch size: {epoch_size} of {len(ctx.data)} excerpts (as many as phase {phase}'s own list)")
    resume = resume_path(out)
    job_id = fingerprint({"params": params, "method": method, "optim": optim, "seed": seed},
                         [previous, features, *train_lists])
    fitted = [h for h in (m.fit(ctx) for m in mechanisms) if h is not None]
    if len(fitted) > 1:
        raise ValueError(f"method {method_name!r}: more than one mechanism replaces training")
    history = fitted[0] if fitted else fit(
        model=model, data=ctx.data, optim=optim, execution=execution, numeric=numeric, seed=s, device=dev,
        step_loss=step_loss,
        what=f"phase {phase} {method_name}", epoch_size=epoch_size, resume=resume, job_id=job_id,
        tensorboard=tensorboard)
    extra = {"features": read_settings(features)}
    if state.get("pretrained") is not None:  # where the chain's phase 0 started from
        extra["pretrained"] = state["pretrained"]
    for mechanism in mechanisms:
        mechanism_state = mechanism.state()
        if mechanism_state is not None:
            extra[mechanism.state_name()] = mechanism_state
    save_checkpoint(out, model=model, classes=list(class_split.seen(phase)), phase=phase, method=method_name,
                    seed=seed, params=params or {}, extra=extra)
    # after the checkpoint: a history table stands only beside a finished phase
    write_history(history_path(out), history, phase=phase, method=method_name, seed=seed)
    resume.unlink(missing_ok=True)


def add_terms(total: torch.Tensor, parts: dict[str, Any], terms: dict[str, Any]) -> torch.Tensor:
    """Add a mechanism's loss terms (:meth:`cilaudio.methods.Mechanism.loss`) to ``total`` and
    log them in ``parts``: a tensor as it is, a :class:`cilaudio.methods.Term` weighted (its
    unweighted value logged), a number only logged."""
    for name, term in terms.items():
        if isinstance(term, method_registry.Term):
            total = total + term.weight * term.value
            parts[name] = term.value.detach()
        elif torch.is_tensor(term):
            total = total + term
            parts[name] = term.detach()
        else:
            parts[name] = term
    return total


def incremental_step(*, model: CNN14, old_model: CNN14 | None, n_old: int, pos_weight: torch.Tensor,
                     mechanisms: Sequence[method_registry.Mechanism] = ()):
    """The loss of one batch of an incremental phase, ``step(x, y) -> (loss, parts)``.

    One forward pass of the new model (and, without gradient, of the old one) gives the logits
    and the activations at every point a mechanism asked for (``Mechanism.embedding_points``).
    The mechanisms may change the targets and mask (``adjust``); the BCE runs on the known
    entries (``UNKNOWN`` elsewhere in ``y``); then each mechanism adds its terms (``loss``: the
    papers' distillation, MAS, ...), logged under their names.
    """
    points = tuple(dict.fromkeys(p for m in mechanisms for p in m.embedding_points()))

    def step(x, y):
        mask = (y != UNKNOWN).to(y.dtype)
        logits, embeddings = model.features(x, points)
        old_logits, old_embeddings = None, {}
        if old_model is not None:
            with torch.no_grad():
                old_logits, old_embeddings = old_model.features(x, points)
        batch = method_registry.Batch(x=x, targets=y.clamp(min=0), mask=mask, logits=logits,
                                      old_logits=old_logits, n_old=n_old, model=model,
                                      embeddings=embeddings, old_embeddings=old_embeddings)
        for mechanism in mechanisms:
            mechanism.adjust(batch)
        total = masked_bce_loss(logits, batch.targets, batch.mask, pos_weight)
        parts: dict[str, Any] = {"bce": total.detach()}
        for mechanism in mechanisms:
            total = add_terms(total, parts, mechanism.loss(batch))
        parts["total"] = total.detach()  # last, as the history table shows it
        return total, parts

    return step
