"""Hot loops on CUDA do not make the host wait for the GPU (``torch.cuda.set_sync_debug_mode``
raises on every synchronizing call). Needs a CUDA device: skipped elsewhere (CI has none); run
on a GPU machine with ``python -m pytest tests/test_cuda_sync.py``."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


def _view(n=512):
    from bench.data.splits import TensorSplit, View

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return View(TensorSplit(x, y), torch.arange(n), CUDA, "train")


def _model():
    from bench.models.archs import build_model

    torch.manual_seed(0)
    return build_model("smallcnn", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3).to(CUDA)


class _NoSync:
    def __enter__(self):
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")


def test_training_epochs_never_sync():
    from bench.core.spec import Recipe
    from bench.models.train import train

    view, model = _view(), _model()
    recipe = Recipe(epochs=1, batch_size=64, augment="crop_flip")
    train(model, view, recipe, seed=0)  # warm-up: data copy, pinned blocks, kernels
    with _NoSync():
        train(model, view, Recipe(epochs=2, batch_size=64, augment="crop_flip"), seed=1)


def test_l2ul_stop_check_reads_once_per_interval():
    from bench.core.spec import Recipe
    from bench.unlearning.loops import DeferredStop, ForgetCheck, run_until_forgotten
    from bench.unlearning.method import Context

    view, model = _view(), _model()
    forget = view.subset(torch.arange(32), "forget")
    xf, yf = forget.tensors()
    never = ForgetCheck(forget, targets=torch.full_like(yf, -1), relabel=True)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    reads = []
    resolve = DeferredStop.resolve

    def counted(self):
        if self.pending:
            reads.append(len(self.pending))
            torch.cuda.set_sync_debug_mode("default")  # the one read it is allowed
            try:
                return resolve(self)
            finally:
                torch.cuda.set_sync_debug_mode("error")
        return resolve(self)

    def epoch(_e):
        model.train()
        for _ in range(4):
            loss = -torch.nn.functional.cross_entropy(model(xf), yf)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            yield

    ctx = Context(CUDA, 0, torch.Generator(), Recipe(), 10)
    with pytest.MonkeyPatch.context() as mp, _NoSync():
        mp.setattr(DeferredStop, "resolve", counted)
        run_until_forgotten(model, ctx, never, 8, epoch, True, interval=8)
    assert ctx.steps == 32 and ctx.cap_hit
    assert reads == [1, 8, 8, 8, 8]  # the initial check, then one read per 8 steps
