"""Pseudo-labels for the old classes: a hand-worked batch, and the gradient they give."""

import math

import pytest
import torch

from cilaudio import methods
from cilaudio.methods.pseudo_labels import pseudo_label
import cilaudio.train as T


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_unknown_old_entries_take_the_confident_predictions_by_hand():
    # 2 clips, 3 old classes + 1 new; clip 0 is a new clip (old entries unknown), clip 1 an
    # exemplar labelled for old classes 0 and 1 only (class 2 unknown)
    targets = torch.tensor([[0., 0., 0., 1.], [1., 0., 0., 0.]])
    mask = torch.tensor([[0., 0., 0., 1.], [1., 1., 0., 1.]])
    old = torch.tensor([[_logit(0.9), _logit(0.5), _logit(0.1)],
                        [_logit(0.1), _logit(0.95), _logit(0.8)]])
    t, m = pseudo_label(targets, mask, old, positive=0.7, negative=0.3)
    # by hand: clip 0 -> class 0 positive (0.9), class 1 stays unknown (0.5), class 2 negative (0.1);
    # clip 1 -> classes 0, 1 keep their labels (1, 0) whatever the old model says; class 2 positive (0.8)
    assert t.tolist() == [[1., 0., 0., 1.], [1., 0., 1., 0.]]
    assert m.tolist() == [[1., 0., 1., 1.], [1., 1., 1., 1.]]
    # the inputs are not changed
    assert mask[0].tolist() == [0., 0., 0., 1.]


def test_pseudo_labels_give_gradient_only_to_filled_entries():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, requires_grad=True)
    targets = torch.tensor([[0., 0., 0., 1.], [0., 0., 0., 0.]])
    mask = torch.tensor([[0., 0., 0., 1.], [0., 0., 0., 1.]])
    old = torch.tensor([[_logit(0.9), _logit(0.5), _logit(0.1)], [_logit(0.5), _logit(0.5), _logit(0.5)]])
    method = T.MethodSettings.from_dict({"bce_on": "new", "pseudo_labels": True})
    mechs = methods.active_mechanisms(method.values)
    assert [m.name for m in mechs] == ["pseudo_labels"]
    batch = methods.Batch(x=None, targets=targets, mask=mask, logits=logits, old_logits=old, n_old=3, model=None)
    mechs[0].adjust(batch)
    from cilaudio.losses import masked_bce_loss
    masked_bce_loss(logits, batch.targets, batch.mask, 1.0).backward()
    touched = (logits.grad != 0).tolist()
    assert touched == [[True, False, True, True], [False, False, False, True]]


def test_pseudo_labels_settings_are_checked():
    with pytest.raises(ValueError, match="pseudo_label_negative must be below"):
        T.MethodSettings.from_dict({"bce_on": "new", "pseudo_labels": True, "pseudo_label_negative": 0.8})
    with pytest.raises(ValueError, match="use bce_on: new"):
        T.MethodSettings.from_dict({"pseudo_labels": True})
    assert T.MethodSettings.from_dict({"bce_on": "new", "pseudo_labels": True}).needs_old_model


def test_thresholds_are_inclusive():
    # a probability exactly at a threshold counts: >= positive is 1, <= negative is 0
    old = torch.tensor([[0.0, -0.8473]])  # sigmoid: exactly 0.5, and about 0.3
    p_neg = torch.sigmoid(old[0, 1]).item()  # the float32 value itself, so the test is exact
    targets, mask = torch.zeros(1, 3), torch.tensor([[0., 0., 1.]])
    t, m = pseudo_label(targets, mask, old, positive=0.5, negative=p_neg)
    assert t.tolist() == [[1., 0., 0.]] and m.tolist() == [[1., 1., 1.]]
