"""Architectures, registered by name. Every model takes pixels in [0, 1]: a parameter-free
``Normalize`` layer is the first module, so attacks and methods work in pixel space.

* ``smallcnn``        a ~0.1 M-parameter CNN for the embedded 8x8 data and small inputs.
* ``mlp``             a 2x512 BatchNorm MLP (CPU-sized evidence runs on CIFAR subsets).
* ``resnet18_cifar``  the CIFAR ResNet-18 of the L2UL code: torchvision-style ResNet-18 with a
  3x3 stride-1 stem (no bias) + BN + ReLU, the 3x3 stride-2 max-pool kept, [2,2,2,2] basic
  blocks of widths 64..512, Kaiming-normal (fan_out) init (spec section 1.7).
* ``resnet18_salun``  the CIFAR ResNet-18 of the SalUn / Unlearn-Sparse code: torchvision's
  ResNet-18 with the 3x3 stride-1 stem and *no* max-pool, Kaiming-normal (fan_out) init,
  torchvision's module names, and the reference's input normalization.
* ``resnet18_kuangliu`` the kuangliu/pytorch-cifar ResNet-18 of the Mnemonic-code reference
  (3x3 stride-1 stem conv + BN + ReLU, *no* max-pool, [2,2,2,2] basic blocks of widths
  64..512 with 1x1 conv + BN projection shortcuts, global average pool, linear 512 -> classes;
  PyTorch's default initialisation), 11.17 M parameters for 10 classes.
* ``resnet20_cifar``  He et al.'s CIFAR ResNet-20 (option-A shortcuts, 0.27 M parameters) with
  the normalization its published weights expect: the CPU-sized converged CIFAR CNN.
* ``resnet50_cifar``  the pytorch-cifar100 ResNet-50: 3x3 stride-1 stem, no max-pool,
  bottleneck stages [3,4,6,3] with strides 1,2,2,2.
* ``resnet18_tv``     torchvision's ImageNet-style ResNet-18 trained from scratch (the
  Nabla-tau setting).
* ``tv_resnet50``     torchvision's ImageNet ResNet-50, with its IMAGENET1K_V1 weights when
  the recipe says ``pretrained`` (they must be in the torch hub cache when offline).
* ``timm/<name>``     any timm model (``timm.create_model(name, num_classes=..)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from bench.core.errors import BenchError
from bench.core.registry import Registry

ARCHS = Registry("arch")
register_arch = ARCHS.register


class Normalize(nn.Module):
    """(x - mean) / std with fixed buffers: the model's first layer."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """``Normalize`` followed by a backbone; ``features`` exposes the penultimate layer."""

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.norm = Normalize(mean, std)
        self.net = net

    def forward(self, x):
        return self.net(self.norm(x))


@register_arch("smallcnn", params="~0.1M")
def small_cnn(num_classes: int, in_shape: tuple[int, int, int], pretrained: bool = False):
    """Conv(32)-BN-ReLU, Conv(64)-BN-ReLU, max-pool, Conv(128)-BN-ReLU, global avg-pool, FC."""
    c = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1, bias=False),
        nn.BatchNorm2d(128),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(128, num_classes),
    )


@register_arch("mlp", params="~1.8M at 32x32x3")
def mlp(num_classes: int, in_shape: tuple[int, int, int], pretrained: bool = False):
    """Flatten, two hidden layers of 512 with BatchNorm and ReLU, linear head. Fast on CPU and
    able to fit (memorize) a few thousand CIFAR images, the regime of the L2UL paper's
    ResNet-18 (100 % train accuracy), which the CPU-sized CNN does not reach."""
    d = in_shape[0] * in_shape[1] * in_shape[2]
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(d, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.ReLU(inplace=True),
        nn.Linear(512, 512, bias=False),
        nn.BatchNorm1d(512),
        nn.ReLU(inplace=True),
        nn.Linear(512, num_classes),
    )


def _cifar_stem(resnet: nn.Module, in_ch: int, keep_maxpool: bool) -> nn.Module:
    resnet.conv1 = nn.Conv2d(in_ch, 64, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(resnet.conv1.weight, mode="fan_out", nonlinearity="relu")
    if not keep_maxpool:
        resnet.maxpool = nn.Identity()
    return resnet


@register_arch("resnet18_cifar", params="11.2M")
def resnet18_cifar(num_classes: int, in_shape, pretrained: bool = False):
    """L2UL's CIFAR-10 ResNet-18 (3x3 stride-1 stem, max-pool kept)."""
    from torchvision.models import resnet18

    return _cifar_stem(resnet18(num_classes=num_classes), in_shape[0], keep_maxpool=True)


#: the input normalization of the SalUn / Unlearn-Sparse CIFAR-10 models (their
#: ``NormalizeByChannelMeanStd`` in ``models/ResNet.py`` and ``utils.setup_model_dataset``)
SALUN_CIFAR10_NORMALIZE = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


@register_arch("resnet18_salun", params="11.2M", normalize=SALUN_CIFAR10_NORMALIZE)
def resnet18_salun(num_classes: int, in_shape, pretrained: bool = False):
    """The CIFAR ResNet-18 of SalUn's Table 1 (OPTML-Group/Unlearn-Saliency @ a6e89fd,
    ``Classification/models/ResNet.py``, ``resnet18`` without ``imagenet``; the same file as
    Unlearn-Sparse's): torchvision's ResNet-18 code with a 3x3 stride-1 stem conv (no bias),
    BN, ReLU and the max-pool replaced by the identity, 1x1 conv + BN projection shortcuts,
    Kaiming-normal (fan_out) convolutions, BN weight 1 / bias 0, PyTorch's default init of
    the linear head. Module names are torchvision's, as the reference's (``conv1 ... fc``), so
    its state dicts load (less its ``normalize.*`` buffers). The normalization is the
    reference's (std 0.2470, 0.2435, 0.2616; the harness's CIFAR-10 default has kuangliu's
    0.2023, 0.1994, 0.2010). Not ``resnet18_cifar`` (max-pool kept) nor ``resnet18_kuangliu``
    (same layers, PyTorch's default initialisation)."""
    from torchvision.models import resnet18

    if pretrained:
        raise BenchError("resnet18_salun has no published weights: train it (pretrained=False)")
    return _cifar_stem(resnet18(num_classes=num_classes), in_shape[0], keep_maxpool=False)


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BN, ReLU between and after the sum; identity shortcut, or a 1x1 conv +
    BN projection where the stride or the width changes."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class KuangliuResNet18(nn.Module):
    """The CIFAR ResNet-18 of kuangliu/pytorch-cifar, as vendored by the Mnemonic-code reference
    (github.com/tomyamkum/OneShotMU-with-MNCode @ b62107892948db7bde72927fa2eed40b6c43e21c,
    ``models/resnet.py``: ``ResNet(BasicBlock, [2, 2, 2, 2])``). Written here, not copied.

    Same layers, shapes, order and initialisation (PyTorch defaults) as the reference. Module
    names follow torchvision (``conv1, bn1, relu, layer1..layer4, avgpool, fc``), so that
    ``bench.metrics.representation.default_layers`` finds the stages; the reference names the
    head ``linear``. Pooling: the reference's ``avg_pool2d(out, 4)`` followed by an adaptive
    1x1 average pool is the global average here (identical for 32x32 inputs, whose last map
    is 4x4; any input size works)."""

    def __init__(self, num_classes: int, in_ch: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        in_planes, stages = 64, []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    _BasicBlock(in_planes, planes, stride), _BasicBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


@register_arch("resnet18_kuangliu", params="11.2M")
def resnet18_kuangliu(num_classes: int, in_shape, pretrained: bool = False):
    """kuangliu/pytorch-cifar ResNet-18 (no max-pool): the Mnemonic-code reference's CIFAR
    model (:class:`KuangliuResNet18`)."""
    if pretrained:
        raise BenchError("resnet18_kuangliu has no published weights: train it (pretrained=False)")
    return KuangliuResNet18(num_classes, in_shape[0])


class _OptionABlock(nn.Module):
    """The CIFAR ResNet's basic block (He et al. 2016, section 4.2): conv3x3(stride) - BN -
    ReLU - conv3x3 - BN, plus the shortcut, then ReLU. Where the shape changes the shortcut is
    "option A": no parameters, every second pixel and the channels zero-padded by planes // 4
    on each side."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = planes // 4 if (stride != 1 or in_planes != planes) else 0

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad:
            x = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return torch.relu(out + x)


class CifarResNet(nn.Module):
    """The CIFAR ResNet-6n+2 of He et al. 2016 (section 4.2): conv3x3(16) - BN - ReLU, three
    stages of ``n`` option-A basic blocks of widths 16, 32, 64 (strides 1, 2, 2), global
    average pooling, linear head. ``n = 3`` is ResNet-20 (0.27 M parameters). Module names
    (``conv1, bn1, layer1..3, linear``) are those of the widespread CIFAR ResNet-20
    checkpoints (e.g. the one described in ``../shared/data/weights/PROVENANCE.txt``), so
    their state dicts load as they are. Kaiming-normal init of convs and the head."""

    def __init__(self, num_classes: int, in_ch: int = 3, n: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes, stages = 16, []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_OptionABlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.avgpool(out), 1))


@register_arch(
    "resnet20_cifar",
    params="0.27M",
    # the normalization the published CIFAR ResNet-20 weights expect (kuangliu's statistics)
    normalize=((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
)
def resnet20_cifar(num_classes: int, in_shape, pretrained: bool = False):
    """CIFAR ResNet-20 (He et al. 2016), option-A shortcuts, 0.27 M parameters: a converged
    CIFAR-10 CNN that trains and unlearns on two CPU cores (:class:`CifarResNet`). No
    published weights through ``pretrained``: start from a file with ``--checkpoint``."""
    if pretrained:
        raise BenchError(
            "resnet20_cifar has no built-in weights: pass --checkpoint FILE (a state dict)"
        )
    return CifarResNet(num_classes, in_shape[0], n=3)


@register_arch("resnet50_cifar", params="23.7M")
def resnet50_cifar(num_classes: int, in_shape, pretrained: bool = False):
    """L2UL's CIFAR-100 ResNet-50 (pytorch-cifar100 style: 3x3 stride-1 stem, no max-pool)."""
    from torchvision.models import resnet50

    return _cifar_stem(resnet50(num_classes=num_classes), in_shape[0], keep_maxpool=False)


@register_arch("resnet18_tv", params="11.2M")
def resnet18_tv(num_classes: int, in_shape, pretrained: bool = False):
    """torchvision ResNet-18 (7x7 stride-2 stem + max-pool), from scratch: the Nabla-tau model."""
    from torchvision.models import resnet18

    return resnet18(num_classes=num_classes)


@register_arch("tv_resnet50", params="25.6M")
def tv_resnet50(num_classes: int, in_shape, pretrained: bool = False):
    """torchvision ImageNet ResNet-50; ``pretrained`` loads IMAGENET1K_V1 (L2UL's ImageNet
    model)."""
    from torchvision.models import ResNet50_Weights, resnet50

    if not pretrained:
        return resnet50(num_classes=num_classes)
    if num_classes != 1000:
        raise BenchError("tv_resnet50 with pretrained weights has 1000 classes (ImageNet-1K)")
    try:
        return resnet50(weights=ResNet50_Weights.IMAGENET1K_V1)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        hub = os.path.join(torch.hub.get_dir(), "checkpoints")
        raise BenchError(
            f"cannot load torchvision's ResNet-50 ImageNet weights ({exc.__class__.__name__}): "
            f"put {ResNet50_Weights.IMAGENET1K_V1.url.rsplit('/', 1)[-1]} in {hub} "
            f"(or set TORCH_HOME) on a machine without network"
        ) from None


def _timm(name: str) -> Callable:
    def build(num_classes: int, in_shape, pretrained: bool = False):
        import timm

        if pretrained:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never hang ~47 s retrying offline
        try:
            return timm.create_model(
                name, pretrained=pretrained, num_classes=num_classes, in_chans=in_shape[0]
            )
        except RuntimeError as exc:
            if "Unknown model" in str(exc):
                near = timm.list_models(f"*{name.split('_')[0]}*")[:5]
                raise BenchError(
                    f"timm has no model {name!r}; similar: {', '.join(near)}"
                ) from None
            raise BenchError(f"timm could not build {name!r}: {exc}") from None
        except OSError as exc:
            raise BenchError(
                f"timm could not load pretrained weights for {name!r} offline "
                f"({exc}); put them in the Hugging Face cache or use "
                f"pretrained=False"
            ) from None

    return build


def build_model(
    arch: str,
    num_classes: int,
    in_shape,
    mean,
    std,
    pretrained: bool = False,
    normalize: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
) -> Classifier:
    """Build a registered architecture (or ``timm/<name>``) wrapped with its normalization:
    ``normalize`` (mean, std) when given (``--normalize``: what a user's weights expect), else
    the architecture's own when it registers one (the statistics its published weights were
    trained with), else the dataset's (``mean``, ``std``)."""
    if arch.startswith("timm/"):
        net = _timm(arch[5:])(num_classes, in_shape, pretrained)
    else:
        net = ARCHS.get(arch)(num_classes, in_shape, pretrained)
        if normalize is None:
            normalize = ARCHS.entry(arch).meta.get("normalize")
    if normalize is not None:
        mean, std = normalize
        if len(mean) == len(std) == 1:  # one mean and std for every channel
            mean, std = tuple(mean) * in_shape[0], tuple(std) * in_shape[0]
        if len(mean) != in_shape[0] or len(std) != in_shape[0]:
            raise BenchError(
                f"normalization for {arch} has {len(mean)} means and {len(std)} stds, but the "
                f"data have {in_shape[0]} channel(s): give one mean and one std per channel"
            )
    return Classifier(net, mean, std)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
