"""Memory Aware Synapses (MAS; Aljundi et al., ECCV 2018): the exemplar-free parameter
regulariser, with its importance state carried from phase to phase.

After a phase (computed here at the start of the next one, from the previous model and the
previous phase's training list: a summary of data already seen, no clip is trained on), each
parameter's importance is the absolute gradient of the squared L2 norm of the model's output,
with the model in eval mode, averaged over that phase's training excerpts:

    Omega_i = 1/N sum_b n_b | d/d theta_i  mean_{n in b} ||f(x_n)||^2 |

over mini-batches b of n_b excerpts, as the authors' code computes it (the paper writes the
per-excerpt form, which is the case n_b = 1; per-excerpt gradients cost about 10x more here).
``f`` is the network's RAW output, its logits, as in the paper and its code (an MSE against
zeros, summed: ``MSELoss(size_average=False)``). ``mas_output: sigmoid`` takes the per-class
probabilities instead, a variant of this project's, not the paper's: its gradient
``2 s^2 (1 - s)`` vanishes on confident negatives, so its importances are orders of magnitude
smaller and the paper's weight 1 means a much weaker penalty. Importances add up over the
phases (the previous total is kept in each checkpoint under ``mas``). Phase k then minimises

    L = L_BCE (+ the method's other terms) + mas * sum_i Omega_i (theta_i - theta*_i)^2

with ``theta*`` the previous phase's parameters. The new classes' classifier rows have no
anchor and no penalty.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .registry import Batch, Mechanism, PhaseContext, register

if TYPE_CHECKING:  # torch is imported where it is used: the config check at start-up needs none
    from torch import Tensor, nn


#: What the squared L2 norm of MAS's importance is taken of: the raw output (the paper's) or
#: the per-class probabilities (this project's earlier variant).
MAS_OUTPUTS = ("logits", "sigmoid")


def mas_importance(model: nn.Module, batches: Iterable[Tensor],
                   logits_of: Callable[[Any], Tensor] = lambda out: out[0],
                   output: str = "logits") -> dict[str, Tensor]:
    """``{parameter name: Omega}``, ``model`` in eval mode (restored after): for each batch b of
    n_b inputs, the absolute gradient of the batch's mean ``||logits||^2`` (``output="logits"``,
    the paper's) or ``||sigmoid(logits)||^2`` (``"sigmoid"``), weighted by n_b; summed over the
    batches and divided by the number of inputs. ``logits_of`` takes the logits out of the
    model's output (CNN14 returns ``(logits, embedding)``)."""
    import torch

    if output not in MAS_OUTPUTS:
        raise ValueError(f"unknown MAS output {output!r}; allowed: {list(MAS_OUTPUTS)}")
    was_training = model.training
    params = dict(model.named_parameters())
    frozen = {k: not p.requires_grad for k, p in params.items()}  # e.g. the old model's: restored after
    sums = {k: torch.zeros_like(v) for k, v in params.items()}
    n = 0
    model.eval()
    try:
        for p in params.values():
            p.requires_grad_(True)
        for x in batches:
            logits = logits_of(model(x))  # (batch, n_classes)
            out = logits if output == "logits" else torch.sigmoid(logits)
            norm = (out ** 2).sum(dim=1).mean()
            grads = torch.autograd.grad(norm, list(params.values()), allow_unused=True)
            for (k, _), g in zip(params.items(), grads):
                if g is not None:
                    sums[k] += g.abs() * len(x)
            n += len(x)
    finally:
        for k, p in params.items():
            p.requires_grad_(not frozen[k])
        model.train(was_training)
    if n == 0:
        raise ValueError("MAS importance needs at least one input")
    return {k: s.detach() / n for k, s in sums.items()}


def add_importance(total: Mapping[str, Tensor] | None, new: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``total + new``; an earlier total of a smaller classifier is zero-padded to the new shape."""
    out = {k: v.clone() for k, v in new.items()}
    for k, v in (total or {}).items():
        v = v.to(out[k].device)
        out[k][tuple(slice(0, n) for n in v.shape)] += v
    return out


def mas_penalty(model: nn.Module, anchor: Mapping[str, Tensor], importance: Mapping[str, Tensor]) -> Tensor:
    """``sum_i Omega_i (theta_i - theta*_i)^2`` over the anchored part of every parameter (a
    grown classifier's first rows)."""
    total = None
    for name, p in model.named_parameters():
        if name not in anchor:
            continue
        a = anchor[name]
        part = p[tuple(slice(0, n) for n in a.shape)]
        term = (importance[name] * (part - a) ** 2).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no parameter of the model is anchored")
    return total


@register
class MAS(Mechanism):
    name = "mas"
    settings = {
        "mas": {
            "type": "number", "minimum": 0, "default": 0.0,
            "description": "Weight of the Memory Aware Synapses penalty sum_i Omega_i (theta_i - theta*_i)^2 "
                           "(0 disables it; the MAS paper's value is 1, with the importance of its raw output).",
        },
        "mas_output": {
            "enum": list(MAS_OUTPUTS), "default": "logits",
            "description": "What MAS's importance differentiates the squared L2 norm of: logits (the raw "
                           "output, as the paper and its code) or sigmoid (the per-class probabilities, a variant "
                           "whose importances vanish on confident negatives).",
        },
    }

    @classmethod
    def active(cls, values: Mapping[str, Any]) -> bool:
        return values["mas"] > 0

    @classmethod
    def needs_old_model(cls, values: Mapping[str, Any]) -> bool:
        return values["mas"] > 0

    @classmethod
    def needs_previous_list(cls, values: Mapping[str, Any]) -> bool:
        return values["mas"] > 0

    def prepare(self, ctx: PhaseContext) -> None:
        data = ctx.dataset(ctx.previous_list, ctx.phase - 1)
        new = mas_importance(ctx.old_model, (x for x, _ in ctx.batches(data)), output=self.values["mas_output"])
        previous = (ctx.previous_state.get(self.name) or {}).get("importance")
        self.importance = add_importance(previous, new)
        self.anchor = {k: v.detach().clone() for k, v in ctx.old_model.named_parameters()}

    def loss(self, batch: Batch) -> dict[str, Tensor]:
        return {"mas": self.values["mas"] * mas_penalty(batch.model, self.anchor, self.importance)}

    def state(self) -> dict:
        return {"importance": {k: v.detach().cpu() for k, v in self.importance.items()}}
