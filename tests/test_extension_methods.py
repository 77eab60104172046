"""The extension mechanisms (pseudo-labels, MAS, balanced replay, analytic classifier) through
a real phase job of the library, on the tiny generated dataset: what each one leaves in the
checkpoint, and the analytic classifier against an independent ridge solve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cilaudio import workflow_steps as W
from cilaudio.checkpoint import load_checkpoint
from cilaudio.excerpts import excerpt_index
from cilaudio.features import open_features
from cilaudio.lists import label_matrix, read_classes, read_list
from cilaudio.train import history_path

from test_train import LOADER, OPTIM, _base

METHODS = {
    "pseudo": {"bce_on": "new", "pseudo_labels": True, "output_distill": "kl"},
    "mas": {"bce_on": "new", "mas": 1.0},
    "balanced": {"bce_on": "new", "replay": "balanced", "memory_clips": 3},
    "analytic": {"analytic": True, "ridge": 0.5},
}


def _phase(root, previous, out, method, phase):
    lists = [str(root / f"lists/train_phase{k}.tsv") for k in (phase - 1, phase)]
    W.train_incremental(classes=str(root / "lists/classes.tsv"), train_lists=lists, features=str(root / "dev.h5"),
                        previous=str(previous), out=str(out), phase=phase, method_name="m", seed=0,
                        method=method, optim=OPTIM, loader=LOADER)


@pytest.fixture(scope="module")
def chains(prepared, tmp_path_factory):
    folder = tmp_path_factory.mktemp("chains")
    _base(prepared, folder / "p0.pt")
    for name, method in METHODS.items():
        previous = folder / "p0.pt"
        for phase in (1, 2):
            out = folder / f"{name}{phase}.pt"
            _phase(prepared, previous, out, method, phase)
            previous = out
    return folder


def test_mas_adds_its_term_and_carries_its_importance(chains):
    history = pd.read_csv(history_path(chains / "mas2.pt"), sep="\t")
    assert "mas" in history.columns and (history["mas"] >= 0).all()
    _, s1 = load_checkpoint(chains / "mas1.pt")
    _, s2 = load_checkpoint(chains / "mas2.pt")
    w1, w2 = s1["mas"]["importance"]["classifier.weight"], s2["mas"]["importance"]["classifier.weight"]
    # phase 2's total = phase 1's (3 classes' rows, padded) + the importance of phase 1's model
    assert w1.shape[0] == 3 and w2.shape[0] == 5
    assert (w2[:3] >= w1).all() and (w2[:3] > w1).any()


def test_balanced_replay_memory_holds_the_budget(chains):
    _, state = load_checkpoint(chains / "balanced2.pt")
    assert len(state["memory"]) == 3


def test_pseudo_labels_train_and_need_the_old_model(chains):
    _, state = load_checkpoint(chains / "pseudo2.pt")
    assert state["classes"] and len(state["classes"]) == 7


def _pooled_embeddings(model, x):
    """The classifier input of CNN14 rebuilt from the block-6 map: mean over frequency, then
    max + mean over time (the architecture's pooling)."""
    with torch.no_grad():
        _, emb = model(x, embedding="before_dropout")  # (n, C6, T', F')
    e = emb.mean(dim=3)
    return (e.max(dim=2).values + e.mean(dim=2)).double().numpy()


def test_analytic_classifier_equals_an_independent_ridge_solve(prepared, chains):
    base, _ = load_checkpoint(chains / "p0.pt")
    model, state = load_checkpoint(chains / "analytic2.pt")
    # the network is phase 0's, untouched (norm statistics included)
    b, m = base.state_dict(), model.state_dict()
    assert all(torch.equal(b[k], m[k]) for k in b if not k.startswith("classifier"))
    split = read_classes(prepared / "lists/classes.tsv")
    index = excerpt_index(prepared / "dev.h5")
    with open_features(prepared / "dev.h5") as h5:
        feats = h5["features"][:]
    w_all, b_all = [], []
    for phase in range(3):
        frame = read_list(prepared / f"lists/train_phase{phase}.tsv")
        y_clip = label_matrix(frame, split.groups[phase], source="test")  # the list's own labels
        rows, ys = [], []
        for i, f in enumerate(frame["fname"]):
            for r in index.get(f, ()):
                rows.append(r)
                ys.append(y_clip[i])
        z = _pooled_embeddings(base, torch.from_numpy(feats[rows]).float())
        za = np.hstack([z, np.ones((len(z), 1))])
        y = np.asarray(ys, dtype=np.float64)
        # ridge as an ordinary least-squares problem with sqrt(ridge) * I rows appended
        a = np.vstack([za, np.sqrt(0.5) * np.eye(za.shape[1])])
        t = np.vstack([y, np.zeros((za.shape[1], y.shape[1]))])
        w = np.linalg.lstsq(a, t, rcond=None)[0]
        w_all.append(w[:-1].T)
        b_all.append(w[-1] - 0.5)
    np.testing.assert_allclose(model.classifier.weight.detach().double().numpy(), np.vstack(w_all),
                               rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.classifier.bias.detach().double().numpy(), np.concatenate(b_all),
                               rtol=1e-3, atol=1e-4)
    assert len(state["analytic"]["phases"]) == 3
    history = pd.read_csv(history_path(chains / "analytic2.pt"), sep="\t")
    assert list(history["epoch"]) == [1] and history["ridge_mse"].iloc[0] >= 0


def test_analytic_refuses_settings_that_would_do_nothing():
    from cilaudio import methods

    with pytest.raises(ValueError, match="analytic replaces SGD training"):
        methods.complete({"analytic": True, "output_distill": "kl"})


def test_the_method_registry_loads_without_torch():
    """Snakemake checks every method against the registry at start-up: importing it (every
    mechanism module) must not import torch, which would add about a second to every run and
    dry run. Mechanism modules import torch inside the functions that use it."""
    import subprocess
    import sys

    code = "import sys, cilaudio.methods as m; m.complete({}); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("settings, message", [
    ({"mas": {"type": "number", "default": 0.0, "description": "x"}}, "belongs to mechanism 'mas'"),
    ({"new_weight": {"type": "number", "default": 0.0}}, "needs a 'description'"),
    ({"new_weight": {"type": "number", "minimum": 0, "default": -1.0, "description": "x"}}, "does not fit"),
])
def test_a_mechanism_with_bad_settings_is_refused_and_not_registered(settings, message):
    from cilaudio import methods

    before = dict(methods.MECHANISMS)
    cls = type("Bad", (methods.Mechanism,), {"name": "bad_mechanism", "settings": settings})
    with pytest.raises(ValueError, match=message):
        methods.register(cls)
    assert methods.MECHANISMS == before
