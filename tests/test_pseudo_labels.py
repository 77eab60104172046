"""Pseudo-labels for the old classes: a hand-worked batch, and the gradient they give."""

import math

import pytest
import torch

from cilaudio import methods
from cilaudio.methods.pseudo_labels import pseudo_label
import cilaudio.train as T
from cilaudio.training_data import UNKNOWN


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
    method = methods.complete({"bce_on": "new", "pseudo_labels": True})
    mechs = [m for m in methods.active_mechanisms(method) if m.name == "pseudo_labels"]
    batch = methods.Batch(x=None, targets=targets, mask=mask, logits=logits, old_logits=old, n_old=3, model=None)
    mechs[0].adjust(batch)
    from cilaudio.losses import masked_bce_loss
    masked_bce_loss(logits, batch.targets, batch.mask, 1.0).backward()
    touched = (logits.grad != 0).tolist()
    assert touched == [[True, False, True, True], [False, False, False, True]]


def test_pseudo_labels_settings_are_checked():
    with pytest.raises(ValueError, match="pseudo_label_negative must be below"):
        methods.complete({"bce_on": "new", "pseudo_labels": True, "pseudo_label_negative": 0.8})
    with pytest.raises(ValueError, match="use bce_on: new"):
        methods.complete({"pseudo_labels": True})
    assert methods.needs_old_model(methods.complete({"bce_on": "new", "pseudo_labels": True}))


def test_thresholds_are_inclusive():
    # a probability exactly at a threshold counts: >= positive is 1, <= negative is 0
    old = torch.tensor([[0.0, -0.8473]])  # sigmoid: exactly 0.5, and about 0.3
    p_neg = torch.sigmoid(old[0, 1]).item()  # the float32 value itself, so the test is exact
    targets, mask = torch.zeros(1, 3), torch.tensor([[0., 0., 1.]])
    t, m = pseudo_label(targets, mask, old, positive=0.5, negative=p_neg)
    assert t.tolist() == [[1., 0., 0.]] and m.tolist() == [[1., 1., 1.]]


def _prepare_on(targets, old_logits, n_old, pos_weight):
    """The mechanism's phase hook on a fake phase of one batch: the previous model's logits are
    given, the class split has ``n_old`` old classes."""
    from types import SimpleNamespace

    class Old(torch.nn.Module):
        def forward(self, x):
            return old_logits[x.long()], None

    method = methods.complete({"bce_on": "new", "pseudo_labels": True})
    (mech,) = [m for m in methods.active_mechanisms(method) if m.name == "pseudo_labels"]
    ctx = SimpleNamespace(phase=1, class_split=SimpleNamespace(seen=lambda p: list(range(n_old)) if p == 0 else None),
                          old_model=Old(), data=None, pos_weight=pos_weight.clone(),
                          batches=lambda data: iter([(torch.arange(len(targets)).float(), targets)]))
    mech.prepare(ctx)
    return mech, ctx


def test_old_pos_weight_is_counted_after_filling_by_hand():
    """KRT's weighting: a pseudo-labelled entry is a labelled entry. The old classes' pos_weight
    is negatives / positives over the old entries known AFTER filling (before filling there are
    none, so it was 1); the new classes' weight is left as it was."""
    U = UNKNOWN
    # 3 clips, 2 old classes (unknown: independent learning) + 1 new
    targets = torch.tensor([[U, U, 1.], [U, U, 0.], [U, U, 1.]])
    old = torch.tensor([[_logit(0.9), _logit(0.1)],   # -> 1, 0
                        [_logit(0.2), _logit(0.5)],   # -> 0, unknown
                        [_logit(0.05), _logit(0.8)]])  # -> 0, 1
    # by hand: old entries known after filling: 1, 0, 0, 0, 1 -> 2 positives, 3 negatives -> 1.5
    mech, ctx = _prepare_on(targets, old, 2, torch.tensor([1.0, 1.0, 0.5]))
    assert ctx.pos_weight.tolist() == pytest.approx([1.5, 1.5, 0.5])


def test_the_bce_of_a_pseudo_labelled_batch_by_hand():
    """One BCE over every known entry of a clip, each entry weighing the same (KRT: the restored
    label vector is the clip's label vector), then the mean over clips. With every logit 0 an
    entry's BCE is log 2, times pos_weight where the target is 1."""
    from cilaudio.losses import masked_bce_loss

    U = UNKNOWN
    targets = torch.tensor([[U, U, 1.], [U, U, 0.]])
    old = torch.tensor([[_logit(0.9), _logit(0.1)], [_logit(0.2), _logit(0.5)]])
    # old entries after filling: clip 0 -> 1, 0; clip 1 -> 0, unknown: 1 positive, 2 negatives -> 2.0
    mech, ctx = _prepare_on(targets, old, 2, torch.tensor([1.0, 1.0, 4.0]))
    assert ctx.pos_weight.tolist() == pytest.approx([2.0, 2.0, 4.0])
    logits = torch.zeros(2, 3, requires_grad=True)
    mask = (targets != U).float()
    batch = methods.Batch(x=None, targets=targets.clamp(min=0), mask=mask, logits=logits, old_logits=old,
                          n_old=2, model=None)
    mech.adjust(batch)
    loss = masked_bce_loss(logits, batch.targets, batch.mask, ctx.pos_weight)
    ln2 = math.log(2)
    # clip 0: entries (old 1: pw 2) + (old 0: 1) + (new 1: pw 4) = 7 ln2 over 3 known entries
    # clip 1: (old 0: 1) + (new 0: 1) = 2 ln2 over 2 known entries
    assert loss.item() == pytest.approx((7 * ln2 / 3 + 2 * ln2 / 2) / 2)
