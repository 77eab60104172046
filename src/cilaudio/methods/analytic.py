"""Analytic class-incremental learning (ACIL, Zhuang et al., NeurIPS 2022; multi-label: L3A),
exemplar-free: a closed-form classifier on the frozen phase-0 network, updated by recursive
least squares so that after every phase it EQUALS the ridge solution on all data seen so far.

The network of phase 0 stays as it is (no SGD, norm statistics included). Its pooled embedding
``h`` (the classifier's input), optionally through a fixed random expansion layer
``relu(h @ E)`` of ``analytic_expansion`` units (ACIL's buffer layer; ``E`` uniform in
``+-1/sqrt(dim h)``, drawn once in phase 1 and kept in the model), with a constant 1 appended
for the intercept, is the feature ``x``. With ``X_{0:k}`` every training excerpt of phases 0..k
and ``Y_{0:k}`` their targets over the classes seen by phase k, the classifier of phase k is

    W_k = (X_{0:k}^T X_{0:k} + ridge * I)^-1 X_{0:k}^T Y_{0:k}

computed without keeping a clip: ACIL's recursion keeps ``R = (sum of x x^T + ridge * I)^-1``,
the inverse of ONE autocorrelation matrix over everything seen, and for each new chunk ``X``
(targets ``Y``, ``W`` padded with zero columns for the new classes) does

    R <- R - R X^T (I + X R X^T)^-1 X R,    W <- W + R X^T (Y - X W)

(Woodbury; chunks of ``CHUNK`` excerpts, so the memory is O(dim^2 + CHUNK^2)). Every head,
old classes' included, is updated in every phase, and the result equals the one-shot ridge
solve on all phases' data to float precision (``tests/test_analytic.py``).

The targets ``Y_{0:k}`` of a multi-label class-incremental stream (label absence): an excerpt of
phase p is labelled for phase p's classes only. Its entries of LATER classes are 0 (its phase is
over; the clips are not kept) and, with ``analytic_old_labels: zero`` (the default, ACIL's rule),
so are its entries of EARLIER classes: every clip a class is not labelled on counts as a
negative for it, so the joint solution above is over the labels as the phases gave them. With
``analytic_old_labels: pseudo`` (L3A's answer, its pseudo-label module), the earlier classes'
entries of phase k's clips take the previous classifier's decision instead: 1 where its score
``x W_{k-1}`` is at least 0.5 (``sigmoid(logit) >= 0.5``), else 0; the classifier then equals
the ridge solution on all data with those targets.

Phase 1's job starts the recursion from phase 0's training list (a summary of data already
seen: its clips are not kept). Each checkpoint keeps, under ``analytic``, what the recursion
needs: ``R`` (float64), ``W`` (float64, the last row the intercept), the number of excerpts
seen, and ``base_head``, the ridge head of phase 0 alone (the analytic head on the phase-0
network before any increment: the reference that separates head quality from forgetting). The
classifier's logits are the ridge scores minus 0.5, so ``sigmoid(logit) > 0.5`` where the score
passes 0.5 (the ranking metrics are unaffected).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from .registry import Mechanism, PhaseContext, register

if TYPE_CHECKING:  # torch is imported where it is used: the config check at start-up needs none
    from torch import Tensor

SCORE_OFFSET = 0.5
#: Rows per recursive step.
CHUNK = 512
OLD_LABELS = ("zero", "pseudo")


def set_classifier(classifier: "torch.nn.Linear", w: Tensor) -> None:
    """Put the analytic weights ``w`` ``(dim + 1, classes)`` (the last row the intercept) into a
    linear classifier of that shape, its logits the ridge scores minus :data:`SCORE_OFFSET`."""
    import torch

    if w.shape != (classifier.in_features + 1, classifier.out_features):
        raise ValueError(f"analytic weights {tuple(w.shape)} do not fit the classifier {classifier}")
    with torch.no_grad():
        classifier.weight.copy_(w[:-1].T.to(classifier.weight))
        classifier.bias.copy_((w[-1] - SCORE_OFFSET).to(classifier.bias))


def base_head_model(model: "torch.nn.Module", base_head: Tensor) -> "torch.nn.Module":
    """A copy of an analytic checkpoint's model whose classifier is ``base_head``: the ridge head
    of phase 0 alone on the same frozen network, scoring the base classes only (the reference
    that separates the head's quality from what the increments cost)."""
    import copy

    import torch

    head = copy.deepcopy(model)
    old = model.classifier
    head.classifier = torch.nn.Linear(old.in_features, base_head.shape[1], device=old.weight.device,
                                      dtype=old.weight.dtype)
    set_classifier(head.classifier, base_head)
    return head.eval()


def with_intercept(z: Tensor) -> Tensor:
    """``[z, 1]`` in float64: ``(n, d + 1)``."""
    import torch

    return torch.cat([z.double(), torch.ones(len(z), 1, dtype=torch.float64, device=z.device)], dim=1)


def rls_start(dim: int, ridge: float) -> tuple[Tensor, Tensor]:
    """``(R, W)`` before any data: ``I / ridge`` and an empty ``(dim, 0)`` head (float64)."""
    import torch

    return torch.eye(dim, dtype=torch.float64) / ridge, torch.zeros(dim, 0, dtype=torch.float64)


def rls_update(r: Tensor, w: Tensor, x: Tensor, y: Tensor, chunk: int = CHUNK) -> tuple[Tensor, Tensor]:
    """ACIL's recursive least squares over the rows of ``x`` ``(n, dim)`` with targets ``y``
    ``(n, c)``; ``w`` ``(dim, c_w)`` with ``c_w <= c`` is padded with zero columns for the new
    classes. Returns the new ``(R, W)`` (float64)."""
    import torch

    x, y = x.double(), y.double()
    if w.shape[1] > y.shape[1]:
        raise ValueError(f"targets of {y.shape[1]} classes for a head of {w.shape[1]}")
    w = torch.cat([w, torch.zeros(len(w), y.shape[1] - w.shape[1], dtype=w.dtype, device=w.device)], dim=1)
    for start in range(0, len(x), chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]  # (b, dim), (b, c)
        rx = r @ xb.T  # (dim, b)
        gain = torch.linalg.solve(torch.eye(len(xb), dtype=x.dtype, device=x.device) + xb @ rx, rx.T)  # (b, dim)
        r = r - rx @ gain
        r = (r + r.T) / 2  # keep it symmetric against rounding
        w = w + r @ xb.T @ (yb - xb @ w)
    return r, w


def features(model, batches) -> tuple[Tensor, Tensor]:
    """``(x, y)``: the classifier's inputs ``(n, d)`` (after the expansion layer, if any) in eval
    mode and the targets, over ``batches``."""
    import torch

    captured: list[Tensor] = []
    handle = model.classifier.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    ys = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x, y in batches:
                model(x)
                ys.append(y)
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured), torch.cat(ys)


def phase_targets(y: Tensor, new_columns: slice, n_seen: int, *, old_labels: str,
                  x: Tensor | None = None, w_previous: Tensor | None = None) -> Tensor:
    """The ridge targets ``(n, n_seen)`` of a phase's excerpts: the phase's own classes from
    ``y`` (1/0), the earlier classes 0 (``old_labels="zero"``) or the previous classifier's
    decision ``x @ w_previous >= 0.5`` (``"pseudo"``)."""
    import torch

    out = torch.zeros(len(y), n_seen, dtype=torch.float64)
    out[:, new_columns] = (y[:, new_columns] == 1).double().cpu()
    n_old = new_columns.start
    if n_old and old_labels == "pseudo":
        out[:, :n_old] = ((x.double() @ w_previous) >= SCORE_OFFSET).double().cpu()
    elif old_labels not in OLD_LABELS:
        raise ValueError(f"unknown analytic_old_labels {old_labels!r}; allowed: {list(OLD_LABELS)}")
    return out


@register
class AnalyticClassifier(Mechanism):
    name = "analytic"
    settings = {
        "analytic": {
            "type": "boolean", "default": False,
            "description": "Replace training in phases 1..K by ACIL's analytic classifier on the frozen phase-0 "
                           "network: recursive least squares equal to the ridge solution on all data seen so far "
                           "(exemplar-free; the recursion's state is kept in the checkpoints).",
        },
        "ridge": {
            "type": "number", "exclusiveMinimum": 0, "default": 1.0,
            "description": "Ridge (L2) regularisation of the analytic classifier.",
        },
        "analytic_expansion": {
            "type": "integer", "minimum": 0, "default": 0,
            "description": "Width of ACIL's random expansion (buffer) layer relu(h @ E) before the analytic "
                           "classifier; 0: none, the pooled embedding itself.",
        },
        "analytic_old_labels": {
            "enum": list(OLD_LABELS), "default": "zero",
            "description": "The earlier classes' targets on a phase's clips, which are not labelled for them: zero "
                           "(negatives, ACIL's rule) or pseudo (the previous analytic classifier's decision, "
                           "score >= 0.5: L3A's pseudo-labels).",
        },
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return bool(values["analytic"])

    @classmethod
    def needs_previous_list(cls, values: Mapping[str, Any]) -> bool:
        return bool(values["analytic"])

    @classmethod
    def check(cls, values: Mapping[str, Any]) -> list[str]:
        if not values["analytic"]:
            return []
        others = {"data": "current", "replay": "none", "feature_distill": 0.0, "output_distill": "none",
                  "pseudo_labels": False, "mas": 0.0, "freeze_blocks": []}
        clash = sorted(k for k, v in others.items() if k in values and values[k] != v)
        if clash:
            return [f"analytic replaces SGD training, so {clash} would do nothing: leave them at their defaults"]
        return []

    def prepare(self, ctx: PhaseContext) -> None:
        start = time.monotonic()
        ridge = self.values["ridge"]
        expansion = self.values["analytic_expansion"]
        old_labels = self.values["analytic_old_labels"]
        previous = ctx.previous_state.get(self.name) or {}
        model = ctx.model
        if "R" in previous:
            if previous.get("expansion", 0) != expansion or model.settings.expansion != expansion:
                raise ValueError(f"the phase {ctx.phase - 1} checkpoint has an expansion layer of "
                                 f"{previous.get('expansion', 0)} units, the method {expansion}: delete this "
                                 "method's checkpoints and rerun")
            r, w = previous["R"].double(), previous["W"].double()
            n_seen_before, base_head = int(previous["n"]), previous["base_head"]
        elif ctx.phase == 1:
            if expansion:
                model.add_expansion(expansion, seed=ctx.seed)
                model.to(ctx.device)
            x0, y0 = features(model, ctx.batches(ctx.dataset(ctx.previous_list, 0)))
            x0 = with_intercept(x0).cpu()
            r, w = rls_start(x0.shape[1], ridge)
            y0 = phase_targets(y0, ctx.class_split.columns(0), len(ctx.class_split.seen(0)), old_labels=old_labels)
            r, w = rls_update(r, w, x0, y0)
            n_seen_before, base_head = len(x0), w.clone()
        else:
            raise ValueError(f"the phase {ctx.phase - 1} checkpoint has no analytic state (R, W): it was not "
                             "trained by this analytic method, or by an earlier version of it; delete this "
                             "method's checkpoints and rerun")
        x, y = features(model, ctx.batches(ctx.data))
        x = with_intercept(x).cpu()
        y = phase_targets(y, ctx.class_split.columns(ctx.phase), len(ctx.class_split.seen(ctx.phase)),
                          old_labels=old_labels, x=x, w_previous=w)
        self.r, self.w = rls_update(r, w, x, y)
        self.n = n_seen_before + len(x)
        self.base_head = base_head
        self.mse = float(((x @ self.w - y) ** 2).mean()) if len(x) else float("nan")
        self.n_phase = len(x)
        self.seconds = time.monotonic() - start

    def fit(self, ctx: PhaseContext) -> list[dict]:
        import torch

        start = time.monotonic()
        set_classifier(ctx.model.classifier, self.w)
        seconds = self.seconds + time.monotonic() - start
        return [{"epoch": 1, "lr": 0.0, "ridge_mse": self.mse, "total": self.mse, "seconds": round(seconds, 3),
                 "clips_per_s": round(self.n_phase / seconds, 1) if seconds > 0 else float("nan")}]

    def state(self) -> dict:
        return {"R": self.r.cpu(), "W": self.w.cpu(), "n": self.n, "base_head": self.base_head.cpu(),
                "expansion": self.values["analytic_expansion"]}
