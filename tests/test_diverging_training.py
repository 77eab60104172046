"""Training that diverges without a NaN: a loss that explodes, weights or buffers that are not
finite, and the scores of such a model, are stopped or refused with a message naming the phase,
the epoch, the term, the tensors or the checkpoint; the report flags a loss that rises.

The losses of the hand-built cases are chosen here (constants per epoch), so which epoch and
term must be named is known without running the code under test.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from cilaudio import train as T
from cilaudio import workflow_steps as W
from cilaudio.checkpoint import load_checkpoint, save_checkpoint
from cilaudio.cli import main
from cilaudio.features import FeatureSettings
from cilaudio.lists import read_classes
from cilaudio.model import CNN14, ModelSettings
from cilaudio import training_history as H
from cilaudio.training_data import training_set

OPTIM3 = T.OptimSettings(epochs=3, batch_size=8, lr=0.01, lr_min=1e-4)


def _data(prepared):
    class_split = read_classes(prepared / "lists/classes.tsv")
    return training_set(phase=0, class_split=class_split, lists=[prepared / "lists/train_phase0.tsv"],
                          features=prepared / "dev.h5", cumulative=False)


def _fit(prepared, tmp_path, model, losses_of):
    """``fit`` with a loss whose value per step is ``losses_of(epoch, step)`` (a dict of terms),
    returned through the model's graph (times zero) so that backward and the step run."""
    data = _data(prepared)
    steps = math.ceil(len(data) / OPTIM3.batch_size)
    calls = {"n": 0}

    def step_loss(x, y):
        epoch, step = divmod(calls["n"], steps)
        calls["n"] += 1
        values = losses_of(epoch + 1, step, model)
        logits, _ = model(x)
        zero = logits.mean() * 0
        parts = {k: (zero + v).detach() for k, v in values.items()}
        return zero + parts["total"], parts

    return T.fit(model=model, data=data, optim=OPTIM3, seed=0,
                 device=torch.device("cpu"), step_loss=step_loss, what="phase 0",
                 resume=tmp_path / "p0.pt.resume", job_id="x")


def _model(n_classes: int = 3) -> CNN14:
    torch.manual_seed(0)
    return CNN14(ModelSettings(norm="bn", width=4, n_mels=64, n_classes=n_classes))


# --- the training loop --------------------------------------------------------------------------

def test_a_loss_that_explodes_between_epochs_stops_the_job_and_keeps_the_last_good_state(prepared, tmp_path):
    # epoch 1: bce 0.5 every step; epoch 2: 0.5e6 (six orders of magnitude), finite
    def losses(epoch, step, model):
        bce = 0.5 if epoch == 1 else 0.5e6
        return {"bce": bce, "total": bce}

    with pytest.raises(T.ExplodingLoss, match=r"phase 0.*bce.*epoch 2 of 3") as err:
        _fit(prepared, tmp_path, _model(), losses)
    assert "learning rate" in str(err.value)
    state = torch.load(tmp_path / "p0.pt.resume", weights_only=False)
    assert state["epoch"] == 0 and len(state["history"]) == 1  # epoch 1's state is kept


def test_a_loss_that_explodes_within_the_first_epoch_stops_it(prepared, tmp_path):
    # the first step 0.7, every later one 1e9: the epoch mean is about 1e9 * (n-1)/n
    def losses(epoch, step, model):
        bce = 0.7 if (epoch, step) == (1, 0) else 1e9
        return {"bce": bce, "total": bce}

    with pytest.raises(T.ExplodingLoss, match=r"phase 0.*epoch 1 of 3"):
        _fit(prepared, tmp_path, _model(), losses)
    assert not (tmp_path / "p0.pt.resume").exists()


def test_rises_below_orders_of_magnitude_and_a_distillation_term_from_zero_train_on(prepared, tmp_path):
    # total 0.5 -> 4.0 (8x, under two orders of magnitude); a distillation term from 0 on the
    # first step to 0.3 (below the total): neither is an explosion
    def losses(epoch, step, model):
        fd = 0.0 if (epoch, step) == (1, 0) else 0.3
        bce = {1: 0.5, 2: 4.0, 3: 3.0}[epoch]
        return {"bce": bce, "feature_distill": fd, "total": bce + fd}

    history = _fit(prepared, tmp_path, _model(), losses)
    assert [round(h["bce"], 6) for h in history] == [0.5, 4.0, 3.0]


def test_weights_or_buffers_that_become_infinite_stop_the_job_naming_them(prepared, tmp_path):
    # a finite loss, but BatchNorm's running variance set to inf during epoch 2 (what lr 1e6 did)
    def losses(epoch, step, model):
        if epoch == 2:
            with torch.no_grad():
                model.bn0.running_var[5] = float("inf")
        return {"bce": 0.5, "total": 0.5}

    with pytest.raises(T.NonFiniteWeights, match=r"phase 0.*bn0\.running_var.*epoch 2 of 3"):
        _fit(prepared, tmp_path, _model(), losses)
    state = torch.load(tmp_path / "p0.pt.resume", weights_only=False)
    assert state["epoch"] == 0 and torch.isfinite(state["model"]["bn0.running_var"]).all()


def test_a_huge_learning_rate_writes_no_checkpoint(prepared, tmp_path):
    """The issue's case (training.base.lr 1e6 there; lr 100 on this tiny set, where a larger one
    ends in NaN, which the old guard already caught): the loss went 1e6 -> 1e12 -> 1e16 and the
    job finished. Whatever stops it now (an exploding or infinite loss, infinite weights),
    phase0.pt and its history table are not written."""
    out = tmp_path / "phase0.pt"
    with pytest.raises(T.TrainingDiverged, match="phase 0") as err:
        W.train_base(classes=str(prepared / "lists/classes.tsv"), train_list=str(prepared / "lists/train_phase0.tsv"),
                     features=str(prepared / "dev.h5"), out=str(out), norm="bn", seed=0,
                     model=dict(width=4, dropout=0.2), optim=dict(epochs=4, batch_size=4, lr=100.0, lr_min=10.0),
                     execution=dict(num_workers=0, in_memory=False))
    assert not out.exists() and not T.history_path(out).exists()


# --- checkpoints -----------------------------------------------------------------------------------

def test_a_checkpoint_with_non_finite_tensors_is_not_written(tmp_path):
    model = _model()
    with torch.no_grad():
        model.bn0.running_var[2] = float("inf")
        model.classifier.bias[0] = float("nan")
    out = tmp_path / "phase0.pt"
    out.write_bytes(b"the last good checkpoint")
    with pytest.raises(ValueError, match=r"phase0\.pt.*bn0\.running_var.*classifier\.bias"):
        save_checkpoint(out, model=model, classes=["a", "b", "c"], phase=0, method="base", seed=0, params={})
    assert out.read_bytes() == b"the last good checkpoint"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["phase0.pt"]  # no temporary file left


def _old_checkpoint(path: Path, model: CNN14, *, features: dict | None = None) -> Path:
    """A checkpoint as the code before the check wrote it: whatever the model holds."""
    save_checkpoint(path, model=_model(model.n_classes), classes=[f"c{i}" for i in range(model.n_classes)],
                    phase=0, method="base", seed=0, params={}, extra={"features": features} if features else None)
    state = torch.load(path, weights_only=False)
    state["model_state"] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(state, path)
    return path


def test_loading_a_checkpoint_with_non_finite_tensors_names_it_and_them(tmp_path):
    model = _model()
    with torch.no_grad():
        model.bn0.running_var.fill_(float("inf"))
    path = _old_checkpoint(tmp_path / "phase0.pt", model)
    with pytest.raises(ValueError, match=r"phase0\.pt.*bn0\.running_var"):
        load_checkpoint(path)


# --- scores: finite weights that still give NaN (bn0's scale +-3e38 overflows to +-inf) ---------

SETTINGS = FeatureSettings(sample_rate=8000, n_fft=256, win_length=256, hop_length=80, n_mels=64, f_min=20.0,
                           f_max=3900.0, excerpt_seconds=1.0, hop_seconds=1.0, min_last_seconds=0.5)


def _overflowing(n_classes: int) -> CNN14:
    model = _model(n_classes)
    with torch.no_grad():  # every weight finite (3e38 < float32's 3.4e38); their products are not
        model.bn0.weight.copy_(torch.tensor([3e38, -3e38] * 32))
    return model


def test_tag_refuses_non_finite_scores_naming_the_checkpoint(tmp_path, capsys):
    model = _overflowing(3)
    ckpt = tmp_path / "phase0.pt"
    save_checkpoint(ckpt, model=model, classes=["a", "b", "c"], phase=0, method="base", seed=0, params={},
                    extra={"features": dataclasses.asdict(SETTINGS)})
    t = np.arange(2 * SETTINGS.sample_rate) / SETTINGS.sample_rate
    wav = tmp_path / "clip.wav"
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SETTINGS.sample_rate)
    assert main(["tag", str(ckpt), str(wav), "--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert str(ckpt) in captured.err and "NaN" in captured.err
    assert "nan" not in captured.out.lower()


def test_tag_refuses_a_checkpoint_with_infinite_buffers(tmp_path, capsys):
    model = _model()
    with torch.no_grad():
        model.bn0.running_var.fill_(float("inf"))
    ckpt = _old_checkpoint(tmp_path / "phase0.pt", model, features=dataclasses.asdict(SETTINGS))
    wav = tmp_path / "clip.wav"
    sf.write(wav, np.full(SETTINGS.sample_rate, 0.1, dtype=np.float32), SETTINGS.sample_rate)
    assert main(["tag", str(ckpt), str(wav), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert str(ckpt) in err and "bn0.running_var" in err


def test_evaluate_refuses_non_finite_scores_naming_the_checkpoint(prepared, tmp_path):
    class_split = read_classes(prepared / "lists/classes.tsv")
    ckpt = tmp_path / "phase0.pt"
    save_checkpoint(ckpt, model=_overflowing(len(class_split.seen(0))), classes=list(class_split.seen(0)), phase=0,
                    method="base", seed=0, params={})
    with pytest.raises(ValueError, match=r"phase0\.pt.*NaN or infinite scores"):
        W.evaluate(classes=str(prepared / "lists/classes.tsv"), checkpoints=[str(ckpt)], phases=[0],
                   test_lists=[str(prepared / "lists/test_phase0.tsv")],
                   base_list=str(prepared / "lists/test_phase0.tsv"), features=str(prepared / "eval.h5"),
                   out=str(tmp_path / "metrics.json"), meta={"dataset": "t", "norm": "bn", "run": "base", "seed": "0"}, threshold=0.5, batch_size=16)
    assert not (tmp_path / "metrics.json").exists()


# --- the report -------------------------------------------------------------------------------

def _run(method: str, seed: int, phase: int, losses: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"method": method, "seed": seed, "phase": phase, "epoch": range(1, len(losses) + 1),
                         "lr": 0.01, "bce": losses, "total": losses, "seconds": 1.0, "clips_per_s": 10.0})


def test_rising_flags_by_hand_counted_rises():
    # 8 epochs: the window is max(2, round(0.25 * 8)) = 2 epochs, from epoch 6 to epoch 8
    up = _run("a", 0, 1, [1.0, 0.8, 0.6, 0.5, 0.45, 0.40, 0.44, 0.50])  # (0.50 - 0.40) / 0.40 = 25 %
    noise = _run("b", 0, 1, [1.0, 0.8, 0.6, 0.5, 0.45, 0.40, 0.41, 0.41])  # 2.5 %: not flagged
    # ended above its first epoch (2.0 > 1.0), although falling over its last quarter
    above = _run("c", 2, 3, [1.0, 1e3, 1e4, 1e3, 100.0, 10.0, 5.0, 2.0])
    flagged = H.rising(pd.concat([up, noise, above]))
    assert flagged[["method", "seed", "phase"]].values.tolist() == [["a", 0, 1], ["c", 2, 3]]
    assert flagged["rise"].tolist() == pytest.approx([0.25, 1.0])  # c: (2.0 - 1.0) / 1.0


def test_the_report_flags_a_rising_loss_not_only_a_falling_one():
    table = pd.concat([_run("finetune", 1, 1, [0.26, 1e9, 1e18, 1e18, 1e18]),
                       _run("joint", 0, 1, [1, 0.5, 0.4, 0.4, 0.4])])
    sentences = H.convergence_findings(table)
    (rose,) = [s for s in sentences if "rose" in s]
    assert "finetune" in rose and "phase(s) 1" in rose and "seed(s) 1" in rose
    assert not any(s.startswith("Training: every phase job had levelled off") for s in sentences)
