"""Feature distillation on an intermediate block (cilaudio.methods.block_distillation), the worked
example of docs/adding-a-method.md: the activation it compares is the block's own output (read
with a forward hook, not through the code under test), its value is 1 - cos computed with numpy,
and its gradient reaches the blocks below the point and nothing above it."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cilaudio import methods
from cilaudio.methods.block_distillation import BLOCKS
from cilaudio.methods.distillation import FD_EMBEDDINGS
from cilaudio.model import CNN14, EMBEDDING_POINTS, ModelSettings
from cilaudio.train import UNKNOWN, incremental_step


def test_the_points_the_settings_offer_are_the_models():
    assert set(BLOCKS) | set(FD_EMBEDDINGS) <= set(EMBEDDING_POINTS)


def _models():
    torch.manual_seed(0)
    old = CNN14(ModelSettings(norm="bn", width=4, n_mels=64, n_classes=3, dropout=0.2)).eval()
    for p in old.parameters():
        p.requires_grad_(False)
    new = copy.deepcopy(old)
    for p in new.parameters():
        p.requires_grad_(True)
    new.grow_classifier(2)
    with torch.no_grad():  # the new model has moved away from the old one
        for p in new.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return new.train(), old


def _hooked(model, block):
    seen = []
    handle = getattr(model, block).register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    return seen, handle


@pytest.mark.parametrize("block", ["block2", "block4"])
def test_the_term_is_one_minus_cos_of_the_blocks_outputs(block):
    new, old = _models()
    x = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(1))
    y = torch.full((4, 5), UNKNOWN)
    y[:, 3:] = torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])
    values = methods.complete({"bce_on": "new", "block_distill": 0.5, "block_distill_at": block})
    step = incremental_step(model=new, old_model=old, n_old=3, pos_weight=torch.ones(5),
                            mechanisms=methods.active_mechanisms(values))
    seen_new, h1 = _hooked(new, block)
    seen_old, h2 = _hooked(old, block)
    total, parts = step(x, y)
    h1.remove()
    h2.remove()
    a, b = seen_old[0].double().numpy().ravel(), seen_new[0].double().numpy().ravel()
    expected = 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert expected > 1e-4  # the two models differ at this block
    assert float(parts["block_distill"]) == pytest.approx(expected, rel=1e-4)
    assert float(total.detach()) == pytest.approx(float(parts["bce"]) + 0.5 * expected, rel=1e-5)


def test_its_gradient_reaches_the_blocks_below_the_point_only():
    new, old = _models()
    x = torch.randn(4, 64, 64, generator=torch.Generator().manual_seed(2))
    y = torch.full((4, 5), UNKNOWN)  # no known entry: no BCE, the term alone
    values = methods.complete({"bce_on": "new", "block_distill": 1.0, "block_distill_at": "block3"})
    step = incremental_step(model=new, old_model=old, n_old=3, pos_weight=torch.ones(5),
                            mechanisms=methods.active_mechanisms(values))
    total, _ = step(x, y)
    total.backward()
    for b in range(1, 7):
        grad = getattr(new, f"block{b}").conv1.weight.grad
        reached = grad is not None and bool(grad.abs().sum() > 0)
        assert reached == (b <= 3), b
    assert new.classifier.weight.grad is None or not new.classifier.weight.grad.any()
    assert all(p.grad is None for p in old.parameters())


def test_its_settings_are_checked():
    values = methods.complete({"bce_on": "new", "block_distill": 1.0})
    assert values["block_distill_at"] == "block4" and methods.needs_old_model(values)
    with pytest.raises(ValueError, match="block_distill_at.*block_distill"):
        methods.complete({"bce_on": "new", "block_distill_at": "block2"})  # would do nothing
    with pytest.raises(ValueError, match="block_distill_at"):
        methods.complete({"bce_on": "new", "block_distill": 1.0, "block_distill_at": "block6"})
    assert not methods.needs_old_model(methods.complete({"bce_on": "new"}))
