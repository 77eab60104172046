"""Tests for cilaudio.cka: checks against closed forms, a numpy formula and the biased estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cilaudio.cka as cka_module
from cilaudio.cka import MinibatchCKA, hsic_unbiased, linear_cka_biased

DT = torch.float64


def _correlated(gen: torch.Generator, n: int, p: int = 8, q: int = 6, noise: float = 1.0):
    """X (n, p) standard normal and Y = X W + noise (n, q), with W fixed by the generator."""
    x = torch.randn(n, p, generator=gen, dtype=DT)
    w = torch.randn(p, q, generator=gen, dtype=DT)
    y = x @ w + noise * torch.randn(n, q, generator=gen, dtype=DT)
    return x, y


def _minibatch_cka(batches_x, batches_y) -> float:
    """CKA of one layer against one layer, accumulated over the given batches."""
    m = MinibatchCKA(1, 1)
    for bx, by in zip(batches_x, batches_y):
        m.update([bx], [by])
    return float(m.compute()[0, 0])


def _hsic_numpy(k: np.ndarray, l: np.ndarray) -> float:
    """The unbiased HSIC formula written out directly."""
    n = k.shape[0]
    kt = k.copy()
    lt = l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    one = np.ones(n)
    value = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (one @ kt @ lt @ one)
    )
    return float(value / (n * (n - 3)))


def _hsic_biased_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Biased HSIC tr(K H L H) / (n-1)^2 with linear kernels."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(x @ x.T @ h @ y @ y.T @ h) / (n - 1) ** 2)


def test_hsic_unbiased_matches_numpy_formula():
    rng = np.random.default_rng(0)
    for n in (4, 5, 17):
        x = rng.normal(size=(n, 7))
        y = rng.normal(size=(n, 3)) + x[:, :3]
        k, l = x @ x.T, y @ y.T
        got = hsic_unbiased(torch.from_numpy(k), torch.from_numpy(l))
        assert got.dtype == torch.float64
        assert float(got) == pytest.approx(_hsic_numpy(k, l), rel=1e-10, abs=1e-12)
        # the diagonal of the input is ignored
        k2 = k + np.diag(rng.normal(size=n))
        assert float(hsic_unbiased(torch.from_numpy(k2), torch.from_numpy(l))) == pytest.approx(
            _hsic_numpy(k, l), rel=1e-10, abs=1e-12
        )
    # float32 input is computed in float64
    x32 = torch.from_numpy(rng.normal(size=(9, 4))).float()
    k32 = x32 @ x32.T
    assert hsic_unbiased(k32, k32).dtype == torch.float64


def test_hsic_unbiased_is_unbiased():
    """Mean over many small draws: ~0 for independent data (the biased HSIC is clearly positive),
    and ~ the population value ||Cov(X, Y)||_F^2 = ||W||_F^2 for Y = X W + noise, X ~ N(0, I)."""
    rng = np.random.default_rng(1)
    n, p, q, draws = 8, 3, 2, 3000
    w = np.array([[1.0, 0.0], [0.5, -1.0], [0.0, 0.0]])
    population = float((w**2).sum())
    unbiased_indep, biased_indep, unbiased_dep = [], [], []
    for _ in range(draws):
        x = rng.normal(size=(n, p))
        y = rng.normal(size=(n, q))
        kx, ky = torch.from_numpy(x @ x.T), torch.from_numpy(y @ y.T)
        unbiased_indep.append(float(hsic_unbiased(kx, ky)))
        biased_indep.append(_hsic_biased_numpy(x, y))
        yd = x @ w + rng.normal(size=(n, q))
        unbiased_dep.append(float(hsic_unbiased(kx, torch.from_numpy(yd @ yd.T))))
    for values in (unbiased_indep, biased_indep, unbiased_dep):
        assert np.isfinite(values).all()
    sem = np.std(unbiased_indep) / np.sqrt(draws)
    assert abs(np.mean(unbiased_indep)) < 4 * sem
    sem_b = np.std(biased_indep) / np.sqrt(draws)
    assert np.mean(biased_indep) > 20 * sem_b  # biased estimator: clearly positive
    sem_d = np.std(unbiased_dep) / np.sqrt(draws)
    assert abs(np.mean(unbiased_dep) - population) < 4 * sem_d


def test_small_batches_raise():
    k = torch.eye(3, dtype=DT)
    with pytest.raises(ValueError, match="at least 4"):
        hsic_unbiased(k, k)
    m = MinibatchCKA(1, 1)
    x = torch.randn(3, 5)
    with pytest.raises(ValueError, match="at least 4"):
        m.update([x], [x])
    with pytest.raises(RuntimeError):
        m.compute()


def test_update_validates_inputs():
    m = MinibatchCKA(2, 1)
    x = torch.randn(8, 5)
    with pytest.raises(ValueError, match="layers"):
        m.update([x], [x])
    with pytest.raises(ValueError, match="batch size"):
        m.update([x, torch.randn(7, 5)], [x])
    with pytest.raises(ValueError):
        hsic_unbiased(torch.eye(5), torch.eye(6))


def test_identical_features_give_one_and_matrix_shape():
    gen = torch.Generator().manual_seed(0)
    n_layers = 3
    m_self = MinibatchCKA(n_layers, n_layers)
    m_cross = MinibatchCKA(n_layers, 2)
    for _ in range(3):
        acts = [torch.randn(32, 4, 5, 3, generator=gen) for _ in range(n_layers)]  # (n, C, T, F)
        other = [torch.randn(32, 10, generator=gen), acts[0].reshape(32, -1) * 2.0]
        m_self.update(acts, acts)
        m_cross.update(acts, other)
    mat = m_self.compute()
    assert mat.shape == (n_layers, n_layers)
    np.testing.assert_allclose(np.diag(mat), 1.0, atol=1e-6)
    np.testing.assert_allclose(mat, mat.T, atol=1e-12)
    cross = m_cross.compute()
    assert cross.shape == (n_layers, 2)
    # B's layer 1 is A's layer 0 flattened and scaled: CKA 1; independent layers: small
    assert cross[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.abs(cross[:, 0]) < 0.3)


def test_each_gram_matrix_computed_once_per_batch(monkeypatch):
    calls = []
    original = cka_module._gram

    def counting(x):
        calls.append(x.shape)
        return original(x)

    monkeypatch.setattr(cka_module, "_gram", counting)
    m = MinibatchCKA(4, 3)
    m.update([torch.randn(6, 2)] * 4, [torch.randn(6, 3)] * 3)
    assert len(calls) == 4 + 3


def test_invariances():
    gen = torch.Generator().manual_seed(1)
    batches = [_correlated(gen, 64) for _ in range(4)]
    xs = [b[0] for b in batches]
    ys = [b[1] for b in batches]
    base = _minibatch_cka(xs, ys)
    assert 0.2 < base < 0.99

    q_mat, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=DT))  # orthogonal
    assert _minibatch_cka(xs, [y @ q_mat for y in ys]) == pytest.approx(base, abs=1e-9)
    assert _minibatch_cka(xs, [3.7 * y for y in ys]) == pytest.approx(base, abs=1e-9)
    # the unbiased estimator is also exactly invariant to a constant offset of the features
    offset = 5.0 * torch.randn(6, generator=gen, dtype=DT)
    assert _minibatch_cka(xs, [y + offset for y in ys]) == pytest.approx(base, abs=1e-9)

    # an invertible but anisotropic map changes the value
    a_mat = torch.diag(torch.tensor([10.0, 1.0, 0.1, 1.0, 3.0, 0.3], dtype=DT))
    a_mat = a_mat + 0.1 * torch.randn(6, 6, generator=gen, dtype=DT)
    assert torch.linalg.matrix_rank(a_mat) == 6
    assert abs(_minibatch_cka(xs, [y @ a_mat for y in ys]) - base) > 1e-2


def test_agrees_with_biased_estimator_on_large_batches():
    gen = torch.Generator().manual_seed(2)
    x_all, y_all = _correlated(gen, 2000, p=10, q=8, noise=2.0)
    xs, ys = x_all.split(500), y_all.split(500)
    minibatch = _minibatch_cka(xs, ys)
    biased = linear_cka_biased(x_all, y_all)
    assert 0.2 < biased < 0.95
    assert minibatch == pytest.approx(biased, abs=0.02)


def test_linear_cka_biased_against_numpy():
    rng = np.random.default_rng(3)
    for n, p, q in ((50, 4, 6), (10, 30, 40)):  # feature form and Gram form
        x = rng.normal(size=(n, p)) + 3.0
        y = np.tanh(x[:, :1] @ rng.normal(size=(1, q))) + rng.normal(size=(n, q))
        h = np.eye(n) - np.ones((n, n)) / n
        kx, ky = h @ x @ x.T @ h, h @ y @ y.T @ h
        expected = np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky))
        assert linear_cka_biased(x, y) == pytest.approx(expected, rel=1e-10)
        assert linear_cka_biased(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError):
        linear_cka_biased(np.zeros((5, 2)), np.zeros((6, 2)))
