"""A mechanism's settings act only while the mechanism is on. A method that sets one with the
mechanism off (`memory_clips` without `replay`, `temperature` without output distillation, ...)
is refused by the registry, naming the setting and the switch that activates it; a new
mechanism gets the rule without writing a check."""

from __future__ import annotations

import pytest

from cilaudio import methods
from cilaudio.methods import registry

# (setting given alone, the switch that activates it, a value of the switch that turns it on)
NO_OPS = [
    ({"memory_clips": 100}, "replay", {"replay": "random"}),
    ({"ridge": 0.5}, "analytic", {"analytic": True}),
    ({"pseudo_label_positive": 0.8}, "pseudo_labels", {"pseudo_labels": True, "bce_on": "new"}),
    ({"pseudo_label_negative": 0.2}, "pseudo_labels", {"pseudo_labels": True, "bce_on": "new"}),
    ({"temperature": 3.0}, "output_distill", {"output_distill": "kl"}),
    ({"kd_weight": 0.5}, "output_distill", {"output_distill": "bce"}),
    ({"freeze_norm_stats": True}, "freeze_blocks", {"freeze_blocks": [1, 2]}),
    ({"fd_pass": "second"}, "feature_distill", {"feature_distill": 1.0}),
    ({"fd_embedding": "before_dropout"}, "feature_distill", {"feature_distill": 0.5}),
]


@pytest.mark.parametrize("setting, switch, on", NO_OPS, ids=[next(iter(s)) for s, _, _ in NO_OPS])
def test_a_setting_of_a_mechanism_that_is_off_is_refused(setting, switch, on):
    (key, value), = setting.items()
    with pytest.raises(ValueError) as err:
        methods.complete({"bce_on": "new", **setting}, where="methods.mine")
    msg = str(err.value)
    assert f"methods.mine.{key}" in msg and f"`{switch}`" in msg, msg
    full = methods.complete({"bce_on": "new", **on, **setting,
                             **({"memory_clips": 10} if switch == "replay" and key != "memory_clips" else {})})
    assert full[key] == value


def test_a_setting_at_its_default_is_not_refused():
    # spelling out a default does nothing either way: not a mistake worth stopping for
    assert methods.complete({"memory_clips": 0, "temperature": 2.0, "fd_pass": "shared"})["replay"] == "none"


def test_inherited_distillation_settings_are_not_refused():
    """The top-level `distillation` block reaches every method; only a method's own keys count."""
    full = methods.complete({"bce_on": "all"}, where="methods.finetune", inherited={"temperature": 3.0})
    assert full["temperature"] == 3.0
    with pytest.raises(ValueError, match=r"methods\.finetune\.temperature"):
        methods.complete({"bce_on": "all", "temperature": 3.0}, where="methods.finetune",
                         inherited={"temperature": 2.0})


def test_replay_on_a_cumulative_method_is_refused():
    with pytest.raises(ValueError) as err:
        methods.complete({"data": "cumulative", "replay": "random", "memory_clips": 10}, where="methods.joint")
    assert "methods.joint" in str(err.value) and "replay" in str(err.value) and "data: cumulative" in str(err.value)


def test_a_new_mechanism_gets_the_rule_for_free(monkeypatch):
    monkeypatch.setattr(registry, "MECHANISMS", dict(registry.MECHANISMS))

    @registry.register
    class Widget(registry.Mechanism):
        name = "widget"
        settings = {
            "widget": {"type": "boolean", "default": False, "description": "Turn the widget on."},
            "widget_size": {"type": "integer", "default": 3, "description": "Size of the widget."},
        }

    with pytest.raises(ValueError) as err:
        registry.complete({"widget_size": 5}, where="methods.w")
    assert "methods.w.widget_size" in str(err.value) and "`widget`" in str(err.value)
    assert registry.complete({"widget": True, "widget_size": 5})["widget_size"] == 5
