"""MAS: importance against its closed form on a linear model, the penalty by hand, and the
state carried from phase to phase."""

import numpy as np
import pytest
import torch
from torch import nn

from cilaudio import methods
from cilaudio.methods.mas import add_importance, mas_importance, mas_penalty


def _linear():
    torch.manual_seed(0)
    m = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    return m, x


def _closed_form_raw_grads(m, x):
    """Per input n, on the RAW output f = Wx + b (the authors' choice): d ||f||^2 / dW = 2 f x^T,
    d ||f||^2 / db = 2 f, in numpy."""
    W, b = m.weight.detach().numpy().astype(np.float64), m.bias.detach().numpy().astype(np.float64)
    X = x.numpy().astype(np.float64)
    f = X @ W.T + b  # (n, 2)
    return 2 * f[:, :, None] * X[:, None, :], 2 * f  # (n, 2, 3), (n, 2)


def _closed_form_grads(m, x):
    """The sigmoid variant: d ||sigmoid(Wx + b)||^2 / dW = 2 s^2 (1 - s) x^T, / db = 2 s^2 (1 - s), numpy."""
    W, b = m.weight.detach().numpy(), m.bias.detach().numpy()
    X = x.numpy()
    s = 1 / (1 + np.exp(-(X @ W.T + b)))  # (n, 2)
    d = 2 * s**2 * (1 - s)  # (n, 2)
    return d[:, :, None] * X[:, None, :], d  # (n, 2, 3), (n, 2)


def test_importance_per_input_equals_the_closed_form_on_raw_outputs():
    """The default (the paper's and its code's): the squared L2 norm of the raw output."""
    m, x = _linear()
    gw, gb = _closed_form_raw_grads(m, x)
    imp = mas_importance(m, [x[i:i + 1] for i in range(4)], logits_of=lambda out: out)
    np.testing.assert_allclose(imp["weight"].numpy(), np.abs(gw).mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(imp["bias"].numpy(), np.abs(gb).mean(axis=0), rtol=1e-5, atol=1e-7)


def test_raw_importance_of_batches_takes_the_absolute_batch_mean():
    m, x = _linear()
    gw, gb = _closed_form_raw_grads(m, x)
    imp = mas_importance(m, [x[:3], x[3:]], logits_of=lambda out: out, output="logits")
    expected = (3 * np.abs(gw[:3].mean(axis=0)) + 1 * np.abs(gw[3:].mean(axis=0))) / 4
    np.testing.assert_allclose(imp["weight"].numpy(), expected, rtol=1e-5, atol=1e-7)
    expected = (3 * np.abs(gb[:3].mean(axis=0)) + 1 * np.abs(gb[3:].mean(axis=0))) / 4
    np.testing.assert_allclose(imp["bias"].numpy(), expected, rtol=1e-5, atol=1e-7)


def test_sigmoid_variant_per_input_equals_its_closed_form():
    m, x = _linear()
    gw, gb = _closed_form_grads(m, x)
    imp = mas_importance(m, [x[i:i + 1] for i in range(4)], logits_of=lambda out: out, output="sigmoid")
    np.testing.assert_allclose(imp["weight"].numpy(), np.abs(gw).mean(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(imp["bias"].numpy(), np.abs(gb).mean(axis=0), rtol=1e-5, atol=1e-7)


def test_sigmoid_importance_of_batches_takes_the_absolute_batch_mean():
    m, x = _linear()
    gw, _ = _closed_form_grads(m, x)
    imp = mas_importance(m, [x[:2], x[2:]], logits_of=lambda out: out, output="sigmoid")
    expected = (2 * np.abs(gw[:2].mean(axis=0)) + 2 * np.abs(gw[2:].mean(axis=0))) / 4
    np.testing.assert_allclose(imp["weight"].numpy(), expected, rtol=1e-5, atol=1e-7)
    assert m.training  # restored


def test_penalty_by_hand_with_a_grown_classifier():
    model = nn.Linear(2, 3)  # grown from 2 outputs to 3
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1., 2.], [3., 4.], [9., 9.]]))
        model.bias.copy_(torch.tensor([0.5, 0.5, 7.0]))
    anchor = {"weight": torch.tensor([[1., 1.], [3., 2.]]), "bias": torch.tensor([0., 0.5])}
    importance = {"weight": torch.tensor([[2., 3.], [5., 7.]]), "bias": torch.tensor([11., 13.])}
    # by hand: weight 2*0 + 3*1 + 5*0 + 7*4 = 31, bias 11*0.25 + 0 = 2.75; the third row is free
    penalty = mas_penalty(model, anchor, importance)
    assert penalty.item() == pytest.approx(33.75)
    penalty.backward()
    assert model.weight.grad[2].abs().sum() == 0 and model.bias.grad[2] == 0
    assert model.weight.grad[1].tolist() == pytest.approx([0.0, 2 * 7 * 2.0])  # 2 Omega (theta - theta*)


def test_importances_add_up_over_phases_with_padding():
    total = add_importance({"w": torch.ones(2, 2)}, {"w": torch.full((3, 2), 2.0)})
    assert total["w"].tolist() == [[3., 3.], [3., 3.], [2., 2.]]


def test_registered_with_its_setting():
    values = methods.complete({"bce_on": "new", "mas": 1.0})
    assert values["mas_output"] == "logits"  # the paper's output by default
    assert [m.name for m in methods.active_mechanisms(values)] == ["data_source", "mas"]
    assert methods.complete({"bce_on": "new", "mas": 1.0, "mas_output": "sigmoid"})["mas_output"] == "sigmoid"
    with pytest.raises(ValueError, match="mas_output"):
        methods.complete({"bce_on": "new", "mas": 1.0, "mas_output": "softmax"})
    with pytest.raises(ValueError, match="mas_output.*mas"):
        methods.complete({"bce_on": "new", "mas_output": "sigmoid"})  # would do nothing
    assert methods.needs_old_model(values) and methods.needs_previous_list(values)
    assert [m.name for m in methods.active_mechanisms(methods.complete({}))] == ["data_source"]


class _Pair(nn.Module):
    """A linear model with CNN14's output form ``(logits, embedding)``."""

    def __init__(self, linear):
        super().__init__()
        self.linear = linear

    def forward(self, x):
        return self.linear(x), x


@pytest.mark.parametrize("output", ["logits", "sigmoid"])
def test_the_phase_hook_uses_the_chosen_output(output):
    """``prepare`` of a phase: the old model's importance over the previous list's excerpts, on
    the output the method names (raw logits unless ``mas_output: sigmoid``)."""
    from types import SimpleNamespace

    m, x = _linear()
    values = methods.complete({"bce_on": "new", "mas": 1.0, **({"mas_output": output} if output != "logits" else {})})
    (mech,) = [m for m in methods.active_mechanisms(values) if m.name == "mas"]
    ctx = SimpleNamespace(phase=1, previous_list="p0", previous_state={}, old_model=_Pair(m),
                          dataset=lambda path, phase: [(x[i], 0) for i in range(4)],
                          batches=lambda data: iter([(x[:2], None), (x[2:], None)]))
    mech.prepare(ctx)
    gw, _ = (_closed_form_raw_grads if output == "logits" else _closed_form_grads)(m, x)
    expected = (2 * np.abs(gw[:2].mean(axis=0)) + 2 * np.abs(gw[2:].mean(axis=0))) / 4
    np.testing.assert_allclose(mech.importance["linear.weight"].numpy(), expected, rtol=1e-5, atol=1e-7)
