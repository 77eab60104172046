"""torch's SGD without the import of torch's compiler.

``torch.optim.SGD`` wraps ``step`` (and ``Optimizer`` wraps ``add_param_group``, ``zero_grad``,
``state_dict`` and ``load_state_dict``) in decorators that import ``torch._dynamo`` on their
first call, only to switch compilation off around them: about 2 s of every training job's
start-up on a CPU, a fifth of a short phase job. Nothing here compiles, so :class:`SGD` calls
torch's own undecorated functions (``inspect.unwrap``): the same arithmetic, the same state
dicts, bit for bit (``tests/test_sgd.py`` checks both, and that the compiler stays unloaded).
"""

from __future__ import annotations

import inspect

import torch

_SGD_STEP = inspect.unwrap(torch.optim.SGD.step)
_ADD_PARAM_GROUP = inspect.unwrap(torch.optim.Optimizer.add_param_group)
_ZERO_GRAD = inspect.unwrap(torch.optim.Optimizer.zero_grad)
_STATE_DICT = inspect.unwrap(torch.optim.Optimizer.state_dict)
_LOAD_STATE_DICT = inspect.unwrap(torch.optim.Optimizer.load_state_dict)


class SGD(torch.optim.SGD):
    """``torch.optim.SGD`` (same arguments, state and results) whose methods skip the decorators
    that import ``torch._dynamo``; ``step`` runs without autograd, as torch's decorator runs it
    for a non-differentiable optimiser."""

    def step(self, closure=None):
        with torch.no_grad():
            return _SGD_STEP(self, closure)

    def add_param_group(self, param_group):
        return _ADD_PARAM_GROUP(self, param_group)

    def zero_grad(self, set_to_none: bool = True):
        return _ZERO_GRAD(self, set_to_none)

    def state_dict(self):
        return _STATE_DICT(self)

    def load_state_dict(self, state_dict):
        return _LOAD_STATE_DICT(self, state_dict)
