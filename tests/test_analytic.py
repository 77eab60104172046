"""ACIL's recursive least squares against a one-shot ridge solve on all phases' data (numpy),
the targets of earlier classes on later clips (zeros, or L3A's pseudo-labels), and the random
expansion layer by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cilaudio import methods
from cilaudio.methods.analytic import phase_targets, rls_start, rls_update
from cilaudio.model import CNN14, ModelSettings

RIDGE = 0.7
SIZES = [(70, 3), (40, 2), (30, 2)]  # (excerpts, new classes) of phases 0, 1, 2


def _stream(seed=0, dim=6):
    """Three phases of features (intercept column last) and 0/1 labels of their own classes."""
    rng = np.random.default_rng(seed)
    phases = []
    for n, c in SIZES:
        x = np.hstack([rng.normal(size=(n, dim - 1)), np.ones((n, 1))])
        y = (rng.random((n, c)) < 0.4).astype(np.float64)
        phases.append((x, y))
    return phases


def _ridge(x, y, ridge=RIDGE):
    """One-shot ridge as ordinary least squares with sqrt(ridge) * I rows appended (numpy)."""
    d = x.shape[1]
    a = np.vstack([x, np.sqrt(ridge) * np.eye(d)])
    t = np.vstack([y, np.zeros((d, y.shape[1]))])
    return np.linalg.lstsq(a, t, rcond=None)[0]


def _joint_targets(phases, k, old_labels, heads=None):
    """Targets of phases 0..k over the classes seen by phase k: each phase's own classes from its
    labels, later classes 0, earlier classes 0 or (pseudo) the head of phase p-1's decision."""
    n_seen = sum(c for _, c in SIZES[:k + 1])
    blocks, first = [], 0
    for p, (x, y) in enumerate(phases[:k + 1]):
        t = np.zeros((len(x), n_seen))
        t[:, first:first + y.shape[1]] = y
        if p and old_labels == "pseudo":
            t[:, :first] = (x @ heads[p - 1] >= 0.5).astype(np.float64)
        blocks.append(t)
        first += y.shape[1]
    return np.vstack(blocks)


def _recursive(phases, old_labels, chunk):
    r, w = rls_start(phases[0][0].shape[1], RIDGE)
    heads, first = [], 0
    for p, (x, y) in enumerate(phases):
        xt = torch.from_numpy(x)
        n_seen = first + y.shape[1]
        y_full = torch.zeros(len(x), n_seen, dtype=torch.float64)
        y_full[:, first:n_seen] = torch.from_numpy(y)
        t = phase_targets(y_full, slice(first, n_seen), n_seen, old_labels=old_labels, x=xt, w_previous=w)
        r, w = rls_update(r, w, xt, t, chunk=chunk)
        heads.append(w.numpy().copy())
        first = n_seen
    return r.numpy(), heads


@pytest.mark.parametrize("chunk", [512, 16])  # one step per phase, and several per phase
def test_recursion_equals_the_ridge_solution_on_all_data_so_far(chunk):
    phases = _stream()
    r, heads = _recursive(phases, "zero", chunk)
    for k in range(3):
        x_all = np.vstack([x for x, _ in phases[:k + 1]])
        expected = _ridge(x_all, _joint_targets(phases, k, "zero"))
        np.testing.assert_allclose(heads[k], expected, rtol=1e-9, atol=1e-10)
    # R is the inverse of the one autocorrelation matrix over everything seen (+ ridge I)
    x_all = np.vstack([x for x, _ in phases])
    np.testing.assert_allclose(r, np.linalg.inv(x_all.T @ x_all + RIDGE * np.eye(x_all.shape[1])),
                               rtol=1e-9, atol=1e-12)


def test_old_heads_see_the_new_clips_as_negatives():
    """Every head moves in a later phase (not only the new classes'): the old classes' columns
    after phase 2 differ from those after phase 0, and they equal the joint solution."""
    phases = _stream(seed=1)
    _, heads = _recursive(phases, "zero", 512)
    assert np.abs(heads[2][:, :3] - heads[0]).max() > 1e-3
    per_phase = _ridge(phases[0][0], phases[0][1])  # the old per-phase solve: phase 0's clips only
    assert np.abs(heads[2][:, :3] - per_phase).max() > 1e-3


def test_pseudo_labels_equal_the_ridge_solution_on_the_filled_targets():
    phases = _stream(seed=2)
    _, heads = _recursive(phases, "pseudo", 16)
    expected_heads = []
    for k in range(3):
        x_all = np.vstack([x for x, _ in phases[:k + 1]])
        expected_heads.append(_ridge(x_all, _joint_targets(phases, k, "pseudo", expected_heads)))
        np.testing.assert_allclose(heads[k], expected_heads[k], rtol=1e-9, atol=1e-10)
    # the pseudo-labels did fill some earlier entries with 1 (else the case tests nothing)
    assert _joint_targets(phases, 2, "pseudo", expected_heads)[70:, :3].sum() > 0


def test_targets_by_hand():
    y = torch.tensor([[-1., -1., 1., 0.], [-1., -1., 0., 1.]])  # 2 old classes (unknown), 2 new
    x = torch.tensor([[1., 0., 1.], [0., 1., 1.]], dtype=torch.float64)
    w = torch.tensor([[0.9, 0.1], [0.1, 0.2], [0.0, 0.3]], dtype=torch.float64)  # scores [0.9, 0.4], [0.1, 0.5]
    assert phase_targets(y, slice(2, 4), 4, old_labels="zero").tolist() == [[0, 0, 1, 0], [0, 0, 0, 1]]
    assert phase_targets(y, slice(2, 4), 4, old_labels="pseudo", x=x, w_previous=w).tolist() == \
        [[1, 0, 1, 0], [0, 1, 0, 1]]


def test_expansion_layer_by_hand():
    torch.manual_seed(0)
    model = CNN14(ModelSettings(norm="bn", width=4, n_classes=3)).eval()
    x = torch.randn(2, 64, 64)
    with torch.no_grad():
        _, emb = model(x)
        h = emb.mean(dim=3)
        h = h.max(dim=2).values + h.mean(dim=2)  # (2, 128): the pooled embedding
        model.add_expansion(10, seed=5)
        e = model.expansion
        assert e.shape == (128, 10) and e.abs().max() <= 1 / 128 ** 0.5 and not e.requires_grad
        assert model.classifier.in_features == 10 and model.classifier.out_features == 3
        logits, _ = model(x)
        expected = torch.relu(h @ e) @ model.classifier.weight.T + model.classifier.bias
        torch.testing.assert_close(logits, expected)
    assert "expansion" in model.state_dict() and all(p is not e for p in model.parameters())
    # a checkpoint's settings rebuild it
    again = CNN14(model.settings)
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval()(x)[0], logits)
    other = CNN14(ModelSettings(norm="bn", width=4, n_classes=3))
    other.add_expansion(10, seed=5)
    torch.testing.assert_close(other.expansion, e)  # the seed fixes it


def test_settings_are_registered():
    values = methods.complete({"analytic": True, "analytic_expansion": 64, "analytic_old_labels": "pseudo"})
    assert values["ridge"] == 1.0
    with pytest.raises(ValueError, match="analytic_old_labels"):
        methods.complete({"analytic": True, "analytic_old_labels": "maybe"})
    with pytest.raises(ValueError, match="analytic_expansion"):
        methods.complete({"analytic_expansion": 64})  # analytic off: it would do nothing
