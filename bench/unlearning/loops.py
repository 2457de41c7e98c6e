"""Building blocks shared by unlearning methods: optimizers from hyperparameters, the
"until D_f accuracy is 0" stop rule, and cycling loaders."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.core import runtime
from bench.data import View
from bench.unlearning.method import Context, hparam


def sgd(model: nn.Module, hp: Any) -> torch.optim.SGD:
    """SGD with the hyperparameters' ``lr``, ``momentum`` and ``weight_decay``."""
    return torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )


@dataclass(frozen=True)
class SalUnTableSGD:
    """The SGD settings the SalUn table's iterative baselines share (Unlearn-Saliency's
    ``arg_parser.py`` defaults: 10 epochs at ``--unlearn_lr`` 0.01, momentum 0.9, weight
    decay 5e-4, batch 256); ``augment``: ``recipe`` = the pretraining augmentation, as the
    reference's loaders carry the training transform. A method's hyperparameters subclass it
    and override the defaults its command gives (field order, hence run ids, unchanged)."""

    epochs: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: str = hparam("recipe", choices=("recipe", "none", "crop", "crop_flip"))


class ForgetCheck:
    """Evaluates the stop rule on the whole forget set (eval mode, one batch when it fits).

    ``targets`` = the labels that must no longer be predicted (misclassify) or, with
    ``relabel=True``, the labels every instance must be predicted as. The check runs in fp32
    (autocast off) whatever the run's precision: it is a decision, and bf16 logits can flip
    the arg-max of a forget instance near the boundary, so the stop step would depend on the
    precision.
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
        with runtime.fp32():
            for s in range(0, self.x.shape[0], self.batch_size):
                pred = model(self.x[s : s + self.batch_size]).argmax(1)
                t = self.targets[s : s + self.batch_size]
                n += (pred != t).sum() if self.relabel else (pred == t).sum()
        model.train(was)
        return n


#: device memory the deferred stop check may use for model snapshots (see :class:`DeferredStop`)
SNAPSHOT_BUDGET_BYTES = 2 * 1024**3
#: host reads of the stop rule on CUDA: one per this many optimizer steps (1 on the CPU, where
#: reading a value costs nothing)
CUDA_CHECK_INTERVAL = 8


def _state(model: nn.Module) -> list[torch.Tensor]:
    """Everything an update can change in ``model``: parameters and buffers (BatchNorm's
    running statistics and batch counter)."""
    return [p.detach() for p in model.parameters()] + list(model.buffers())


def _copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    torch._foreach_copy_(dst, src)  # a few fused kernels instead of one per tensor


def check_interval(model: nn.Module, device: torch.device) -> int:
    """Steps per host read for :func:`run_until_forgotten`: 1 on the CPU; on CUDA
    :data:`CUDA_CHECK_INTERVAL`, fewer when that many snapshots of the model would exceed
    :data:`SNAPSHOT_BUDGET_BYTES`."""
    if device.type != "cuda":
        return 1
    size = sum(t.numel() * t.element_size() for t in _state(model))
    return max(1, min(CUDA_CHECK_INTERVAL, SNAPSHOT_BUDGET_BYTES // max(size, 1)))


class DeferredStop:
    """The stop rule evaluated on the device at every check and read by the host once
    ``interval`` optimizer steps have passed since the last read, with an exact roll-back.

    Reading the rule's result after each step (``int(hits)``) makes the host wait for the GPU
    at every step, so it cannot queue the next step's kernels while the current one runs. Here
    each check leaves its hit count on the device and snapshots the model (parameters and
    buffers, one fused copy); the pending counts are read in one transfer at the first check
    at least ``interval`` steps after the last read. If a check passed, the model is restored
    to the snapshot of the *first* passing check and the context's step count and traces are
    rewound to it. The model returned is therefore bit-for-bit the one a per-check read gives.
    The price: about ``interval`` speculative steps at most per run (when checks come after
    every step, ``interval - 1``), and at most ``interval`` model copies of device memory.
    Counting steps, not checks, keeps a check per epoch of many steps from running whole
    epochs past the stop. The optimizer's state is not rolled back: callers stop training
    once :meth:`push` returns True."""

    def __init__(self, model: nn.Module, check: ForgetCheck, ctx: Context, interval: int = 1):
        self.model, self.check, self.ctx = model, check, ctx
        self.interval = max(1, int(interval))
        self.n = max(int(check.targets.numel()), 1)
        self.pending: list[tuple[torch.Tensor, int, int]] = []  # (hits, step, epoch)
        self.slots: list[list[torch.Tensor]] = []
        self.epochs = 0  # the epoch count at the first passing check
        self.read_at = ctx.steps  # the step count at the last read

    def push(self, epoch: int) -> bool:
        """Evaluate the rule on the current model (tagged with the context's step count and
        ``epoch``); True once a check is known to have passed, with the model rolled back."""
        hits = self.check.hits(self.model)
        if self.interval > 1:
            i = len(self.pending)
            state = _state(self.model)
            if i == len(self.slots):
                self.slots.append([t.clone() for t in state])
            else:
                _copy(self.slots[i], state)
        self.pending.append((hits, self.ctx.steps, epoch))
        return self.ctx.steps - self.read_at >= self.interval and self.resolve()

    def resolve(self) -> bool:
        """Read the pending checks (one host sync); roll back to the first passing one."""
        if not self.pending:
            return False
        pending, self.pending = self.pending, []
        values = torch.stack([h for h, _, _ in pending]).tolist()
        self.read_at = self.ctx.steps
        for i, (hits, (_, step, epoch)) in enumerate(zip(values, pending)):
            self.ctx.trace("objective_unmet", 100.0 * hits / self.n, step=step)
            if hits == 0:
                if step != self.ctx.steps:
                    _copy(_state(self.model), self.slots[i])
                    self.ctx.rewind(step)
                self.epochs = epoch
                return True
        return False


def run_until_forgotten(
    model: nn.Module,
    ctx: Context,
    check: ForgetCheck,
    max_epochs: int,
    epoch: Callable[[int], Iterator[None]],
    check_every_step: bool,
    interval: int | None = None,
) -> None:
    """Repeat ``epoch(e)`` (a generator that yields after each optimizer step) until ``check``
    passes, checking after every step or after every epoch, at most ``max_epochs`` epochs.
    Records steps, epochs used and whether the cap was hit in ``ctx``, and traces
    ``objective_unmet`` at every check: the % of D_f not yet meeting the objective (for
    ``misclassify``, the D_f accuracy) against optimizer steps.

    The checks run on the device and are read by the host about once per ``interval`` steps
    (default :func:`check_interval`: 1 on the CPU, 8 on CUDA) with an exact roll-back to the
    first passing check (:class:`DeferredStop`): the result does not depend on ``interval``."""
    if interval is None:
        interval = check_interval(model, check.x.device)
    stop = DeferredStop(model, check, ctx, interval)
    stop.push(0)
    if stop.resolve():
        ctx.report("epochs", 0)
        return
    for e in range(max_epochs):
        for _ in epoch(e):
            ctx.step()
            if check_every_step and stop.push(e + 1):
                ctx.report("epochs", stop.epochs)
                return
        if not check_every_step and stop.push(e + 1):
            ctx.report("epochs", stop.epochs)
            return
    if stop.resolve():
        ctx.report("epochs", stop.epochs)
        return
    ctx.cap_hit = True
    ctx.report("epochs", max_epochs)


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
    shift = runtime.to_device(torch.randint(1, num_classes, y.shape, generator=generator), y.device)
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
