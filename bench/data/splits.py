"""Splits of a dataset and index views into them.

Small datasets (digits, CIFAR) live as one tensor (uint8 images, or float in [0, 1]) that is
moved to the compute device once; batches are index tensors into it and augmentation is done in
batches on the device (the airbench approach). Large ones (ImageNet) stream from disk through a
torch DataLoader with workers. Both expose the same ``View`` API to methods, so a method never
knows which kind it got. Pixels handed to models are float in [0, 1]: normalization lives inside
the model (``bench.models.archs``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bench.core import runtime


class Split:
    """Base class: ``targets`` (int64, CPU) and ``batches(indices, ...)``."""

    targets: Tensor

    def __len__(self) -> int:
        return int(self.targets.numel())

    def batches(
        self,
        indices: Tensor,
        batch_size: int,
        device: torch.device,
        augment: str = "none",
        crop_padding: int = 4,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        raise NotImplementedError


class TensorSplit(Split):
    """An in-memory split: ``x`` uint8 [N, C, H, W] (or float in [0, 1]), ``y`` int64 [N]."""

    def __init__(self, x: Tensor, y: Tensor):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}")
        self.x = x.contiguous()
        self.targets = y.long().contiguous()
        self._on: dict[str, tuple[Tensor, Tensor]] = {}

    def on(self, device: torch.device) -> tuple[Tensor, Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.x.to(device), self.targets.to(device))
        return self._on[key]

    def batches(self, indices, batch_size, device, augment="none", crop_padding=4, generator=None):
        x_all, y_all = self.on(device)
        idx = runtime.to_device(indices, device)
        for s in range(0, idx.numel(), batch_size):
            b = idx[s : s + batch_size]
            x = to_float(x_all.index_select(0, b))
            if augment != "none":
                x = augment_batch(x, augment, crop_padding, generator)
            yield runtime.to_layout(x, device), y_all.index_select(0, b)


def to_float(x: Tensor) -> Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def augment_batch(x: Tensor, kind: str, padding: int, generator: torch.Generator | None) -> Tensor:
    """Random crop with zero padding (and horizontal flip for ``crop_flip``), per example,
    vectorized over the batch. ``generator`` must live on the CPU; offsets are moved over."""
    n, _, h, w = x.shape
    if padding > 0:
        xp = torch.nn.functional.pad(x, (padding,) * 4)
        off = runtime.to_device(
            torch.randint(0, 2 * padding + 1, (n, 2), generator=generator), x.device
        )
        rows = (off[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (off[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        nidx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        cidx = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = xp[nidx, cidx, rows, cols]
    if kind == "crop_flip":
        flip = runtime.to_device(torch.rand(n, generator=generator) < 0.5, x.device)
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    return x


class FileSplit(Split):
    """A split streamed from image files (ImageNet-style ``ImageFolder``) through a DataLoader.

    ``eval_transform`` is used when ``augment == "none"``, ``train_transform`` otherwise. Both
    must end with ``ToTensor()`` (pixels in [0, 1]).
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        eval_transform: Any,
        train_transform: Any | None = None,
        num_workers: int = 4,
    ):
        self.samples = samples
        self.targets = torch.tensor([s[1] for s in samples], dtype=torch.long)
        self.eval_transform = eval_transform
        self.train_transform = train_transform or eval_transform
        self.num_workers = num_workers

    def batches(self, indices, batch_size, device, augment="none", crop_padding=4, generator=None):
        from torch.utils.data import DataLoader

        ds = _FileDataset(
            self.samples,
            indices.tolist(),
            self.eval_transform if augment == "none" else self.train_transform,
        )
        loader = DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )
        for x, y in loader:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class _FileDataset(torch.utils.data.Dataset):
    def __init__(self, samples, order, transform):
        self.samples, self.order, self.transform = samples, order, transform

    def __len__(self):
        return len(self.order)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[self.order[i]]
        with Image.open(path) as im:
            return self.transform(im.convert("RGB")), label


@dataclass(frozen=True)
class View:
    """A subset of a split, addressed by indices into it. This is what methods receive.

    ``loader`` yields (x, y) batches on the run's device: x float in [0, 1], y int64. With
    ``shuffle=True`` a CPU generator must be given (methods get one from ``ctx``).
    """

    split: Split
    indices: Tensor
    device: torch.device = torch.device("cpu")
    name: str = ""

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def targets(self) -> Tensor:
        return self.split.targets.index_select(0, self.indices)

    def loader(
        self,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: str = "none",
        crop_padding: int = 4,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        idx = self.indices
        if shuffle:
            if generator is None:
                raise ValueError("View.loader(shuffle=True) needs a seeded CPU generator")
            idx = idx[torch.randperm(idx.numel(), generator=generator)]
        return self.split.batches(idx, batch_size, self.device, augment, crop_padding, generator)

    def tensors(self) -> tuple[Tensor, Tensor]:
        """All of the view as two tensors on the device (for small views such as D_f)."""
        xs, ys = zip(*self.loader(4096)) if len(self) else ((), ())
        if not xs:
            raise ValueError(f"view {self.name!r} is empty")
        return torch.cat(xs), torch.cat(ys)

    def subset(self, positions: Tensor, name: str = "") -> View:
        """A view of some of this view's rows (positions are 0..len-1 within this view)."""
        return View(
            self.split,
            self.indices.index_select(0, positions.long()),
            self.device,
            name or self.name,
        )

    def sample(self, n: int, seed: int) -> View:
        """At most ``n`` rows, a seeded random subset kept in index order (all rows when the
        view has no more than ``n``)."""
        if len(self) <= n:
            return self
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)

    def to(self, device: torch.device) -> View:
        return View(self.split, self.indices, device, self.name)
