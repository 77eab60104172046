"""An analytic (closed-form ridge) classifier on the frozen phase-0 network: the exemplar-free
baseline of analytic continual learning (ACIL, Zhuang et al., NeurIPS 2022; used for audio by
recent work such as AnalyticKWS), for multi-label data.

The network of phase 0 stays as it is (no SGD, norm statistics included). Its pooled embedding
``z`` (the classifier's input, with a constant 1 appended for the intercept) feeds one ridge
regression per class onto its 0/1 labels. A class is labelled only on the clips of its own
phase (label absence: later clips hold earlier sounds unlabelled), so each phase p keeps its
own statistics, ``G_p = sum z z^T`` and ``Q_p = sum z y_p^T`` over its training excerpts, and
its classes' weights are

    W_p = (G_p + ridge * I)^-1 Q_p

which is exactly the ridge solution of every class over the clips it is labelled on, however
many phases came before: the recursion gives the joint least-squares classifier of the known
labels without keeping a clip. The statistics of phases 0..k are kept in each checkpoint
(``analytic``); phase 1 computes phase 0's from its training list (a summary of data already
seen). The classifier's logits are the ridge scores minus 0.5, so ``sigmoid(logit) > 0.5``
where the score passes 0.5 (the ranking metrics are unaffected).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Mapping

from .registry import Mechanism, PhaseContext, register

if TYPE_CHECKING:  # torch is imported where it is used: the config check at start-up needs none
    from torch import Tensor

SCORE_OFFSET = 0.5


def ridge_statistics(z: Tensor, y: Tensor) -> dict[str, Tensor]:
    """``G = Z^T Z``, ``Q = Z^T Y`` (float64), the number of rows and of positive entries, for
    embeddings ``z`` ``(n, d)`` with the constant column appended here and labels ``y`` ``(n, c)``."""
    import torch

    za = torch.cat([z.double(), torch.ones(len(z), 1, dtype=torch.float64, device=z.device)], dim=1)
    y = y.double()
    return {"gram": za.T @ za, "cross": za.T @ y, "n": torch.tensor(len(z)), "positives": y.sum()}


def ridge_solve(stats: Mapping[str, Tensor], ridge: float) -> Tensor:
    """``(G + ridge * I)^-1 Q``: ``(d + 1, c)``, the last row the intercept."""
    import torch

    g = stats["gram"]
    return torch.linalg.solve(g + ridge * torch.eye(len(g), dtype=g.dtype, device=g.device), stats["cross"])


def ridge_mse(stats: Mapping[str, Tensor], w: Tensor) -> float:
    """Mean squared error of ``Z W`` against ``Y`` over the statistics' entries, from ``G``, ``Q``
    and the positives: ``(tr(W^T G W) - 2 tr(W^T Q) + sum Y^2) / (n c)``."""
    import torch

    sse = torch.trace(w.T @ stats["gram"] @ w) - 2 * torch.trace(w.T @ stats["cross"]) + stats["positives"]
    return float(sse / (stats["n"] * w.shape[1]))


def embeddings(model, batches) -> tuple[Tensor, Tensor]:
    """``(z, y)``: the classifier's inputs ``(n, d)`` in eval mode and the targets, over ``batches``."""
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


@register
class AnalyticClassifier(Mechanism):
    name = "analytic"
    settings = {
        "analytic": {
            "type": "boolean", "default": False,
            "description": "Replace training in phases 1..K by a closed-form ridge classifier on the frozen phase-0 "
                           "network (exemplar-free; the per-phase statistics are kept in the checkpoints).",
        },
        "ridge": {
            "type": "number", "exclusiveMinimum": 0, "default": 1.0,
            "description": "Ridge (L2) regularisation of the analytic classifier.",
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

    def _phase_statistics(self, ctx: PhaseContext, data, phase: int) -> dict[str, Tensor]:
        z, y = embeddings(ctx.model, ctx.batches(data))
        cols = ctx.split.columns(phase)
        return ridge_statistics(z.cpu(), y[:, cols].cpu())

    def prepare(self, ctx: PhaseContext) -> None:
        start = time.monotonic()
        previous = (ctx.previous_state.get(self.name) or {}).get("phases")
        if previous is None:
            if ctx.phase != 1:
                raise ValueError(f"the phase {ctx.phase - 1} checkpoint has no analytic statistics: it was not "
                                 "trained by an analytic method; delete this method's checkpoints and rerun")
            previous = [self._phase_statistics(ctx, ctx.dataset(ctx.previous_list, 0), 0)]
        self.phases = list(previous) + [self._phase_statistics(ctx, ctx.data, ctx.phase)]
        self.seconds = time.monotonic() - start

    def fit(self, ctx: PhaseContext) -> list[dict]:
        import torch

        start = time.monotonic()
        weights = [ridge_solve(s, self.values["ridge"]) for s in self.phases]  # per phase (d + 1, c_p)
        w = torch.cat(weights, dim=1)  # (d + 1, n_seen)
        classifier = ctx.model.classifier
        if w.shape != (classifier.in_features + 1, classifier.out_features):
            raise ValueError(f"analytic weights {tuple(w.shape)} do not fit the classifier {classifier}")
        with torch.no_grad():
            classifier.weight.copy_(w[:-1].T.to(classifier.weight))
            classifier.bias.copy_((w[-1] - SCORE_OFFSET).to(classifier.bias))
        seconds = self.seconds + time.monotonic() - start
        n = int(self.phases[-1]["n"])
        mse = ridge_mse(self.phases[-1], weights[-1])
        return [{"epoch": 1, "lr": 0.0, "ridge_mse": mse, "total": mse, "seconds": round(seconds, 3),
                 "clips_per_s": round(n / seconds, 1) if seconds > 0 else float("nan")}]

    def state(self) -> dict:
        return {"phases": [{k: v.cpu() for k, v in s.items()} for s in self.phases]}
