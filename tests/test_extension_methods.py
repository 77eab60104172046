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
    "analytic_x": {"analytic": True, "ridge": 0.5, "analytic_expansion": 16, "analytic_old_labels": "pseudo"},
}


def _phase(root, previous, out, method, phase):
    lists = [str(root / f"lists/train_phase{k}.tsv") for k in (phase - 1, phase)]
    W.train_incremental(classes=str(root / "lists/classes.tsv"), train_lists=lists, features=str(root / "dev.h5"),
                        previous=str(previous), out=str(out), phase=phase, method_name="m", seed=0,
                        method=method, optim=OPTIM, execution=LOADER)


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


def _excerpts_of_list(prepared, phase, feats, index):
    """A training list's excerpts in the order a phase job reads them (list order, then each
    clip's excerpts) with the list's own labels of that phase's classes."""
    class_split = read_classes(prepared / "lists/classes.tsv")
    frame = read_list(prepared / f"lists/train_phase{phase}.tsv")
    y_clip = label_matrix(frame, class_split.groups[phase], source="test")
    rows, ys = [], []
    for i, f in enumerate(frame["fname"]):
        for r in index.get(f, ()):
            rows.append(r)
            ys.append(y_clip[i])
    return torch.from_numpy(feats[rows]).float(), np.asarray(ys, dtype=np.float64)


def _features(prepared):
    index = excerpt_index(prepared / "dev.h5")
    with open_features(prepared / "dev.h5") as h5:
        return h5["features"][:], index


def test_mas_adds_its_term_and_carries_its_importance(prepared, chains):
    history = pd.read_csv(history_path(chains / "mas2.pt"), sep="\t")
    # the penalty is 0 only at the anchor, which the first step leaves: every epoch's mean is > 0
    assert "mas" in history.columns and (history["mas"] > 0).all()
    m1, s1 = load_checkpoint(chains / "mas1.pt")
    m2, s2 = load_checkpoint(chains / "mas2.pt")
    imp1, imp2 = s1["mas"]["importance"], s2["mas"]["importance"]
    w1, w2 = imp1["classifier.weight"], imp2["classifier.weight"]
    # phase 2's total = phase 1's (3 classes' rows, padded) + the importance of phase 1's model
    assert w1.shape[0] == 3 and w2.shape[0] == 5
    assert (w2[:3] >= w1).all() and (w2[:3] > w1).any()
    # phase 1's importance of the classifier weights, in closed form from the raw outputs of
    # the phase-0 model on phase 0's excerpts (batches of 8, in list order):
    # d ||f||^2 / dW = 2 f h^T per excerpt, Omega = 1/N sum_b |sum_{n in b} 2 f_n h_n^T|
    base, _ = load_checkpoint(chains / "p0.pt")
    feats, index = _features(prepared)
    x, _ = _excerpts_of_list(prepared, 0, feats, index)
    h = _pooled_embeddings(base, x)  # (n, d)
    f = h @ base.classifier.weight.detach().double().numpy().T + base.classifier.bias.detach().double().numpy()
    omega = sum(np.abs((2 * f[b:b + 8, :, None] * h[b:b + 8, None, :]).sum(axis=0)) for b in range(0, len(h), 8))
    np.testing.assert_allclose(w1.double().numpy(), omega / len(h), rtol=1e-3, atol=1e-7)
    # the penalty of the final phase-2 model, recomputed from the checkpoints, is not nil either
    a, p = m1.state_dict(), m2.state_dict()
    final = sum(float((imp2[k][tuple(slice(0, n) for n in a[k].shape)] * (p[k][tuple(slice(0, n) for n in a[k].shape)]
                                                                         - a[k]) ** 2).sum())
                for k in imp2)
    assert final > 0


def _kl_to_uniform(counts):
    """KL(uniform over the classes with any candidate || the memory's label distribution)."""
    eps = 1e-12
    q = (counts + eps) / (counts + eps).sum()
    return float(np.mean(np.log((1 / len(counts)) / q)))


def test_balanced_replay_memory_is_the_most_balanced_choice(prepared, chains):
    """Phase 1's memory (3 of phase 0's clips), against every 3-clip subset of the candidates:
    it holds every old class and its label distribution is among the closest to uniform (greedy
    removal is not guaranteed the very closest)."""
    from itertools import combinations

    class_split = read_classes(prepared / "lists/classes.tsv")
    frame = read_list(prepared / "lists/train_phase0.tsv")
    y = label_matrix(frame, class_split.groups[0], source="test").astype(np.float64)  # (clips, 3)
    kl = {c: _kl_to_uniform(y[list(c)].sum(axis=0)) for c in combinations(range(len(y)), 3)}
    _, state = load_checkpoint(chains / "balanced1.pt")
    assert len(state["memory"]) == 3
    chosen = tuple(sorted(frame.index[frame["fname"].isin([m["fname"] for m in state["memory"]])]))
    assert len(chosen) == 3
    counts = y[list(chosen)].sum(axis=0)
    assert (counts > 0).all()  # every old class is in the memory
    # as balanced as the best quarter of all 3-clip memories (a random choice is not, as a rule)
    share_as_good = np.mean([v <= kl[chosen] + 1e-9 for v in kl.values()])
    assert share_as_good <= 0.25, (kl[chosen], min(kl.values()), share_as_good)
    _, state = load_checkpoint(chains / "balanced2.pt")
    assert len(state["memory"]) == 3


def test_pseudo_labels_fill_the_old_entries_of_a_phase(prepared, chains, tmp_path, monkeypatch):
    """A phase job of the pseudo-label method, every loss call recorded: the old entries of the
    new clips (unknown under independent learning) are filled where the previous model is
    confident (p >= positive -> 1, p <= negative -> 0) and only there, and the old classes' pos_weight is
    negatives / positives over the filled entries of the epoch (1 epoch: each excerpt once)."""
    import cilaudio.train as T

    from cilaudio.methods.distillation import Distillation

    calls, old_logits = [], []
    real_bce, real_distill = T.masked_bce_loss, Distillation.loss

    def spy(logits, targets, mask, pos_weight):  # the BCE of every step, after the mechanisms' adjust
        calls.append({"targets": targets.detach().clone(), "mask": mask.detach().clone(),
                      "pos_weight": pos_weight.clone()})
        return real_bce(logits, targets, mask, pos_weight)

    def distill_spy(self, batch):  # the same step's batch
        old_logits.append(batch.old_logits.detach().clone())
        return real_distill(self, batch)

    # thresholds at the previous model's own quantiles on the phase's excerpts, so that some
    # entries are confident and some are not, however sure the tiny phase-0 model is
    base, _ = load_checkpoint(chains / "p0.pt")
    feats, index = _features(prepared)
    x, _ = _excerpts_of_list(prepared, 1, feats, index)
    with torch.no_grad():
        q = np.quantile(torch.sigmoid(base.eval()(x)[0]).numpy(), [0.25, 0.75])
    positive, negative = float(q[1]), float(q[0])
    assert negative < positive
    method = dict(METHODS["pseudo"], pseudo_label_positive=positive, pseudo_label_negative=negative)
    monkeypatch.setattr(T, "masked_bce_loss", spy)
    monkeypatch.setattr(Distillation, "loss", distill_spy)
    _phase(prepared, chains / "p0.pt", tmp_path / "pseudo1.pt", method, 1)
    t = torch.cat([c["targets"][:, :3] for c in calls])
    m = torch.cat([c["mask"][:, :3] for c in calls])
    assert len(old_logits) == len(calls)
    p = torch.sigmoid(torch.cat(old_logits))
    confident = (p >= positive) | (p <= negative)
    assert 0 < m.sum() < m.numel() and torch.equal(m.bool(), confident)
    assert torch.equal(t[confident], (p[confident] >= positive).to(t.dtype))
    n_pos, n_neg = int(t[confident].sum()), int((1 - t[confident]).sum())
    expected = n_neg / n_pos if n_pos else 1.0
    assert calls[0]["pos_weight"][:3].tolist() == pytest.approx([expected] * 3, rel=1e-6)
    _, state = load_checkpoint(tmp_path / "pseudo1.pt")
    assert len(state["classes"]) == 5


def _pooled_embeddings(model, x):
    """The classifier input of CNN14 rebuilt from the block-6 map: mean over frequency, then
    max + mean over time (the architecture's pooling)."""
    with torch.no_grad():
        _, emb = model.eval()(x, embedding="before_dropout")  # (n, C6, T', F')
    e = emb.mean(dim=3)
    return (e.max(dim=2).values + e.mean(dim=2)).double().numpy()


def _ridge(x, y, ridge):
    """Ridge as an ordinary least-squares problem with sqrt(ridge) * I rows appended (numpy)."""
    a = np.vstack([x, np.sqrt(ridge) * np.eye(x.shape[1])])
    t = np.vstack([y, np.zeros((x.shape[1], y.shape[1]))])
    return np.linalg.lstsq(a, t, rcond=None)[0]


def _analytic_expected(prepared, base, expansion=None, pseudo=False, ridge=0.5):
    """ACIL's classifier after phases 0..2, one ridge solve on ALL phases' excerpts at once:
    each phase's clips labelled for its own classes, 0 for later classes, and 0 (or the previous
    solution's decision, score >= 0.5) for earlier ones. Returns ``[(d + 1, n_seen)]`` per phase."""
    feats, index = _features(prepared)
    xs, ys, heads = [], [], []
    for phase in range(3):
        x, y = _excerpts_of_list(prepared, phase, feats, index)
        z = _pooled_embeddings(base, x)
        if expansion is not None:
            z = np.maximum(z @ expansion, 0)
        xs.append(np.hstack([z, np.ones((len(z), 1))]))
        ys.append(y)
        n_seen = sum(v.shape[1] for v in ys)
        blocks, first = [], 0
        for p, (xp, yp) in enumerate(zip(xs, ys)):
            t = np.zeros((len(xp), n_seen))
            t[:, first:first + yp.shape[1]] = yp
            if p and pseudo:
                t[:, :first] = (xp @ heads[p - 1] >= 0.5)
            blocks.append(t)
            first += yp.shape[1]
        heads.append(_ridge(np.vstack(xs), np.vstack(blocks), ridge))
    return heads


@pytest.mark.parametrize("name", ["analytic", "analytic_x"])
def test_analytic_classifier_equals_one_ridge_solve_on_all_phases(prepared, chains, name):
    base, _ = load_checkpoint(chains / "p0.pt")
    model, state = load_checkpoint(chains / f"{name}2.pt")
    # the network is phase 0's, untouched (norm statistics included)
    b, m = base.state_dict(), model.state_dict()
    assert all(torch.equal(b[k], m[k]) for k in b if not k.startswith("classifier"))
    expansion = None
    if name == "analytic_x":
        expansion = m["expansion"].double().numpy()
        assert expansion.shape[1] == 16 and model.settings.expansion == 16
    heads = _analytic_expected(prepared, base, expansion, pseudo=name == "analytic_x")
    w = heads[-1]
    np.testing.assert_allclose(model.classifier.weight.detach().double().numpy(), w[:-1].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(model.classifier.bias.detach().double().numpy(), w[-1] - 0.5, rtol=1e-3, atol=1e-4)
    # the recursion's state: R = (X^T X + ridge I)^-1 over every excerpt seen, W, phase 0's head
    a = state["analytic"]
    # (float32 features in the model: the recursion itself is checked to 1e-9 in test_analytic.py)
    np.testing.assert_allclose(a["W"].numpy(), w, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(a["base_head"].numpy(), heads[0], rtol=1e-3, atol=1e-6)
    _, s1 = load_checkpoint(chains / f"{name}1.pt")
    np.testing.assert_allclose(s1["analytic"]["W"].numpy(), heads[1], rtol=1e-3, atol=1e-6)
    history = pd.read_csv(history_path(chains / f"{name}2.pt"), sep="\t")
    assert list(history["epoch"]) == [1] and history["ridge_mse"].iloc[0] > 0


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


def test_evaluation_scores_the_phase0_ridge_head_on_the_base_clips(prepared, chains):
    """An analytic checkpoint's evaluation carries subset ``base_head``: phase 0's ridge head
    alone on the frozen network, on the base classes and the phase-0 test clips. Expected from
    the independent ridge solve above, scored by hand (x @ W - 0.5 through the sigmoid) and
    measured with scikit-learn; the other methods' checkpoints have no such subset."""
    from sklearn.metrics import average_precision_score

    from cilaudio.evaluate import phase_metrics
    from cilaudio.excerpts import excerpts_of

    class_split = read_classes(prepared / "lists/classes.tsv")
    base, _ = load_checkpoint(chains / "p0.pt")
    head = _analytic_expected(prepared, base)[0]  # (d + 1, 3): the base classes
    kw = dict(class_split=class_split, base_list=prepared / "lists/test_phase0.tsv", features=prepared / "eval.h5",
              meta={"method": "m"}, device=torch.device("cpu"))
    record = phase_metrics(checkpoint=chains / "analytic2.pt", test_list=prepared / "lists/test_phase2.tsv", **kw)

    test = excerpts_of(read_list(prepared / "lists/test_phase0.tsv"), list(class_split.seen(0)),
                       excerpt_index(prepared / "eval.h5"), source="test", features="eval")
    with open_features(prepared / "eval.h5") as h5:
        x = h5["features"][:][test.rows]
    z = _pooled_embeddings(base, torch.from_numpy(x))
    scores = 1 / (1 + np.exp(-(np.hstack([z, np.ones((len(z), 1))]) @ head - 0.5)))
    y = test.targets
    aps = [average_precision_score(y[:, c], scores[:, c]) for c in range(y.shape[1]) if y[:, c].any()]
    got = record["subsets"]["base_head"]
    assert got["map"] == pytest.approx(np.mean(aps), abs=1e-4)
    assert record["subsets"]["base"]["map"] != pytest.approx(got["map"], abs=1e-6)  # not the phase model
    plain = phase_metrics(checkpoint=chains / "mas2.pt", test_list=prepared / "lists/test_phase2.tsv", **kw)
    assert "base_head" not in plain["subsets"]
