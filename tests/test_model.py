"""Tests of cilaudio.model (CNN14 variants, classifier growth, CKA hooks, block freezing)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cilaudio.model import (
    CNN14,
    ContinualNorm,
    ModelSettings,
    count_trainable_parameters,
    record_activations,
    set_frozen_blocks,
)

NARROW = 8


def _narrow(norm: str = "bn", n_classes: int = 5, **kw) -> CNN14:
    torch.manual_seed(0)
    return CNN14(ModelSettings(norm=norm, width=NARROW, n_classes=n_classes, **kw))


def _expected_parameter_count(width: int, n_mels: int, n_classes: int) -> int:
    """Independent count from the architecture description."""
    channels = [width * m for m in (1, 2, 4, 8, 16, 32)]
    conv, norm, c_in = 0, 0, 1
    for c in channels:
        conv += 3 * 3 * c_in * c + 3 * 3 * c * c  # two bias-free 3x3 convs
        norm += 2 * (2 * c)  # two norm layers with weight + bias
        c_in = c
    return conv + norm + 2 * n_mels + channels[-1] * n_classes + n_classes


# ---------------------------------------------------------------- settings


def test_settings_roundtrip_and_validation() -> None:
    s = ModelSettings(norm="cn", width=8, n_classes=30)
    assert ModelSettings.from_dict(s.to_dict()) == s
    assert s.to_dict()["gn_groups"] == 32 and s.to_dict()["dropout"] == 0.2
    with pytest.raises(ValueError, match="bn"):
        ModelSettings(norm="ln", n_classes=3)
    with pytest.raises(ValueError, match="divisible"):
        ModelSettings(norm="gn", width=48, n_classes=3)  # 48 channels, 32 groups
    ModelSettings(norm="bn", width=48, n_classes=3)  # fine without GroupNorm
    with pytest.raises(ValueError):
        ModelSettings(norm="bn", n_classes=0)
    with pytest.raises(ValueError):
        ModelSettings(norm="bn", n_classes=3, dropout=1.0)
    with pytest.raises(ValueError, match="unknown"):
        ModelSettings.from_dict({"norm": "bn", "n_classes": 3, "colour": "red"})


# ---------------------------------------------------------------- parameter counts


@pytest.mark.parametrize("norm", ["bn", "gn", "cn"])
def test_exact_parameter_count_width64(norm: str) -> None:
    expected = _expected_parameter_count(64, 64, 30)
    assert expected == 75_461_184 + 16_128 + 128 + 61_470 == 75_538_910
    model = CNN14(ModelSettings(norm=norm, n_classes=30))
    assert count_trainable_parameters(model) == 75_538_910
    assert model.block6.conv2.out_channels == 2048


# ---------------------------------------------------------------- forward shapes


@pytest.mark.parametrize("norm", ["bn", "gn", "cn"])
def test_forward_shapes_one_second(norm: str) -> None:
    model = _narrow(norm)
    model.train()
    logits, emb = model(torch.randn(2, 101, 64))
    assert logits.shape == (2, 5)
    # 101 -> 50 -> 25 -> 12 -> 6 -> 3 -> 1 frames, 64 -> 1 mel bins
    assert emb.shape == (2, 32 * NARROW, 1, 1)


def test_forward_shapes_ten_seconds() -> None:
    model = _narrow("bn").eval()
    with torch.no_grad():
        logits, emb = model(torch.randn(2, 1001, 64))
    # 1001 -> 500 -> 250 -> 125 -> 62 -> 31 -> 15
    assert logits.shape == (2, 5)
    assert emb.shape == (2, 32 * NARROW, 15, 1)


def test_forward_rejects_too_short_input() -> None:
    with pytest.raises(ValueError, match="frames"):
        _narrow()(torch.randn(2, 40, 64))


def test_embedding_is_before_dropout_and_pooling_matches() -> None:
    """In eval mode (no dropout): the embedding is block 6's pooled output and the head pools it."""
    model = _narrow("bn", dropout=0.5).eval()
    x = torch.randn(2, 101, 64)
    with torch.no_grad(), record_activations(model) as acts:
        logits, emb = model(x)
        # embedding = relu(norm2 output) pooled 2x2, recomputed by hand from the hook
        pooled = nn.functional.avg_pool2d(torch.relu(acts["block6.norm2"]), 2)
        assert torch.allclose(emb, pooled)
        # head by hand: mean over freq, max + mean over time, then the linear layer
        h = emb.mean(dim=3)
        h = h.max(dim=2).values + h.mean(dim=2)
        assert torch.allclose(logits, h @ model.classifier.weight.T + model.classifier.bias, atol=1e-6)


def test_default_embedding_in_training_is_after_dropout_where_the_methods_take_it() -> None:
    """TRAINING mode, dropout 0.5: dropout sits after block 6's 2x2 pooling, and the default
    embedding is taken after it (the point every method uses): zero where dropout dropped,
    ``pooled / (1 - p)`` elsewhere, and the head's pooling of it gives the logits. The
    before-dropout point stays available by name."""
    p = 0.5
    model = _narrow("bn", dropout=p).train()
    x = torch.randn(4, 101, 64)
    with torch.no_grad(), record_activations(model) as acts:
        torch.manual_seed(7)
        logits, emb = model(x)
        pooled = nn.functional.avg_pool2d(torch.relu(acts["block6.norm2"]), 2)  # block 6, before dropout
        dropped = emb == 0
        assert 0.3 < dropped.float().mean().item() < 0.7  # about p of the entries
        assert (pooled[dropped] != 0).float().mean() > 0.9  # dropout zeroed them, not the ReLU
        torch.testing.assert_close(emb[~dropped], pooled[~dropped] / (1 - p))
        h = emb.mean(dim=3)
        h = h.max(dim=2).values + h.mean(dim=2)
        torch.testing.assert_close(logits, h @ model.classifier.weight.T + model.classifier.bias)
        torch.manual_seed(7)
        _, before = model(x, embedding="before_dropout")
        torch.testing.assert_close(before, pooled)


def test_init() -> None:
    model = _narrow("gn")
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    w = model.block2.conv1.weight  # xavier_uniform bound sqrt(6 / (fan_in + fan_out))
    bound = (6 / (8 * 9 + 16 * 9)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound
    assert model.block1.conv1.bias is None


def test_continual_norm_structure() -> None:
    model = _narrow("cn")
    cn = model.block3.norm1
    assert isinstance(cn, ContinualNorm)
    children = list(cn.children())
    assert isinstance(children[0], nn.GroupNorm) and not children[0].affine
    assert children[0].num_groups == 32 and children[0].num_channels == 32
    assert isinstance(children[1], nn.BatchNorm2d) and children[1].affine
    assert children[1].track_running_stats and children[1].momentum == 0.1
    # narrow block 1: 8 channels -> min(32, 8) = 8 groups
    assert model.block1.norm1.gn.num_groups == 8
    assert isinstance(model.bn0, nn.BatchNorm2d) and model.bn0.num_features == 64
    assert isinstance(_narrow("gn").block1.norm1, nn.GroupNorm) and _narrow("gn").block1.norm1.affine


# ---------------------------------------------------------------- classifier growth


def test_grow_classifier_keeps_old_rows_and_logits() -> None:
    model = _narrow("bn", n_classes=30).eval()
    x = torch.randn(3, 101, 64)
    with torch.no_grad():
        before, _ = model(x)
    w_old = model.classifier.weight.detach().clone()
    b_old = model.classifier.bias.detach().clone()
    model.grow_classifier(5)
    assert model.classifier.weight.shape == (35, 32 * NARROW)
    assert model.settings.n_classes == 35 and model.n_classes == 35
    assert torch.equal(model.classifier.weight[:30], w_old)
    assert torch.equal(model.classifier.bias[:30], b_old)
    # new rows: default nn.Linear init, bound 1/sqrt(fan_in), not copies of zeros
    bound = 1 / (32 * NARROW) ** 0.5
    new_w = model.classifier.weight[30:]
    assert new_w.abs().max() <= bound and new_w.abs().sum() > 0
    assert model.classifier.weight.requires_grad
    with torch.no_grad():
        after, _ = model(x)
    assert after.shape == (3, 35)
    assert torch.equal(after[:, :30], before)
    with pytest.raises(ValueError):
        model.grow_classifier(0)


# ---------------------------------------------------------------- CKA layers and hooks


def test_layer_names_and_recorded_shapes() -> None:
    model = _narrow("cn").eval()
    names = model.layer_names()
    assert len(names) == 25
    assert names[:5] == ["block1.conv1", "block1.norm1", "block1.conv2", "block1.norm2", "block2.conv1"]
    assert names[-1] == "classifier"
    assert list(model.layer_modules()) == names
    with torch.no_grad(), record_activations(model) as acts:
        logits, _ = model(torch.randn(2, 101, 64))
    assert list(acts) == names  # recorded in network order
    t, f = 101, 64
    for b in range(1, 7):
        c = NARROW * 2 ** (b - 1)
        for part in ("conv1", "norm1", "conv2", "norm2"):
            assert acts[f"block{b}.{part}"].shape == (2, c, t, f)
        t, f = t // 2, f // 2
    assert torch.equal(acts["classifier"], logits)
    # hooks removed on exit
    for m in model.layer_modules().values():
        assert not m._forward_hooks


@pytest.mark.parametrize("norm", ["bn", "cn"])
def test_recorded_norm_activation_is_pre_relu(norm: str) -> None:
    model = _narrow(norm).eval()
    with torch.no_grad(), record_activations(model) as acts:
        model(torch.randn(2, 101, 64))
    for b in (1, 4):
        assert acts[f"block{b}.norm1"].min() < 0
        assert acts[f"block{b}.norm2"].min() < 0


# ---------------------------------------------------------------- freezing


def _bn_stats(model: CNN14, block: int) -> list[torch.Tensor]:
    return [m.running_mean.clone() for m in getattr(model, f"block{block}").modules() if isinstance(m, nn.BatchNorm2d)]


@pytest.mark.parametrize("norm", ["bn", "cn"])
def test_set_frozen_blocks_keeps_stats(norm: str) -> None:
    model = _narrow(norm)
    set_frozen_blocks(model, [1, 2, 3], freeze_norm_stats=True)
    model.train()  # must not undo the frozen statistics
    for b in (1, 2, 3):
        assert not any(p.requires_grad for p in getattr(model, f"block{b}").parameters())
        assert all(not m.training for m in getattr(model, f"block{b}").modules() if isinstance(m, nn.BatchNorm2d))
    assert all(p.requires_grad for p in model.block4.parameters())
    assert model.block4.norm1.training
    before = {b: _bn_stats(model, b) for b in (1, 3, 4, 6)}
    logits, _ = model(torch.randn(4, 101, 64) * 3 + 1)
    logits.sum().backward()
    for b in (1, 3):
        assert all(torch.equal(x, y) for x, y in zip(before[b], _bn_stats(model, b)))
        assert all(p.grad is None for p in getattr(model, f"block{b}").parameters())
    for b in (4, 6):
        assert all(not torch.equal(x, y) for x, y in zip(before[b], _bn_stats(model, b)))
    assert model.block4.conv1.weight.grad is not None
    # frozen count: bn0 + blocks 4-6 + classifier
    expected = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(("block1", "block2", "block3")))
    assert count_trainable_parameters(model) == expected
    # a deep copy (the old model of the next phase) keeps the setting
    clone = copy.deepcopy(model).train()
    assert all(not m.training for m in clone.block1.modules() if isinstance(m, nn.BatchNorm2d))


def test_frozen_blocks_without_stat_freezing_let_stats_move() -> None:
    model = _narrow("bn")
    set_frozen_blocks(model, [1], freeze_norm_stats=False)
    model.train()
    before = _bn_stats(model, 1)
    model(torch.randn(4, 101, 64) * 3 + 1)
    assert not any(p.requires_grad for p in model.block1.parameters())
    assert all(not torch.equal(x, y) for x, y in zip(before, _bn_stats(model, 1)))


def test_set_frozen_blocks_is_declarative_and_validates() -> None:
    model = _narrow("bn")
    set_frozen_blocks(model, [1, 2], freeze_norm_stats=True)
    set_frozen_blocks(model, [], freeze_norm_stats=True)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    assert model.block1.norm1.training
    with pytest.raises(ValueError):
        set_frozen_blocks(model, [0], freeze_norm_stats=False)
    with pytest.raises(ValueError):
        set_frozen_blocks(model, [7], freeze_norm_stats=False)
