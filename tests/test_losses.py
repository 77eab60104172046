"""Tests of cilaudio.losses against values computed independently (numpy, closed forms)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cilaudio import methods
from cilaudio.losses import (
    adaptive_weight,
    bce_loss,
    feature_distillation_loss,
    output_distillation_bce,
    output_distillation_kl,
    pos_weight_from_labels,
)


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------- pos_weight


def test_pos_weight_counts() -> None:
    labels = torch.tensor([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.float32)
    # 4 positives, 12 - 4 = 8 negatives
    assert pos_weight_from_labels(labels).item() == pytest.approx(2.0)
    assert pos_weight_from_labels(labels).dim() == 0


def test_pos_weight_no_positive_raises() -> None:
    with pytest.raises(ValueError, match="positive"):
        pos_weight_from_labels(torch.zeros(3, 4))


def test_pos_weight_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        pos_weight_from_labels(torch.ones(5))
    with pytest.raises(ValueError):
        pos_weight_from_labels(torch.tensor([[0.5, 1.0]]))


# ---------------------------------------------------------------- BCE


def test_bce_with_pos_weight_closed_form() -> None:
    x = np.array([[0.5, -1.0, 2.0], [-0.3, 0.0, 1.5]])
    y = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    pw = 3.0
    # closed form: -(pw * y * log s(x) + (1 - y) * log(1 - s(x))), mean over the 6 elements
    s = _np_sigmoid(x)
    expected = np.mean(-(pw * y * np.log(s) + (1 - y) * np.log(1 - s)))
    got = bce_loss(torch.tensor(x), torch.tensor(y), torch.tensor(pw))
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # a python float works too
    assert bce_loss(torch.tensor(x), torch.tensor(y), pw).item() == pytest.approx(expected, rel=1e-10)


def test_bce_single_element_by_hand() -> None:
    # logit 0 -> p = 0.5; positive with pos_weight 2: 2 * log 2
    got = bce_loss(torch.zeros(1, 1), torch.ones(1, 1), torch.tensor(2.0))
    assert got.item() == pytest.approx(2 * math.log(2), rel=1e-6)


# ---------------------------------------------------------------- feature distillation


def test_feature_distillation_two_clip_case() -> None:
    old = np.array([[[1.0, 2.0]], [[0.0, -1.0]]])  # (2 clips, 1, 2)
    new = np.array([[[2.0, 0.0]], [[1.0, 1.0]]])
    a, b = old.ravel(), new.ravel()  # whole batch as one vector
    expected = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    # by hand: a.b = 2 + 0 + 0 - 1 = 1; |a| = sqrt(6); |b| = sqrt(6) -> 1 - 1/6
    assert expected == pytest.approx(1 - 1 / 6)
    got = feature_distillation_loss(torch.tensor(old), torch.tensor(new))
    assert got.item() == pytest.approx(1 - 1 / 6, rel=1e-10)


def test_feature_distillation_is_not_per_clip_mean() -> None:
    old = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
    new = torch.tensor([[0.0, 1.0], [0.0, 10.0]])
    # flattened: a = (1,0,0,10), b = (0,1,0,10): cos = 100/101; per-clip mean would give 0.5
    assert feature_distillation_loss(old, new).item() == pytest.approx(1 - 100 / 101, rel=1e-6)


def test_feature_distillation_identical_is_zero_and_scale_invariant() -> None:
    x = torch.randn(3, 4, 2, 1, dtype=torch.float64)
    assert feature_distillation_loss(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert feature_distillation_loss(x, 5 * x).item() == pytest.approx(0.0, abs=1e-12)
    assert feature_distillation_loss(x, -x).item() == pytest.approx(2.0, abs=1e-12)


# ---------------------------------------------------------------- output distillation


def test_kl_2x3_by_hand() -> None:
    old = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    new = np.array([[3.0, 2.0, 1.0], [0.5, -0.5, 0.0]])
    t = 2.0
    p, q = _np_softmax(old / t), _np_softmax(new / t)
    expected = np.sum(p * (np.log(p) - np.log(q))) / 6 * t**2  # mean over batch x classes
    got = output_distillation_kl(torch.tensor(old), torch.tensor(new), t)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_kl_first_row_written_out() -> None:
    # one clip, two classes, T = 1: p = softmax(0, 0) = (.5, .5), q = softmax(0, log 3) = (.25, .75)
    old = torch.tensor([[0.0, 0.0]], dtype=torch.float64)
    new = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    expected = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)) / 2  # / (1 * 2 elements)
    assert output_distillation_kl(old, new, 1.0).item() == pytest.approx(expected, rel=1e-12)


def test_kl_zero_for_identical_and_shift_invariant() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, 0.0]], dtype=torch.float64)
    assert output_distillation_kl(x, x, 2.0).item() == pytest.approx(0.0, abs=1e-14)
    shifted = x.clone()
    shifted[1] += 7.0  # same constant on all logits of clip 1
    assert output_distillation_kl(x, shifted, 2.0).item() == pytest.approx(0.0, abs=1e-12)
    # the multi-label BCE variant does see the shift
    base = output_distillation_bce(x, x, 2.0).item()
    assert output_distillation_bce(x, shifted, 2.0).item() > base + 1e-3


def test_output_distillation_bce_by_hand() -> None:
    old = np.array([[1.0, -1.0, 0.0], [2.0, 0.5, -3.0]])
    new = np.array([[0.0, 0.5, 1.0], [1.0, 1.0, -1.0]])
    t = 2.0
    y = _np_sigmoid(old / t)
    s = _np_sigmoid(new / t)
    expected = np.mean(-(y * np.log(s) + (1 - y) * np.log(1 - s))) * t**2
    got = output_distillation_bce(torch.tensor(old), torch.tensor(new), t)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_output_distillation_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        output_distillation_kl(torch.zeros(2, 3), torch.zeros(2, 4), 2.0)
    with pytest.raises(ValueError):
        output_distillation_kl(torch.zeros(2, 3), torch.zeros(2, 3), 0.0)


# ---------------------------------------------------------------- adaptive weight


def test_adaptive_weight_closed_form() -> None:
    assert adaptive_weight(n_seen=35, n_new=5) == pytest.approx(5 * 7**0.66, rel=1e-12)
    assert adaptive_weight(n_seen=50, n_new=5) == pytest.approx(5 * 10**0.66, rel=1e-12)
    assert adaptive_weight(n_seen=10, n_new=5, base=1.0, exponent=1.0) == pytest.approx(2.0)
    with pytest.raises(ValueError):
        adaptive_weight(n_seen=3, n_new=5)


# ---------------------------------------------------------------- incremental loss
# The total of an incremental phase as the phase job puts it together (cilaudio.train.incremental_step:
# the BCE, then each active mechanism's terms), on fixed logits and embeddings.


class _Fixed(torch.nn.Module):
    """A stand-in model whose one forward pass gives fixed logits and the same tensor at every
    embedding point asked for."""

    def __init__(self, logits, embedding):
        super().__init__()
        self.logits, self.embedding = logits, embedding

    def features(self, x, points):
        return self.logits, {p: self.embedding for p in points}


def incremental_loss(*, logits, targets, n_old, pos_weight, settings, old_logits=None, old_embedding=None,
                     new_embedding=None):
    """``(total, parts)`` of one batch under a method's ``settings``; with ``bce_on: new`` the old
    classes' targets are unknown, as the training set marks them."""
    from cilaudio.train import UNKNOWN, incremental_step

    values = methods.complete(settings)
    y = targets.clone()
    if values["bce_on"] == "new":
        y[:, :n_old] = UNKNOWN
    old = _Fixed(old_logits, old_embedding) if old_logits is not None or old_embedding is not None else None
    step = incremental_step(model=_Fixed(logits, new_embedding), old_model=old, n_old=n_old,
                            pos_weight=torch.as_tensor(pos_weight, dtype=logits.dtype),
                            mechanisms=methods.active_mechanisms(values))
    return step(None, y)


def _toy_batch(n_old: int = 3, n_new: int = 2, batch: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = n_old + n_new
    logits = torch.randn(batch, n, generator=g, dtype=torch.float64, requires_grad=True)
    targets = (torch.rand(batch, n, generator=g) > 0.5).to(torch.float64)
    targets[0, n_old] = 1.0
    old_logits = torch.randn(batch, n_old, generator=g, dtype=torch.float64)
    old_emb = torch.randn(batch, 6, 2, 1, generator=g, dtype=torch.float64)
    new_emb = torch.randn(batch, 6, 2, 1, generator=g, dtype=torch.float64, requires_grad=True)
    return logits, targets, old_logits, old_emb, new_emb


def test_indl_bce_gradient_exactly_zero_on_old_logits() -> None:
    logits, targets, *_ = _toy_batch()
    settings = {"bce_on": "new"}
    total, parts = incremental_loss(logits=logits, targets=targets, n_old=3, pos_weight=2.0, settings=settings)
    total.backward()
    assert torch.equal(logits.grad[:, :3], torch.zeros(4, 3, dtype=torch.float64))
    assert logits.grad[:, 3:].abs().sum() > 0
    # value = BCE on the new columns only, by hand
    x, y = logits.detach().numpy()[:, 3:], targets.numpy()[:, 3:]
    s = _np_sigmoid(x)
    expected = np.mean(-(2.0 * y * np.log(s) + (1 - y) * np.log(1 - s)))
    assert total.item() == pytest.approx(expected, rel=1e-10)
    assert parts["bce"] == pytest.approx(expected, rel=1e-10)


def test_bce_on_all_uses_every_column() -> None:
    logits, targets, *_ = _toy_batch()
    settings = {"bce_on": "all"}
    total, _ = incremental_loss(logits=logits, targets=targets, n_old=3, pos_weight=1.5, settings=settings)
    x, y = logits.detach().numpy(), targets.numpy()
    s = _np_sigmoid(x)
    expected = np.mean(-(1.5 * y * np.log(s) + (1 - y) * np.log(1 - s)))
    assert total.item() == pytest.approx(expected, rel=1e-10)


def test_incremental_total_combines_parts() -> None:
    logits, targets, old_logits, old_emb, new_emb = _toy_batch()
    settings = {"bce_on": "new", "feature_distill": 0.7, "output_distill": "kl", "kd_weight": 0.5}
    total, parts = incremental_loss(
        logits=logits,
        targets=targets,
        n_old=3,
        pos_weight=2.0,
        settings=settings,
        old_logits=old_logits,
        old_embedding=old_emb,
        new_embedding=new_emb,
    )
    # independent numpy computation of every part
    x, y = logits.detach().numpy(), targets.numpy()
    s = _np_sigmoid(x[:, 3:])
    l_bce = np.mean(-(2.0 * y[:, 3:] * np.log(s) + (1 - y[:, 3:]) * np.log(1 - s)))
    a, b = old_emb.numpy().ravel(), new_emb.detach().numpy().ravel()
    l_fd = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    p, q = _np_softmax(old_logits.numpy() / 2), _np_softmax(x[:, :3] / 2)
    l_od = np.mean(p * (np.log(p) - np.log(q))) * 4
    lam = 5 * (5 / 2) ** 0.66  # n_seen = 5, n_new = 2
    expected = l_bce + 0.7 * l_fd + lam * 0.5 * l_od
    assert total.item() == pytest.approx(expected, rel=1e-10)
    assert parts["bce"] == pytest.approx(l_bce, rel=1e-10)
    assert parts["feature_distill"] == pytest.approx(l_fd, rel=1e-10)
    assert parts["output_distill"] == pytest.approx(l_od, rel=1e-10)
    assert parts["lambda"] == pytest.approx(lam, rel=1e-12)
    assert parts["total"] == pytest.approx(expected, rel=1e-10)
    # parts are for logging: detached (no graph kept), read once per epoch
    assert all(isinstance(v, float) or not v.requires_grad for v in parts.values())
    total.backward()
    assert new_emb.grad is not None and new_emb.grad.abs().sum() > 0


def test_incremental_bce_output_distill_variant() -> None:
    logits, targets, old_logits, *_ = _toy_batch()
    settings = {"bce_on": "new", "output_distill": "bce"}
    total, parts = incremental_loss(
        logits=logits, targets=targets, n_old=3, pos_weight=1.0, settings=settings, old_logits=old_logits
    )
    yt = _np_sigmoid(old_logits.numpy() / 2)
    sn = _np_sigmoid(logits.detach().numpy()[:, :3] / 2)
    l_od = np.mean(-(yt * np.log(sn) + (1 - yt) * np.log(1 - sn))) * 4
    assert parts["output_distill"] == pytest.approx(l_od, rel=1e-10)
    assert total.item() == pytest.approx(float(parts["bce"]) + 5 * 2.5**0.66 * l_od, rel=1e-10)


def test_incremental_loss_validation() -> None:
    logits, targets, *_ = _toy_batch()
    with pytest.raises(ValueError, match="bce_on"):
        methods.complete({"bce_on": "old"})
    with pytest.raises(ValueError, match="output_distill"):
        methods.complete({"output_distill": "mse"})
    with pytest.raises(ValueError, match="old model's logits"):
        incremental_loss(logits=logits, targets=targets, n_old=3, pos_weight=1.0,
                         settings={"bce_on": "new", "output_distill": "kl"})
    with pytest.raises(ValueError, match="embedding"):
        incremental_loss(logits=logits, targets=targets, n_old=3, pos_weight=1.0,
                         settings={"bce_on": "new", "feature_distill": 1.0})



def test_masked_bce_equals_slicing_and_hand_value():
    import math

    import torch

    from cilaudio.losses import bce_loss, masked_bce_loss

    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    # the mask of independent learning equals BCE on the sliced new columns
    assert torch.isclose(masked_bce_loss(logits, targets, mask, 3.0), bce_loss(logits[:, 1:], targets[:, 1:], 3.0))

    def term(x, y, pw):  # -[pw*y*log s(x) + (1-y)*log(1-s(x))]
        s = 1 / (1 + math.exp(-x))
        return -(pw * y * math.log(s) + (1 - y) * math.log(1 - s))

    ragged = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    # each clip weighs the same: the mean over its own known entries, then over the clips
    # (an exemplar labelled for 30 classes does not outweigh a new clip labelled for 5)
    expected = (term(0.5, 1, 3.0) + (term(0.0, 1, 3.0) + term(-0.5, 0, 3.0)) / 2) / 2
    assert math.isclose(masked_bce_loss(logits, targets, ragged, 3.0).item(), expected, rel_tol=1e-6)
    # entries outside the mask get no gradient
    x = logits.clone().requires_grad_(True)
    masked_bce_loss(x, targets, ragged, 3.0).backward()
    assert (x.grad[ragged == 0] == 0).all() and (x.grad[ragged == 1] != 0).all()
