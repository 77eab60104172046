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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_path
from .batches import training_batches
from .checkpoint import describe_tensors, load_checkpoint, non_finite_tensors, save_checkpoint
from .excerpts import ExcerptTable, FeatureDataset, dominant_clip_warnings, excerpt_index, excerpts_of
from .lists import read_list
from .losses import IncrementalLossSettings, incremental_loss, masked_bce_loss, pos_weight_by_group
from . import exemplar_memory as replay_memory
from .features import read_settings
from .model import CNN14, MEMORY_FORMAT, ModelSettings, set_frozen_blocks
from . import methods as method_registry
from .phases import PhaseSplit
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
class LoaderSettings:
    """How training data reaches the model.

    ``in_memory``: read the phase's features into RAM once instead of streaming from HDF5.
    ``features_on_gpu``: with CUDA, hold them in GPU memory and index batches there (no
    loader processes, no copies per step). ``precision``: ``fp32``, or ``bf16``/``fp16``
    autocast (fp16 with a gradient scaler). ``pin_memory``/non-blocking copies are used
    whenever the device is CUDA. ``deterministic``: deterministic algorithms (cuDNN included)
    so that a GPU rerun gives the same weights; the CPU is deterministic either way.
    """

    num_workers: int = 0
    in_memory: bool = False
    features_on_gpu: bool = False
    precision: str = "fp32"
    deterministic: bool = False


@dataclass(frozen=True)
class MethodSettings:
    """A continual-learning method of the incremental phases: its settings, every one declared
    by a mechanism of :mod:`cilaudio.methods` (where each is described), with typed views of the
    core mechanisms' settings.

    ``data``/``epoch_size``: :mod:`cilaudio.methods.data_source`; ``loss``, ``fd_embedding``,
    ``fd_pass``: :mod:`cilaudio.methods.distillation`; ``replay``/``memory_clips``:
    :mod:`cilaudio.methods.replay`; ``freeze_*``: :mod:`cilaudio.methods.freeze`. ``values``
    holds every setting (defaults filled in), which the extension mechanisms read. Build it with
    :meth:`from_dict`, which checks the settings and fills ``values``.
    """

    data: str = "current"
    epoch_size: str = "all"
    loss: IncrementalLossSettings = field(default_factory=lambda: IncrementalLossSettings(
        bce_on="all", feature_distill=0.0, output_distill="none"))
    replay: str = "none"
    memory_clips: int = 0
    freeze_blocks: tuple[int, ...] = ()
    freeze_norm_stats: bool = False
    fd_embedding: str = "after_dropout"
    fd_pass: str = "shared"
    values: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "method") -> "MethodSettings":
        """Check ``d`` against the method registry (``ValueError`` naming ``where.<setting>``)."""
        v = method_registry.complete(d, where=where)
        loss = IncrementalLossSettings(**{f.name: v[f.name] for f in fields(IncrementalLossSettings)})
        return cls(data=v["data"], epoch_size=v["epoch_size"], loss=loss, replay=v["replay"],
                   memory_clips=int(v["memory_clips"]), freeze_blocks=tuple(v["freeze_blocks"]),
                   freeze_norm_stats=bool(v["freeze_norm_stats"]), fd_embedding=v["fd_embedding"],
                   fd_pass=v["fd_pass"], values=v)

    @property
    def needs_old_model(self) -> bool:
        return method_registry.needs_old_model(self.values)


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


UNKNOWN = -1.0  # target entry that a clip is not labelled for in this phase (no BCE gradient)


def training_set(*, phase: int, split: PhaseSplit, lists: Sequence[Path], features: Path,
                 cumulative: bool, loader: LoaderSettings, bce_on: str = "all",
                 memory: pd.DataFrame | None = None) -> FeatureDataset:
    """Phase k's training excerpts with targets over every class seen so far.

    ``cumulative`` (joint training) takes all given lists, deduplicated by clip, with the
    clips' full annotation restricted to the seen classes; otherwise the LAST list (phase k's)
    with phase k's labels. With ``bce_on="new"`` the earlier classes' entries of phase k's
    clips are marked unknown (``UNKNOWN``: independent learning). A replayed ``memory`` clip
    keeps exactly the labels it was trained with: the classes of the phases it was labelled
    for (its ``phases`` column, :mod:`cilaudio.exemplar_memory`) are known, 1 or 0; every other class,
    earlier phases' included, is unknown (it may well hold those sounds, unlabelled).
    """
    seen = split.seen(phase)
    n_old = len(split.seen(phase - 1)) if phase > 0 else 0
    index = excerpt_index(features)
    for message in dominant_clip_warnings({f"phase {phase}'s training list": lists[-1]}, index):
        log.warning(message)
    if cumulative:
        frame = pd.concat([read_list(p) for p in lists]).drop_duplicates("fname").reset_index(drop=True)
        table = excerpts_of(frame, seen, index, column="all_labels", source=", ".join(map(str, lists)),
                            features=str(features))
    else:
        path = lists[-1]
        table = excerpts_of(read_list(path), seen, index, column="labels", source=str(path),
                            features=str(features))
    if bce_on == "new" and n_old:
        table.targets[:, :n_old] = UNKNOWN
    if memory is not None and len(memory):
        mem = excerpts_of(memory, seen, index, column="labels", source="exemplar memory",
                          features=str(features))
        known = np.zeros((len(memory), len(seen)), dtype=bool)  # (memory clips, classes seen)
        for i, phases in enumerate(replay_memory.known_phases(memory)):
            for p in phases:
                if not 0 <= p < phase:
                    raise ValueError(f"exemplar {memory['fname'].iloc[i]!r} is labelled for phase {p}, "
                                     f"which is not an earlier phase of phase {phase}")
                known[i, split.columns(p)] = True
        mem.targets[~known[mem.clip]] = UNKNOWN
        table = ExcerptTable(np.concatenate([table.rows, mem.rows]),
                             np.concatenate([table.targets, mem.targets]),
                             np.concatenate([table.clip, mem.clip + len(table.clip)]))
    return FeatureDataset(features, table, in_memory=loader.in_memory)


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


def run_id(job_id: str, loader: LoaderSettings, device: torch.device) -> str:
    """The identity of a resume state: the job's fingerprint, its arithmetic precision and the
    device type. A state of an fp32, bf16 or CPU run is then never resumed by an fp16 run on a GPU
    (whose scaler and masks it does not hold), nor the other way round."""
    return f"{job_id}|precision={loader.precision}|device={device.type}"


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


def _check_weights(model: torch.nn.Module, *, what: str, epoch: int, epochs: int) -> None:
    bad = non_finite_tensors(model.state_dict())
    if bad:
        raise NonFiniteWeights(
            f"{what}: the model's {describe_tensors(bad)} became NaN or infinite in epoch {epoch} of "
            f"{epochs}, although every loss term stayed finite: training diverged. Nothing of this "
            f"epoch was saved; {_FIXES}")


def fit(*, model: CNN14, data: FeatureDataset, optim: OptimSettings, loader: LoaderSettings,
         seed: int, device: torch.device, step_loss, what: str, epoch_size: int | None = None,
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
                               num_workers=loader.num_workers, features_on_gpu=loader.features_on_gpu)
    sampler_gen = batches.sampler.generator
    scaler = torch.amp.GradScaler(device.type, enabled=loader.precision == "fp16" and device.type == "cuda")
    first_epoch = 0
    history: list[dict] = []
    run = run_id(job_id, loader, device)
    if resume is not None and resume.exists():
        try:
            state = torch.load(resume, map_location="cpu", weights_only=False)
        except Exception as exc:  # a state file we cannot read is only lost time
            log.warning(f"{what}: ignoring unreadable resume state {resume}: {exc}")
            state = None
        if state is not None and state.get("job_id") == run:
            restore_training_state(state, model=model, opt=opt, sched=sched, scaler=scaler,
                                   sampler_gen=sampler_gen, what=what)
            history = list(state.get("history", []))
            first_epoch = state["epoch"] + 1
            log.info(f"{what}: resuming after epoch {first_epoch} of {optim.epochs} from {resume}")
        elif state is not None:
            log.info(f"{what}: {resume} belongs to another configuration or input; starting afresh")
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
            with autocast(device, loader.precision):
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
        _check_finite(means, what=what, epoch=epoch + 1, epochs=optim.epochs)
        before = history[-1] if history else _epoch_means(first, 1)
        _check_rise(means, before, what=what, epoch=epoch + 1, epochs=optim.epochs)
        _check_weights(model, what=what, epoch=epoch + 1, epochs=optim.epochs)
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


def train_base(*, split: PhaseSplit, train_list: Path, features: Path, out: Path,
               model_settings: dict[str, Any], optim: OptimSettings, loader: LoaderSettings,
               seed: int, device: str = "auto", threads: int = 1, params: dict | None = None,
               tensorboard: Path | None = None) -> None:
    """Phase 0: BCE with one scalar pos_weight on the base classes, from a fresh CNN14. Writes
    the checkpoint ``out`` and its per-epoch table (:func:`history_path`)."""
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    set_determinism(loader.deterministic, dev)
    s = phase_seed(seed, 0)
    seed_everything(s)
    data = training_set(phase=0, split=split, lists=[train_list], features=features,
                        cumulative=False, loader=loader)
    classes = list(split.seen(0))
    model = CNN14(ModelSettings(n_classes=len(classes), **model_settings)).to(dev)
    pos_weight = pos_weights_of(data.table.targets, 0).to(dev)
    log.info(f"phase 0: {len(data)} excerpts, {len(classes)} classes, {_describe_pos_weight(pos_weight, 0)}, "
             f"device {dev}, model {model.settings}")

    def step_loss(x, y):
        logits, _ = model(x)
        loss = masked_bce_loss(logits, y, torch.ones_like(y), pos_weight)
        return loss, {"bce": loss.detach(), "total": loss.detach()}

    resume = resume_path(out)
    job_id = fingerprint({"params": params, "model": model_settings, "optim": optim, "seed": seed},
                         [train_list, features])
    history = fit(model=model, data=data, optim=optim, loader=loader, seed=s, device=dev,
                   step_loss=step_loss, what="phase 0", resume=resume, job_id=job_id, tensorboard=tensorboard)
    save_checkpoint(out, model=model, classes=classes, phase=0, method="base", seed=seed,
                    params=params or {}, extra={"features": read_settings(features)})
    # after the checkpoint: a history table stands only beside a finished phase
    write_history(history_path(out), history, phase=0, method="base", seed=seed)
    resume.unlink(missing_ok=True)


def check_previous(state: dict, *, path: Path, split: PhaseSplit, phase: int) -> None:
    """The previous checkpoint must hold exactly the classes seen before this phase."""
    expected = list(split.seen(phase - 1))
    if state["classes"] != expected:
        raise ValueError(
            f"{path} was trained on {len(state['classes'])} classes {state['classes'][:3]}... but phase "
            f"{phase} of the current class split expects phase {phase - 1}'s {len(expected)} classes "
            f"{expected[:3]}...; it comes from another class split: delete it and rerun"
        )


def train_incremental(*, phase: int, split: PhaseSplit, train_lists: Sequence[Path], features: Path,
                      previous: Path, out: Path, method_name: str, method: MethodSettings,
                      optim: OptimSettings, loader: LoaderSettings, seed: int, device: str = "auto",
                      threads: int = 1, params: dict | None = None,
                      expected_model: dict[str, Any] | None = None, tensorboard: Path | None = None) -> None:
    """Phase k >= 1 of ``method``: start from phase k-1's model, grow the classifier, train.

    ``train_lists`` ends with phase k's list; cumulative methods give every list up to k,
    replay methods phase k-1's list before it (the exemplar candidates with the old memory).
    """
    torch.set_num_threads(max(1, threads))
    dev = pick_device(device)
    set_determinism(loader.deterministic, dev)
    s = phase_seed(seed, phase)
    seed_everything(s)
    model, state = load_checkpoint(previous, device=dev)
    check_previous(state, path=previous, split=split, phase=phase)
    for key, value in (expected_model or {}).items():
        if state["settings"].get(key) != value:
            raise ValueError(
                f"{previous} is a model with {key}={state['settings'].get(key)!r} but the config says "
                f"model.{key}={value!r}: it comes from another configuration; delete it (and the "
                "later phases) and rerun")
    n_old = model.settings.n_classes
    n_new = len(split.groups[phase])
    old_model = None
    if method.needs_old_model:
        old_model, _ = load_checkpoint(previous, device=dev)
        old_model.eval()
        for p in old_model.parameters():
            p.requires_grad_(False)
    model.grow_classifier(n_new)
    model.to(dev)
    if method.freeze_blocks:
        set_frozen_blocks(model, method.freeze_blocks, freeze_norm_stats=method.freeze_norm_stats)
        log.info(f"frozen blocks {list(method.freeze_blocks)} "
                 f"({'with' if method.freeze_norm_stats else 'without'} their norm statistics)")
    classes = list(split.seen(phase))
    previous_list = train_lists[-2] if method_registry.needs_previous_list(method.values) else None

    memory = None
    if method.replay != "none":
        pool = replay_memory.candidates(state.get("memory"), read_list(previous_list), phase - 1)
        memory = replay_memory.select(pool, split.seen(phase - 1), budget=method.memory_clips,
                                      strategy=method.replay, seed=s)
        log.info(f"exemplar memory: {len(memory)} of {len(pool)} old clips ({method.replay})")
    data = training_set(phase=phase, split=split, lists=train_lists, features=features,
                        cumulative=method.data == "cumulative", loader=loader,
                        bce_on=method.loss.bce_on, memory=memory)
    pos_weight = pos_weights_of(data.table.targets, n_old).to(dev)
    mechanisms = method_registry.active_mechanisms(method.values)
    log.info(f"phase {phase} ({method_name}): {len(data)} excerpts, {n_old} old + {n_new} new classes, "
             f"{_describe_pos_weight(pos_weight, n_old)}, device {dev}, loss {method.loss}"
             + (f", L_FD on the embedding {method.fd_embedding} ({method.fd_pass} forward pass)"
                if method.loss.feature_distill > 0 else "")
             + (f", mechanisms {[m.name for m in mechanisms]}" if mechanisms else ""))
    ctx = method_registry.PhaseContext(
        phase=phase, split=split, model=model, old_model=old_model, previous_state=state,
        data=data, previous_list=previous_list, features=features, device=dev, seed=s,
        in_memory=loader.in_memory, batch_size=optim.batch_size, pos_weight=pos_weight)
    for mechanism in mechanisms:
        mechanism.prepare(ctx)
    if ctx.pos_weight is not pos_weight:  # a mechanism changed it (pseudo-labels: after filling)
        pos_weight = ctx.pos_weight.to(dev)
        log.info(f"after the mechanisms' preparation: {_describe_pos_weight(pos_weight, n_old)}")
    step_loss = incremental_step(model=model, old_model=old_model, method=method, n_old=n_old,
                                 pos_weight=pos_weight, mechanisms=mechanisms)

    epoch_size = None
    if method.epoch_size == "phase":
        index = excerpt_index(features)
        own = sum(len(index.get(f, ())) for f in read_list(train_lists[-1])["fname"])  # skipped clips: none
        epoch_size = min(len(data), own)
        log.info(f"epoch size: {epoch_size} of {len(data)} excerpts (as many as phase {phase}'s own list)")
    resume = resume_path(out)
    job_id = fingerprint({"params": params, "method": method, "optim": optim, "seed": seed},
                         [previous, features, *train_lists])
    fitted = [h for h in (m.fit(ctx) for m in mechanisms) if h is not None]
    if len(fitted) > 1:
        raise ValueError(f"method {method_name!r}: more than one mechanism replaces training")
    history = fitted[0] if fitted else fit(
        model=model, data=data, optim=optim, loader=loader, seed=s, device=dev, step_loss=step_loss,
        what=f"phase {phase} {method_name}", epoch_size=epoch_size, resume=resume, job_id=job_id,
        tensorboard=tensorboard)
    extra = {"features": read_settings(features)}
    if memory is not None:
        extra["memory"] = memory.to_dict("records")
    for mechanism in mechanisms:
        mechanism_state = mechanism.state()
        if mechanism_state:
            extra[mechanism.name] = mechanism_state
    save_checkpoint(out, model=model, classes=classes, phase=phase, method=method_name, seed=seed,
                    params=params or {}, extra=extra)
    # after the checkpoint: a history table stands only beside a finished phase
    write_history(history_path(out), history, phase=phase, method=method_name, seed=seed)
    resume.unlink(missing_ok=True)


def incremental_step(*, model: CNN14, old_model: CNN14 | None, method: MethodSettings, n_old: int,
                     pos_weight: torch.Tensor, mechanisms: Sequence[method_registry.Mechanism] = ()):
    """The loss of one batch of an incremental phase, ``step(x, y) -> (loss, parts)``.

    BCE on the known entries of ``y`` (``UNKNOWN`` elsewhere); L_OD on the first forward pass's
    old-class logits against the old model's; L_FD on the embedding at ``method.fd_embedding``,
    of the same pass (``fd_pass: shared``) or of a second pass with its own dropout masks
    (``second``, the reference's way). The old model runs without gradient. The extension
    ``mechanisms`` may first change the targets and mask (:meth:`Mechanism.adjust`) and then add
    their own terms to the total (:meth:`Mechanism.loss`, logged under their names).
    """
    fd = method.loss.feature_distill > 0
    point = method.fd_embedding

    def step(x, y):
        mask = (y != UNKNOWN).to(y.dtype)
        logits, emb = model(x, embedding=point)
        old_logits = old_emb = None
        if old_model is not None:
            with torch.no_grad():
                old_logits, old_emb = old_model(x, embedding=point)
        batch = method_registry.Batch(x=x, targets=y.clamp(min=0), mask=mask, logits=logits,
                                      old_logits=old_logits, n_old=n_old, model=model)
        for mechanism in mechanisms:
            mechanism.adjust(batch)
        if fd and method.fd_pass == "second":
            _, emb = model(x, embedding=point)
        total, parts = incremental_loss(logits=logits, targets=batch.targets, n_old=n_old, pos_weight=pos_weight,
                                        settings=method.loss, old_logits=old_logits,
                                        old_embedding=old_emb, new_embedding=emb, mask=batch.mask)
        for mechanism in mechanisms:
            for name, term in mechanism.loss(batch).items():
                total = total + term
                parts[name] = term.detach()
        parts.pop("total")
        parts["total"] = total.detach()  # last, as the history table shows it
        return total, parts

    return step
