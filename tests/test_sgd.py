"""cilaudio.sgd.SGD against torch.optim.SGD: the same numbers bit for bit, without the compiler."""

from __future__ import annotations

import copy
import subprocess
import sys

import torch

from cilaudio.sgd import SGD


def _run(opt_class, steps: int = 6, resume_at: int | None = None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3))
    opt = opt_class(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-4)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        if step == resume_at:  # a resumed job: fresh objects loaded from the state dicts
            state = copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))
            model.load_state_dict(state[0])
            opt = opt_class(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            opt.load_state_dict(state[1])
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=1e-4)
            sched.load_state_dict(state[2])
        x = torch.randn(8, 1, 8, 8, generator=gen)
        y = torch.randn(8, 3, generator=gen)
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.state_dict(), opt.state_dict()


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_the_same_weights_and_state_as_torch_sgd_bit_for_bit():
    ours, theirs = _run(SGD), _run(torch.optim.SGD)
    assert _equal(ours, theirs)
    assert _equal(_run(SGD, resume_at=3), theirs)  # through state_dict / load_state_dict
    assert not _equal(_run(SGD, steps=5), theirs)  # the comparison can tell runs apart


_SCRIPT = """
import sys, torch
{imports}
model = torch.nn.Linear(4, 2)
opt = {cls}(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
model(torch.randn(5, 4)).sum().backward()
opt.step(); sched.step(); opt.zero_grad(); opt.load_state_dict(opt.state_dict())
print(int("torch._dynamo" in sys.modules))
"""


def test_the_compiler_stays_unloaded_where_torch_sgd_loads_it():
    """In a fresh interpreter: torch's SGD imports torch._dynamo (what costs the 2 s), ours not."""
    def loaded(imports: str, cls: str) -> str:
        code = _SCRIPT.format(imports=imports, cls=cls)
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              timeout=120).stdout.strip()

    assert loaded("", "torch.optim.SGD") == "1"
    assert loaded("from cilaudio.sgd import SGD", "SGD") == "0"
    assert loaded("from cilaudio import train as T\nT.set_determinism(False, torch.device('cpu'))\n"
                  "from cilaudio.sgd import SGD", "SGD") == "0"
