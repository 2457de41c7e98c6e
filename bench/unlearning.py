"""Building blocks shared by unlearning methods: optimizers from hyperparameters, the
"until D_f accuracy is 0" stop rule, and cycling loaders."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from bench.data import View
from bench.method import Context


def sgd(model: nn.Module, hp: Any) -> torch.optim.SGD:
    """SGD with the hyperparameters' ``lr``, ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )


class ForgetCheck:
    """Evaluates the stop rule on the whole forget set (eval mode, one batch when it fits).

    ``targets`` = the labels that must no longer be predicted (misclassify) or, with
    ``relabel=True``, the labels every instance must be predicted as.
    """

    def __init__(
        self,
        forget: View,
        targets: torch.Tensor | None = None,
        relabel: bool = False,
        batch_size: int = 1024,
    ):
        self.x, y = forget.tensors()
        self.targets = (targets if targets is not None else y).to(self.x.device)
        self.relabel = relabel
        self.batch_size = batch_size

    @torch.no_grad()
    def hits(self, model: nn.Module) -> torch.Tensor:
        """Number of instances still counted as 'not unlearned' (a 0-d tensor, no host sync)."""
        was = model.training
        model.eval()
        n = torch.zeros((), dtype=torch.long, device=self.x.device)
        for s in range(0, self.x.shape[0], self.batch_size):
            pred = model(self.x[s : s + self.batch_size]).argmax(1)
            t = self.targets[s : s + self.batch_size]
            n += (pred != t).sum() if self.relabel else (pred == t).sum()
        model.train(was)
        return n

    def done(self, model: nn.Module) -> bool:
        return int(self.hits(model)) == 0


def run_until_forgotten(
    model: nn.Module,
    ctx: Context,
    check: ForgetCheck,
    max_epochs: int,
    epoch: Callable[[int], Iterator[None]],
    check_every_step: bool,
) -> None:
    """Repeat ``epoch(e)`` (a generator that yields after each optimizer step) until ``check``
    passes, checking after every step or after every epoch, at most ``max_epochs`` epochs.
    Records steps, epochs used and whether the cap was hit in ``ctx``, and traces
    ``objective_unmet`` at every check: the % of D_f not yet meeting the objective (for
    ``misclassify``, the D_f accuracy) against optimizer steps."""
    n = max(int(check.targets.numel()), 1)

    def done() -> bool:
        hits = int(check.hits(model))
        ctx.trace("objective_unmet", 100.0 * hits / n)
        return hits == 0

    epochs = 0
    if done():
        ctx.report("epochs", 0)
        return
    for e in range(max_epochs):
        epochs = e + 1
        for _ in epoch(e):
            ctx.step()
            if check_every_step and done():
                ctx.report("epochs", epochs)
                return
        if not check_every_step and done():
            ctx.report("epochs", epochs)
            return
    ctx.cap_hit = True
    ctx.report("epochs", epochs)


def cycle(make: Callable[[], Iterator]) -> Iterator:
    """Endless iteration over a re-creatable loader (a new pass each time one ends)."""
    while True:
        empty = True
        for item in make():
            empty = False
            yield item
        if empty:
            return


def other_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A label drawn uniformly from the classes other than ``y``, per element."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % num_classes


@torch.no_grad()
def seeded_reset(modules, generator: torch.Generator) -> None:
    """Re-initialise ``modules`` in place with their own ``reset_parameters()`` (PyTorch's
    default initialisation; BatchNorm also resets its running statistics), seeded from one
    63-bit draw of ``generator``: the reset runs on CPU copies inside
    ``torch.random.fork_rng(devices=[])`` with only the CPU default generator seeded, so the
    result depends on the run's seed alone (same on CPU and CUDA) and the global RNG state is
    restored afterwards. Modules without ``reset_parameters`` are left as they are."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        for module in modules:
            reset = getattr(module, "reset_parameters", None)
            if not callable(reset):
                continue
            state = module.state_dict()
            fresh = copy.deepcopy(module).to("cpu")
            fresh.reset_parameters()
            for k, v in fresh.state_dict().items():
                state[k].copy_(v)
