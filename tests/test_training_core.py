"""The training core against hand-built cases: which targets a replayed exemplar keeps, the
pos_weight of each column group, where feature distillation takes the embedding, which logits
each loss term sees, the old model, the learning rate of every epoch, a loss that becomes NaN,
and joint training beside a clip skipped at extraction.

Every expected number here is counted or computed by hand (or by a closed form), not by the
code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from cilaudio import train as T
from cilaudio import workflow_steps as W
from cilaudio.checkpoint import load_checkpoint
from cilaudio.lists import read_classes, read_list
from cilaudio import methods
from cilaudio.training_data import UNKNOWN, training_set
from cilaudio.model import CNN14, ModelSettings
from cilaudio.phases import ClassSplit

OPTIM0 = dict(epochs=2, batch_size=8, lr=0.01, lr_min=1e-4)
OPTIM = dict(epochs=1, batch_size=8, lr=1e-3, lr_min=1e-4)
LOADER = dict(num_workers=0, in_memory=False)
MODEL = dict(width=4, dropout=0.2)
U = UNKNOWN


def _base(root: Path, out: Path, optim: dict = OPTIM0) -> None:
    W.train_base(classes=str(root / "lists/classes.tsv"), train_list=str(root / "lists/train_phase0.tsv"),
                 features=str(root / "dev.h5"), out=str(out), norm="bn", seed=0, model=MODEL,
                 optim=optim, execution=LOADER)


# --- replayed exemplars keep exactly the labels they were trained with -----------------------

def test_replayed_exemplars_are_known_only_for_their_own_phases_classes(prepared):
    """Phase 3 of a 4-phase split (3 + 2 + 1 + 1 classes) with a memory holding an exemplar of
    phase 0, one of phase 1, one of phase 2 and one kept from phases 0 and 2 (labels merged).
    Every class outside an exemplar's own phases, earlier ones included, must be unknown."""
    classes = list(read_classes(prepared / "lists/classes.tsv").classes)  # 7 classes
    class_split = ClassSplit.from_sizes(classes, [3, 2, 1, 1])
    c = classes
    fnames = list(read_list(prepared / "lists/train_phase0.tsv")["fname"][:4])
    # the phase-2 exemplar also holds (unlabelled) sounds of c[0] and c[3]: all_labels says so
    memory = pd.DataFrame([
        {"fname": fnames[0], "labels": f"{c[1]}", "all_labels": f"{c[1]}|{c[5]}", "phases": "0"},
        {"fname": fnames[1], "labels": f"{c[3]}", "all_labels": f"{c[3]}|{c[0]}", "phases": "1"},
        {"fname": fnames[2], "labels": f"{c[5]}", "all_labels": f"{c[5]}|{c[0]}|{c[3]}", "phases": "2"},
        {"fname": fnames[3], "labels": f"{c[2]}|{c[5]}", "all_labels": f"{c[2]}|{c[5]}", "phases": "0|2"},
    ])
    # phase 3's own list: a list whose clips are labelled with c[6] (the only phase-3 class)
    own = pd.DataFrame([{"fname": f, "labels": c[6], "all_labels": c[6]}
                        for f in read_list(prepared / "lists/train_phase2.tsv")["fname"][:2]])
    own_path = prepared / "own_phase3.tsv"
    own.to_csv(own_path, sep="\t", index=False)
    data = training_set(phase=3, class_split=class_split, lists=[own_path], features=prepared / "dev.h5",
                          cumulative=False, bce_on="new", memory=memory)
    t, clip = data.table.targets, data.table.clip
    n_own = len(own)
    expected_memory = {  # columns: c0 c1 c2 | c3 c4 | c5 | c6
        0: [0, 1, 0, U, U, U, U],
        1: [U, U, U, 1, 0, U, U],
        2: [U, U, U, U, U, 1, U],
        3: [0, 0, 1, U, U, 1, U],
    }
    for row, k in zip(t, clip):
        if k < n_own:  # phase 3's own clips: independent learning, old classes unknown
            assert row.tolist() == [U] * 6 + [1]
        else:
            assert row.tolist() == expected_memory[k - n_own], (k - n_own, row)
    assert set(clip[clip >= n_own] - n_own) == {0, 1, 2, 3}


def test_memory_candidates_record_their_phases(prepared):
    from cilaudio.exemplar_memory import candidates

    prev = pd.DataFrame([{"fname": "a", "labels": "x", "all_labels": "x", "phases": "0"},
                         {"fname": "b", "labels": "y", "all_labels": "y", "phases": "1"}])
    listed = pd.DataFrame([{"fname": "b", "labels": "z", "all_labels": "y|z"},
                           {"fname": "c", "labels": "z", "all_labels": "z"}])
    pool = candidates(prev.to_dict("records"), listed, 2).set_index("fname")
    assert pool.loc["a", "phases"] == "0" and pool.loc["c", "phases"] == "2"
    assert pool.loc["b", "phases"] == "1|2" and pool.loc["b", "labels"] == "y|z"
    with pytest.raises(ValueError, match="older cilaudio"):
        candidates(prev.drop(columns="phases").to_dict("records"), listed, 2)


# --- pos_weight per column group ---------------------------------------------------------------

def test_pos_weight_of_each_column_group_hand_counted():
    # phase 1 with 3 old and 2 new classes; 4 new clips and 2 exemplars
    new = [[U, U, U, 1, 0],
           [U, U, U, 0, 0],
           [U, U, U, 1, 1],
           [U, U, U, 0, 0]]
    exemplars = [[1, 0, 0, U, U],
                 [0, 1, 0, U, U]]
    # IndL (new clips only): new columns hold 3 positives, 5 negatives -> 5/3; old: none known -> 1
    pw = T.pos_weights_of(np.array(new, dtype=np.float32), 3)
    assert pw.tolist() == pytest.approx([1, 1, 1, 5 / 3, 5 / 3])
    # replay: old columns of the exemplars: 2 positives, 4 negatives -> 2; new columns unchanged
    pw = T.pos_weights_of(np.array(new + exemplars, dtype=np.float32), 3)
    assert pw.tolist() == pytest.approx([2, 2, 2, 5 / 3, 5 / 3])
    # finetune: the old columns are known zeros (no positive: weight 1, it multiplies nothing)
    finetune = [[0 if v == U else v for v in row] for row in new]
    pw = T.pos_weights_of(np.array(finetune, dtype=np.float32), 3)
    assert pw.tolist() == pytest.approx([1, 1, 1, 5 / 3, 5 / 3])
    # phase 0: one group, the reference's scalar (negatives / positives of the phase's labels)
    base = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]], dtype=np.float32)  # 3 positives, 6 negatives
    assert T.pos_weights_of(base, 0).tolist() == pytest.approx([2, 2, 2])


def test_pos_weight_of_a_real_phase_equals_the_reference_value(prepared):
    """Independent learning's new-class weight is the reference's: computed from the phase's
    own training labels (its classes only), whatever else the data holds."""
    class_split = read_classes(prepared / "lists/classes.tsv")
    lists = [prepared / "lists/train_phase1.tsv"]
    frame = read_list(lists[0])
    new = list(class_split.groups[1])
    y = np.array([[c in f.split("|") for c in new] for f in frame["labels"]], dtype=float)
    excerpts = {f: 0 for f in frame["fname"]}
    import cilaudio.excerpts as D

    index = D.excerpt_index(prepared / "dev.h5")
    counts = np.array([len(index[f]) for f in excerpts])  # each excerpt inherits its clip's labels
    pos = float((y.sum(axis=1) * counts).sum())
    neg = float(((len(new) - y.sum(axis=1)) * counts).sum())
    for bce_on in ("new", "all"):
        data = training_set(phase=1, class_split=class_split, lists=lists, features=prepared / "dev.h5",
                              cumulative=False, bce_on=bce_on)
        pw = T.pos_weights_of(data.table.targets, 3)
        assert pw[3:].tolist() == pytest.approx([neg / pos] * 2)
        assert pw[:3].tolist() == [1.0, 1.0, 1.0]


# --- where feature distillation takes the embedding -------------------------------------------

def test_embedding_after_dropout_is_what_the_classifier_sees_in_training():
    """In TRAINING mode (dropout active), the after-dropout embedding carries the dropout mask:
    zeros where it dropped, the before-dropout values / (1 - p) elsewhere, and pooling it gives
    the logits. The before-dropout embedding has no dropped entries."""
    torch.manual_seed(0)
    p = 0.5
    model = CNN14(ModelSettings(norm="bn", width=4, n_mels=64, n_classes=3, dropout=p))
    model.train()
    x = torch.randn(4, 64, 64)
    torch.manual_seed(1)
    _, before = model(x, embedding="before_dropout")
    torch.manual_seed(1)  # the same dropout masks
    logits, after = model(x, embedding="after_dropout")
    dropped = after == 0
    assert 0.3 < dropped.float().mean().item() < 0.7  # about p of the entries
    assert (before[dropped] != 0).float().mean() > 0.9  # they were not zero before dropout
    torch.testing.assert_close(after[~dropped], before[~dropped] / (1 - p))
    pooled = after.mean(dim=3)
    expected = model.classifier(pooled.max(dim=2).values + pooled.mean(dim=2))
    torch.testing.assert_close(logits, expected)
    model.eval()  # in eval mode the two points are the same
    torch.testing.assert_close(model(x, embedding="after_dropout")[1], model(x, embedding="before_dropout")[1])


def test_methods_default_to_the_references_embedding_point():
    method = methods.complete({"bce_on": "new", "feature_distill": 1.0, "output_distill": "kl"})
    assert method["fd_embedding"] == "after_dropout" and method["fd_pass"] == "shared"
    with pytest.raises(ValueError, match="fd_embedding"):
        methods.complete({"fd_embedding": "middle"})
    with pytest.raises(ValueError, match="fd_pass"):
        methods.complete({"fd_pass": "third"})


class _Scripted(torch.nn.Module):
    """A stand-in model: its forward passes return the given (logits, embedding) pairs in turn
    and record the embedding points asked for (one parameter so that gradients can flow)."""

    def __init__(self, outputs):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.outputs, self.calls = list(outputs), []

    def features(self, x, points):
        self.calls.append(tuple(points))
        logits, emb = self.outputs[len(self.calls) - 1]
        return logits * self.w, {p: emb * self.w for p in points}


def _cos_loss(a, b):
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return 1 - float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("fd_pass", ["shared", "second"])
def test_feature_distillation_uses_the_right_forward_pass(fd_pass):
    """``shared``: one pass of the new model serves every term; ``second``: L_FD on a second
    pass (other dropout masks), BCE and L_OD on the first, as the reference runs it."""
    first = (torch.tensor([[0.2, -0.1, 0.4]]), torch.tensor([[1.0, 2.0, 3.0]]))
    second = (torch.tensor([[9.0, 9.0, 9.0]]), torch.tensor([[3.0, -1.0, 0.5]]))
    old_emb = torch.tensor([[1.0, 1.0, 0.0]])
    new_model = _Scripted([first, second])
    old_model = _Scripted([(torch.tensor([[0.3, 0.0]]), old_emb)])
    method = methods.complete({"bce_on": "new", "feature_distill": 1.0, "fd_pass": fd_pass})
    step = T.incremental_step(model=new_model, old_model=old_model, n_old=2, pos_weight=torch.ones(3),
                              mechanisms=methods.active_mechanisms(method))
    _, parts = step(torch.zeros(1, 1, 1), torch.tensor([[U, U, 1.0]]))
    assert new_model.calls == [("after_dropout",)] * (2 if fd_pass == "second" else 1)
    assert old_model.calls == [("after_dropout",)]
    fd_source = second if fd_pass == "second" else first
    assert float(parts["feature_distill"]) == pytest.approx(_cos_loss(old_emb, fd_source[1]), rel=1e-6)
    # BCE always comes from the first pass: -log sigmoid(0.4) on the one known entry
    assert float(parts["bce"]) == pytest.approx(-math.log(1 / (1 + math.exp(-0.4))), rel=1e-6)


# --- which logits each loss term sees ---------------------------------------------------------

def _grad_of(term_settings: dict, *, mask=None, targets=None):
    """Gradient of the total loss w.r.t. the new logits, the new embedding and the old ones."""
    logits = torch.tensor([[0.3, -0.2, 0.5, 0.1, -0.4], [0.0, 0.7, -0.3, 0.2, 0.6]], requires_grad=True)
    targets = targets if targets is not None else torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 1]])
    old_logits = torch.tensor([[0.1, 0.2, -0.1], [0.3, -0.5, 0.4]], requires_grad=True)
    new_emb = torch.randn(2, 4, 3, 2, generator=torch.Generator().manual_seed(0), requires_grad=True)
    old_emb = torch.randn(2, 4, 3, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    values = methods.complete({"bce_on": "new", **term_settings})
    if mask is None:  # the training set's marking: unknown where the BCE does not train
        mask = torch.ones(2, 5)
        if values["bce_on"] == "new":
            mask[:, :3] = 0
    y = torch.where(mask > 0, targets, torch.full_like(targets, U))
    new_model, old_model = _Scripted([(logits, new_emb)]), _Scripted([(old_logits, old_emb)])
    step = T.incremental_step(model=new_model, old_model=old_model, n_old=3, pos_weight=torch.ones(5),
                              mechanisms=methods.active_mechanisms(values))
    total, _ = step(None, y)
    total.backward()
    zero = torch.zeros(())
    return (logits.grad, new_emb.grad if new_emb.grad is not None else zero,
            old_logits.grad if old_logits.grad is not None else zero,
            old_emb.grad if old_emb.grad is not None else zero)


def test_each_loss_term_sees_only_its_logits():
    # IndL BCE: gradient on the new logits only
    g, g_emb, g_old, g_old_emb = _grad_of({})
    assert (g[:, :3] == 0).all() and (g[:, 3:] != 0).all() and (g_emb == 0).all()
    # finetune BCE: every logit
    g, *_ = _grad_of({"bce_on": "all"})
    assert (g != 0).all()
    # L_OD alone (BCE masked out): the old classes' logits only; the old model gets nothing
    g, g_emb, g_old, _ = _grad_of({"output_distill": "kl"}, mask=torch.zeros(2, 5))
    assert (g[:, :3] != 0).all() and (g[:, 3:] == 0).all() and (g_old == 0).all()
    # L_FD alone: the new embedding only, never a logit or the old embedding
    g, g_emb, _, g_old_emb = _grad_of({"feature_distill": 1.0}, mask=torch.zeros(2, 5))
    assert (g == 0).all() and g_emb.abs().sum() > 0 and (g_old_emb == 0).all()


def test_replay_mask_gives_no_gradient_to_unknown_entries():
    # clip 0: a new clip (new classes known); clip 1: an exemplar of phase 0 (old classes known)
    mask = torch.tensor([[0.0, 0, 0, 1, 1], [1, 1, 1, 0, 0]])
    g, *_ = _grad_of({}, mask=mask)
    assert ((g != 0) == mask.bool()).all()
    # each clip weighs the same: scaling one clip's number of known entries does not change the
    # weight of the other clip's terms (mean per clip, then over clips: 1/2 * 1/n_known)
    s = torch.sigmoid(torch.tensor([[0.3, -0.2, 0.5, 0.1, -0.4], [0.0, 0.7, -0.3, 0.2, 0.6]]))
    y = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 1]])
    torch.testing.assert_close(g[0, 3:], (s[0, 3:] - y[0, 3:]) / 2 / 2)
    torch.testing.assert_close(g[1, :3], (s[1, :3] - y[1, :3]) / 3 / 2)


# --- the old model, the learning rate, the history --------------------------------------------

def test_old_model_stays_in_eval_mode_gets_no_gradient_and_is_unchanged(prepared, tmp_path, monkeypatch):
    _base(prepared, tmp_path / "p0.pt")
    loaded = []
    real = T.load_checkpoint

    def spy(path, device=None):
        model, state = real(path, device=device)
        loaded.append(model)
        return model, state

    monkeypatch.setattr(T, "load_checkpoint", spy)
    seen_modes = []
    method = {"data": "current", "bce_on": "new", "feature_distill": 1.0, "output_distill": "kl"}
    original_step = T.incremental_step

    def watching_step(**kw):
        step = original_step(**kw)

        def wrapped(x, y):
            old = kw["old_model"]
            seen_modes.append((old.training, any(m.training for m in old.modules())))
            return step(x, y)
        return wrapped

    monkeypatch.setattr(T, "incremental_step", watching_step)
    W.train_incremental(classes=str(prepared / "lists/classes.tsv"),
                        train_lists=[str(prepared / "lists/train_phase1.tsv")], features=str(prepared / "dev.h5"),
                        previous=str(tmp_path / "p0.pt"), out=str(tmp_path / "p1.pt"), phase=1, method_name="m",
                        seed=0, method=method, optim=dict(OPTIM, epochs=2), execution=LOADER)
    assert len(loaded) == 2  # the model to train and the old model
    old = loaded[1]
    assert seen_modes and all(mode == (False, False) for mode in seen_modes)
    assert all(p.grad is None and not p.requires_grad for p in old.parameters())
    reference, _ = real(tmp_path / "p0.pt")
    s_old, s_ref = old.state_dict(), reference.state_dict()
    assert all(torch.equal(s_old[k], s_ref[k]) for k in s_ref)  # running statistics included
    trained, _ = real(tmp_path / "p1.pt")
    assert not torch.equal(trained.state_dict()["block6.conv2.weight"], s_ref["block6.conv2.weight"])


def test_learning_rate_of_every_epoch_and_the_history_table(prepared, tmp_path):
    """Cosine annealing stepped once per epoch: epoch e (0-based) of E trains with
    lr_min + (lr - lr_min) * (1 + cos(pi * e / E)) / 2."""
    optim = dict(epochs=5, batch_size=8, lr=0.02, lr_min=1e-3)
    _base(prepared, tmp_path / "p0.pt", optim=optim)
    table = pd.read_csv(T.history_path(tmp_path / "p0.pt"), sep="\t")
    assert table["epoch"].tolist() == [1, 2, 3, 4, 5]
    expected = [1e-3 + (0.02 - 1e-3) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    assert table["lr"].tolist() == pytest.approx(expected, rel=1e-12)
    assert {"method", "seed", "phase", "bce", "total", "seconds", "clips_per_s"} <= set(table.columns)
    assert (table["method"] == "base").all() and (table["phase"] == 0).all()
    assert np.isfinite(table["bce"]).all() and (table["bce"] > 0).all()


def test_incremental_history_has_every_loss_term(prepared, tmp_path):
    _base(prepared, tmp_path / "p0.pt")
    method = {"data": "current", "bce_on": "new", "feature_distill": 1.0, "output_distill": "kl",
              "temperature": 2.0, "lambda_base": 5.0, "lambda_exponent": 0.66, "kd_weight": 1.0}
    W.train_incremental(classes=str(prepared / "lists/classes.tsv"),
                        train_lists=[str(prepared / "lists/train_phase1.tsv")], features=str(prepared / "dev.h5"),
                        previous=str(tmp_path / "p0.pt"), out=str(tmp_path / "p1.pt"), phase=1, method_name="m",
                        seed=0, method=method, optim=dict(OPTIM, epochs=2), execution=LOADER)
    table = pd.read_csv(T.history_path(tmp_path / "p1.pt"), sep="\t")
    assert len(table) == 2
    for col in ("bce", "feature_distill", "output_distill", "lambda", "total"):
        assert np.isfinite(table[col]).all(), col
    assert table["lambda"].tolist() == pytest.approx([5 * (5 / 2) ** 0.66] * 2)  # 3 old + 2 new
    # the total's epoch mean is the mean of the per-step totals: BCE + L_FD + lambda * L_OD
    combined = table["bce"] + table["feature_distill"] + table["lambda"] * table["output_distill"]
    assert table["total"].tolist() == pytest.approx(combined.tolist(), rel=1e-5)


def test_a_loss_that_becomes_nan_stops_the_job_and_keeps_what_was_written(prepared, tmp_path):
    class_split = read_classes(prepared / "lists/classes.tsv")
    data = training_set(phase=0, class_split=class_split, lists=[prepared / "lists/train_phase0.tsv"],
                          features=prepared / "dev.h5", cumulative=False)
    model = CNN14(ModelSettings(norm="bn", width=4, n_mels=64, n_classes=3))
    steps_per_epoch = math.ceil(len(data) / 8)
    calls = {"n": 0}

    def step_loss(x, y):
        calls["n"] += 1
        logits, _ = model(x)
        loss = logits.mean() * 0
        if calls["n"] > steps_per_epoch:  # the second epoch
            loss = loss + float("nan")
        return loss, {"bce": loss.detach(), "total": loss.detach()}

    resume = tmp_path / "p0.pt.resume"
    with pytest.raises(T.NonFiniteLoss, match=r"phase 0.*bce, total.*epoch 2 of 3"):
        T.fit(model=model, data=data, optim=T.OptimSettings(epochs=3, batch_size=8, lr=0.01, lr_min=1e-4),
               seed=0, device=torch.device("cpu"), step_loss=step_loss,
               what="phase 0", resume=resume, job_id="x")
    state = torch.load(resume, weights_only=False)  # epoch 1's state is kept, not overwritten
    assert state["epoch"] == 0 and len(state["history"]) == 1


def test_deterministic_setting_turns_on_deterministic_algorithms():
    try:
        T.set_determinism(True, torch.device("cpu"))
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        T.set_determinism(False, torch.device("cuda"))
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    finally:
        T.set_determinism(False, torch.device("cpu"))


# --- joint training beside a clip skipped at extraction --------------------------------------

def test_joint_skips_a_clip_that_extraction_skipped(prepared, tmp_path, monkeypatch):
    """A clip of phase 1's list left out at extraction (``on_bad_audio: skip``): joint (with
    ``epoch_size: phase``) trains without it, as the other methods do."""
    skipped = read_list(prepared / "lists/train_phase1.tsv")["fname"].iloc[0]
    features = tmp_path / "dev.h5"
    with h5py.File(prepared / "dev.h5", "r") as src, h5py.File(features, "w") as dst:
        names = src["fname"].asstr()[:]
        keep = np.flatnonzero(names != skipped)
        dst.create_dataset("features", data=src["features"][keep])
        dst.create_dataset("fname", data=names[keep].astype(object), dtype=h5py.string_dtype())
        dst.create_dataset("start", data=src["start"][keep])
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        dst.attrs["skipped"] = '{"%s": "unreadable"}' % skipped
    W.train_base(classes=str(prepared / "lists/classes.tsv"), train_list=str(prepared / "lists/train_phase0.tsv"),
                 features=str(features), out=str(tmp_path / "p0.pt"), norm="bn", seed=0, model=MODEL,
                 optim=OPTIM0, execution=LOADER)
    seen_by_fit = {}
    real_fit = T.fit

    def spy(**kw):  # what the epochs are given
        with h5py.File(features, "r") as h5:
            names = h5["fname"].asstr()[:]
        seen_by_fit.update(n_excerpts=len(kw["data"]), epoch_size=kw["epoch_size"],
                           fnames=names[kw["data"].table.rows])
        return real_fit(**kw)

    monkeypatch.setattr(T, "fit", spy)
    W.train_incremental(classes=str(prepared / "lists/classes.tsv"),
                        train_lists=[str(prepared / f"lists/train_phase{k}.tsv") for k in (0, 1)],
                        features=str(features), previous=str(tmp_path / "p0.pt"), out=str(tmp_path / "p1.pt"),
                        phase=1, method_name="joint", seed=0,
                        method={"data": "cumulative", "epoch_size": "phase", "bce_on": "all"},
                        optim=OPTIM, execution=LOADER)
    model, state = load_checkpoint(tmp_path / "p1.pt")
    assert state["classes"] == list(read_classes(prepared / "lists/classes.tsv").seen(1))
    # the training set and the epoch size, counted from the files: every excerpt of the two
    # lists' clips that the features hold (the skipped clip has none), and as many per epoch as
    # phase 1's own list has excerpts left
    seen = dict(seen_by_fit)
    with h5py.File(features, "r") as h5:
        held = pd.Series(h5["fname"].asstr()[:]).value_counts()
    lists = [read_list(prepared / f"lists/train_phase{k}.tsv") for k in (0, 1)]
    union = pd.concat(lists)["fname"].drop_duplicates()
    assert skipped in set(union) and skipped not in held.index
    assert seen["n_excerpts"] == int(held.reindex(union).fillna(0).sum())
    assert seen["epoch_size"] == int(held.reindex(lists[1]["fname"]).fillna(0).sum())
    assert skipped not in set(seen["fnames"])


# --- TensorBoard ------------------------------------------------------------------------------

def test_tensorboard_events_hold_the_history(prepared, tmp_path):
    """The event files hold, per epoch, the same learning rate and loss terms as the table."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    optim = dict(epochs=3, batch_size=8, lr=0.02, lr_min=1e-3)
    W.train_base(classes=str(prepared / "lists/classes.tsv"), train_list=str(prepared / "lists/train_phase0.tsv"),
                 features=str(prepared / "dev.h5"), out=str(tmp_path / "p0.pt"), norm="bn", seed=0, model=MODEL,
                 optim=optim, execution=LOADER, tensorboard=str(tmp_path / "tb"))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    lr = [(e.step, e.value) for e in events.Scalars("lr")]
    expected = [1e-3 + (0.02 - 1e-3) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [s for s, _ in lr] == [1, 2, 3]
    assert [v for _, v in lr] == pytest.approx(expected, rel=1e-6)
    table = pd.read_csv(T.history_path(tmp_path / "p0.pt"), sep="\t")
    assert [e.value for e in events.Scalars("loss/bce")] == pytest.approx(table["bce"].tolist(), rel=1e-6)


def test_tensorboard_without_the_package_says_how_to_install_it(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(RuntimeError, match=r"pip install tensorboard.*training.tensorboard: false"):
        T._tensorboard_writer(tmp_path / "tb", [])


def test_tensorboard_folder_is_beside_the_log_and_only_when_asked():
    log = "logs/synth/bn/joint/seed0/train_phase3.log"
    assert W.tensorboard_dir(log, {"training": {"tensorboard": False}}) is None
    assert W.tensorboard_dir(log, {"training": {}}) is None
    assert W.tensorboard_dir(log, {"training": {"tensorboard": True}}) == \
        "logs/synth/bn/joint/seed0/train_phase3.tensorboard"


# --- feature and output distillation restrain drift ------------------------------------------

def _drift_after_steps(method: dict, steps: int = 20) -> tuple[float, float]:
    """Train a phase-1 model on one fixed batch for ``steps`` SGD steps with ``method``; return
    (mean |old logits - the old model's|, 1 - cos of the flattened embeddings) on that batch in
    eval mode. Same start and batch for every method; no dropout (with it, the reference's L_FD
    compares the new model's dropped-out embedding with the old model's intact one, which pushes
    the embedding even at the start), GroupNorm (no running statistics: the drift is the
    weights')."""
    import copy

    torch.manual_seed(0)
    model = CNN14(ModelSettings(norm="gn", width=4, n_mels=64, n_classes=3, dropout=0.0))
    x = torch.randn(16, 64, 64, generator=torch.Generator().manual_seed(1))
    old = copy.deepcopy(model).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    model.grow_classifier(2)
    y = torch.full((16, 5), U)
    y[:, 3:] = (torch.rand(16, 2, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    step = T.incremental_step(model=model, old_model=old, n_old=3, pos_weight=torch.ones(5),
                              mechanisms=methods.active_mechanisms(methods.complete(method)))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    torch.manual_seed(3)
    for _ in range(steps):
        model.train()
        loss, _ = step(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        new_logits, new_emb = model(x)
        old_logits, old_emb = old(x)
    cos = torch.nn.functional.cosine_similarity(new_emb.reshape(-1), old_emb.reshape(-1), dim=0)
    return float((new_logits[:, :3] - old_logits).abs().mean()), float(1 - cos)


def test_feature_and_output_distillation_restrain_drift():
    """On a fixed batch, from the same start: independent learning alone lets the old outputs
    and the embedding drift from the old model's; adding L_FD and L_OD (the papers' method)
    keeps both closer, by a clear margin."""
    logits_indl, emb_indl = _drift_after_steps({"bce_on": "new"})
    logits_fd_od, emb_fd_od = _drift_after_steps({"bce_on": "new", "feature_distill": 1.0, "output_distill": "kl"})
    assert logits_indl > 0 and emb_indl > 0
    assert logits_fd_od < 0.7 * logits_indl, (logits_fd_od, logits_indl)
    assert emb_fd_od < 0.8 * emb_indl, (emb_fd_od, emb_indl)
