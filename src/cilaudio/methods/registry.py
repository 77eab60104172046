"""The method registry: every mechanism of the incremental phases, with the settings it declares.

A *mechanism* is one thing a continual-learning method can do in phases 1..K: a data source, a
loss term, an exemplar memory, frozen blocks, a regulariser with its own state, a closed-form
classifier. Every one of them, the papers' own included, acts only through the hooks of
:class:`Mechanism`: the phase job (:func:`cilaudio.train.train_incremental`) knows no setting.
A *method* in the config is a set of setting values (``methods: {name: {setting: value}}``);
each setting belongs to exactly one mechanism, so combining existing mechanisms is config
only. A new mechanism is one module of :mod:`cilaudio.methods` with a :class:`Mechanism`
subclass decorated with :func:`register` (``docs/adding-a-method.md``).

The registry is the one list of method settings: the config check (:func:`complete`), the
schema the config documentation is written from (:func:`method_schema`), the rule params
(:func:`without_defaults`) and the training job (:func:`active_mechanisms`) all read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import jsonschema

if TYPE_CHECKING:  # only for the annotations: the registry imports no torch at start-up
    import torch
    from torch import Tensor

    from ..excerpts import ExcerptIndex, ExcerptTable, FeatureDataset
    from ..model import CNN14
    from ..phases import ClassSplit

__all__ = [
    "Batch",
    "Mechanism",
    "MECHANISMS",
    "PhaseContext",
    "DATA_STAGES",
    "STAGES",
    "Term",
    "active_mechanisms",
    "complete",
    "method_schema",
    "needs_old_model",
    "needs_previous_list",
    "register",
    "without_defaults",
]


@dataclass
class Batch:
    """What a mechanism's step hooks see of one training batch of phase k.

    ``targets`` and ``mask`` are ``(batch, classes seen)``: 0/1 targets and 1 where the entry
    counts in the BCE (a clip's known labels). :meth:`Mechanism.adjust` may change both (in
    place or by assignment) before the loss is computed. ``old_logits`` is the frozen previous
    model's ``(batch, n_old)`` output when a mechanism of the method asked for that model.
    ``embeddings`` holds the new model's activations at the points the active mechanisms asked
    for (:meth:`Mechanism.embedding_points`, points of :data:`cilaudio.model.EMBEDDING_POINTS`),
    from the same forward pass as ``logits``; ``old_embeddings`` the old model's at the same
    points (no gradient), when there is an old model.
    """

    x: "Tensor"
    targets: "Tensor"
    mask: "Tensor"
    logits: "Tensor"
    old_logits: "Tensor | None"
    n_old: int
    model: "CNN14"
    embeddings: "dict[str, Tensor]" = field(default_factory=dict)
    old_embeddings: "dict[str, Tensor]" = field(default_factory=dict)


@dataclass(frozen=True)
class Term:
    """A loss term with a weight: ``weight * value`` is added to the total and ``value`` (the
    unweighted term) is logged, as the papers report their terms."""

    value: "Tensor"
    weight: float = 1.0


@dataclass
class PhaseContext:
    """What a mechanism's phase hooks see: the phase, its data and the two models.

    ``train_lists`` are the job's training lists, phase k's last (a cumulative method gets every
    list up to k; a method that asked for it, phase k-1's before phase k's). ``index`` is the
    feature file's excerpt index. The training set is built by the mechanisms of the first two
    :data:`STAGES`: ``table`` (the excerpts and their targets over every class seen, ``UNKNOWN``
    where a clip is not labelled) is set in stage ``training_set`` and extended in stage
    ``exemplars``; then the job reads it into ``data`` (a :class:`cilaudio.excerpts.FeatureDataset`),
    which the later stages see, with ``pos_weight`` counted on it. ``epoch_size``: excerpts drawn
    per epoch (None: every one).

    ``previous_state`` is the previous phase's checkpoint dict (a mechanism's own
    :meth:`Mechanism.state` of that phase is under its :meth:`Mechanism.state_name`);
    ``previous_list`` is phase k-1's training list when :meth:`Mechanism.needs_previous_list`
    asked for it (a summary of the previous phase's data computed now stands for one computed at
    the end of that phase; no clip of it is trained on), else None.
    """

    phase: int
    class_split: "ClassSplit"
    model: "CNN14"
    old_model: "CNN14 | None"
    previous_state: dict
    train_lists: "list[Path]"
    previous_list: Path | None
    features: Path
    index: "ExcerptIndex"
    device: "torch.device"
    seed: int
    in_memory: bool
    batch_size: int
    table: "ExcerptTable | None" = None
    data: "FeatureDataset | None" = None
    epoch_size: int | None = None
    #: The BCE's ``pos_weight`` ``(n_classes,)``, one per column group; :meth:`Mechanism.prepare`
    #: may replace it (pseudo-labels count the old group after filling) before training starts.
    pos_weight: "Tensor | None" = None

    def dataset(self, list_path: Path, phase: int):
        """The excerpts of a training list, with targets over ``phase``'s seen classes from the
        list's own labels, as phase ``phase`` trained on them (:func:`cilaudio.training_data.training_set`)."""
        from ..training_data import training_set

        return training_set(phase=phase, class_split=self.class_split, lists=[list_path], features=self.features,
                            cumulative=False, in_memory=self.in_memory, index=self.index)

    def batches(self, dataset):
        """``dataset`` in order, in batches of ``batch_size``: ``(x, targets)`` on the device."""
        from torch.utils.data import DataLoader

        for x, y in DataLoader(dataset, batch_size=self.batch_size, shuffle=False):
            yield x.to(self.device), y.to(self.device)


class Mechanism:
    """Base class of a mechanism; subclasses set ``name`` and ``settings`` and override hooks.

    ``settings``: ``{setting: JSON-schema fragment}``, each fragment with a ``default`` and a
    ``description`` (what the config documentation shows). Hooks, in the order a phase job
    calls them (the mechanisms of one hook in the order of their :attr:`stage`, then of
    registration):

    - :meth:`prepare` once, after the model was grown: the stage ``training_set`` builds
      ``ctx.table``, ``exemplars`` extends it, ``model`` changes the network (frozen blocks),
      ``train`` (the default) sees the final training set ``ctx.data``;
    - :meth:`fit`: return the phase's history rows to replace SGD training (a closed-form
      classifier), or None;
    - per batch, :meth:`adjust` (targets and mask) then :meth:`loss` (terms added to the total;
      the batch carries the activations of :meth:`embedding_points`);
    - :meth:`state`, saved in the phase's checkpoint under :meth:`state_name`.

    The papers' mechanisms (data source, distillation, replay, frozen blocks) run through the
    same hooks as every other.

    A mechanism's other settings act only while its *switch* is on (not at its default):
    :func:`complete` refuses a method that sets one (to a value other than its default) with the
    switch off, naming the setting and the switch. The switch is ``switch``, or else the setting
    named like the mechanism (``replay``, ``analytic``, ``pseudo_labels``, ``mas``), so a new
    mechanism that follows that naming gets the rule without a check of its own. ``requires``
    names a different switch for single settings (``{"temperature": "output_distill"}``).
    """

    name: ClassVar[str] = ""
    settings: ClassVar[dict[str, dict]] = {}
    #: The setting that turns the mechanism on (off at its default); None: the setting named
    #: like the mechanism, if it declares one.
    switch: ClassVar[str | None] = None
    #: ``{setting: switch}`` for settings that act only while another setting is on.
    requires: ClassVar[dict[str, str]] = {}
    #: When :meth:`prepare` runs, one of :data:`STAGES`.
    stage: ClassVar[str] = "train"
    #: The checkpoint key of :meth:`state` (None: the mechanism's name).
    state_key: ClassVar[str | None] = None

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.values = {k: values[k] for k in self.setting_schemas()}

    @classmethod
    def setting_schemas(cls) -> dict[str, dict]:
        """The settings' schema fragments (override when they depend on another registry)."""
        return cls.settings

    @classmethod
    def switch_setting(cls) -> str | None:
        """The setting that turns the mechanism on, or None (see the class docstring)."""
        if cls.switch:
            return cls.switch
        return cls.name if cls.name in cls.setting_schemas() else None

    @classmethod
    def switched_settings(cls) -> dict[str, str]:
        """``{setting: the switch it needs}``: every other setting of a mechanism with a switch,
        and :attr:`requires`."""
        switch = cls.switch_setting()
        out = {s: switch for s in cls.setting_schemas() if switch and s != switch}
        out.update(cls.requires)
        return out

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        """Whether the mechanism does anything under a method's ``values`` (its hooks run)."""
        return False

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[str]:
        """Errors of a combination of values that the schema cannot express."""
        return []

    @classmethod
    def needs_old_model(cls, values: Mapping[str, Any]) -> bool:
        return False

    @classmethod
    def needs_previous_list(cls, values: Mapping[str, Any]) -> bool:
        return False

    @classmethod
    def state_name(cls) -> str:
        """The checkpoint key of the mechanism's :meth:`state`."""
        return cls.state_key or cls.name

    def embedding_points(self) -> tuple[str, ...]:
        """The points of :data:`cilaudio.model.EMBEDDING_POINTS` whose activations the batch
        must carry (``batch.embeddings``, and ``batch.old_embeddings`` with an old model)."""
        return ()

    def prepare(self, ctx: PhaseContext) -> None:
        pass

    def fit(self, ctx: PhaseContext) -> list[dict] | None:
        return None

    def adjust(self, batch: Batch) -> None:
        pass

    def loss(self, batch: Batch) -> "dict[str, Tensor | Term | float]":
        """``{part name: term}``, each logged by name in the phase's history: a tensor is added to
        the total as it is; a :class:`Term` as ``weight * value`` (its ``value`` logged); a number
        is only logged (an adaptive weight, say)."""
        return {}

    def state(self) -> Any:
        """What the next phase needs (``ctx.previous_state[state_name()]``), or None."""
        return None


#: The order of :meth:`Mechanism.prepare` (see :class:`PhaseContext`).
STAGES: tuple[str, ...] = ("training_set", "exemplars", "model", "train")
#: The stages that build ``ctx.table``; the phase job reads it into ``ctx.data`` after them.
DATA_STAGES: tuple[str, ...] = STAGES[:2]


#: Every registered mechanism by name, in registration order.
MECHANISMS: dict[str, type[Mechanism]] = {}


def register(cls: type[Mechanism]) -> type[Mechanism]:
    """Class decorator: add a mechanism to :data:`MECHANISMS`. Its name and each of its
    settings must be new, and each setting must declare a default that its own schema accepts
    and a description."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} has no name")
    if cls.name in MECHANISMS and MECHANISMS[cls.name] is not cls:
        raise ValueError(f"a mechanism named {cls.name!r} is registered already ({MECHANISMS[cls.name].__module__})")
    owners = {s: m.name for m in MECHANISMS.values() if m is not cls for s in m.setting_schemas()}
    for setting, fragment in cls.setting_schemas().items():
        if setting in owners:
            raise ValueError(f"mechanism {cls.name!r} declares setting {setting!r}, which belongs to "
                             f"mechanism {owners[setting]!r}: choose another name")
        for key in ("default", "description"):
            if key not in fragment:
                raise ValueError(f"setting {setting!r} of mechanism {cls.name!r} needs a {key!r}")
        errors = list(jsonschema.Draft202012Validator(fragment).iter_errors(fragment["default"]))
        if errors:
            raise ValueError(f"the default of setting {setting!r} of mechanism {cls.name!r} does not fit its "
                             f"own schema: {errors[0].message}")
    if cls.stage not in STAGES:
        raise ValueError(f"mechanism {cls.name!r} has stage {cls.stage!r}; allowed: {list(STAGES)}")
    known = set(owners) | set(cls.setting_schemas())
    for setting, switch in cls.switched_settings().items():
        if setting not in cls.setting_schemas() or switch not in known:
            raise ValueError(f"mechanism {cls.name!r}: {setting!r} needs switch {switch!r}, but "
                             f"{setting if setting not in cls.setting_schemas() else switch!r} is no method setting")
    MECHANISMS[cls.name] = cls
    return cls


def _fragments() -> dict[str, dict]:
    return {s: f for m in MECHANISMS.values() for s, f in m.setting_schemas().items()}


def method_schema() -> dict:
    """The JSON schema of one method entry, built from every mechanism's settings."""
    return {"type": "object", "additionalProperties": False, "properties": _fragments()}


def _switched_off(given: Mapping[str, Any], full: Mapping[str, Any], fragments: Mapping[str, dict],
                  *, where: str) -> list[str]:
    """A setting given (other than its default) while the switch it needs is off."""
    errors = []
    for mechanism in MECHANISMS.values():
        for setting, switch in mechanism.switched_settings().items():
            if setting not in given or given[setting] == fragments[setting]["default"]:
                continue
            if full[switch] == fragments[switch]["default"]:
                errors.append(
                    f"{where}.{setting} is {given[setting]!r}, but it acts only while `{switch}` is on and "
                    f"`{switch}` is {full[switch]!r} (off): turn `{switch}` on, or remove `{setting}` "
                    "(it would do nothing)")
    return errors


def complete(values: Mapping[str, Any] | None, *, where: str = "method",
             inherited: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A method's settings checked against the registry and with every default filled in.

    ``inherited``: values that fill in before the defaults and are not the method's own (the
    config's top-level ``distillation`` block, which reaches every method): they are not refused
    when their mechanism is off, as the method's own settings are.

    Raises ``ValueError`` naming ``where.<setting>`` (e.g. ``methods.my_method.replay``), the
    problem and the allowed values.
    """
    given = dict(values or {})
    values = {**(inherited or {}), **given}
    validator = jsonschema.Draft202012Validator(method_schema())
    errors = sorted(validator.iter_errors(values), key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors:
            key = ".".join(str(p) for p in e.path)
            lines.append(f"{where}{'.' + key if key else ''}: {e.message}")
        known = ", ".join(sorted(_fragments()))
        raise ValueError("; ".join(lines) + f" (method settings: {known}; docs/adding-a-method.md)")
    full = {s: json.loads(json.dumps(f["default"])) for s, f in _fragments().items()}
    full.update(values)
    problems = _switched_off(given, full, _fragments(), where=where)
    problems += [f"{where}: {p}" for m in MECHANISMS.values() for p in m.check(full)]
    if problems:
        raise ValueError("; ".join(problems))
    return full


def without_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """Only the settings that differ from their defaults: what identifies a method's results,
    so that a new mechanism (off by default) reruns none of the existing ones."""
    fragments = _fragments()
    return {k: v for k, v in values.items() if k not in fragments or v != fragments[k]["default"]}


def active_mechanisms(values: Mapping[str, Any]) -> list[Mechanism]:
    """The mechanisms that act under a method's (completed) ``values``, built with them, in
    the order of their stage (:data:`STAGES`), then of registration."""
    acting = [m for m in MECHANISMS.values() if m.active(values)]
    return [m(values) for m in sorted(acting, key=lambda m: STAGES.index(m.stage))]


def needs_old_model(values: Mapping[str, Any]) -> bool:
    """Whether a method needs the frozen previous model (distillation, pseudo-labels, ...)."""
    return any(m.needs_old_model(values) for m in MECHANISMS.values())


def needs_previous_list(values: Mapping[str, Any]) -> bool:
    """Whether a phase job of the method reads phase k-1's training list too."""
    return any(m.needs_previous_list(values) for m in MECHANISMS.values())
