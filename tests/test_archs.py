"""bench.models.archs: the kuangliu CIFAR ResNet-18 of the Mnemonic-code reference
(github.com/tomyamkum/OneShotMU-with-MNCode @ b62107892948db7bde72927fa2eed40b6c43e21c,
``models/resnet.py``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.metrics.representation import default_layers
from bench.models.archs import build_model, count_params


@pytest.fixture(scope="module")
def kuangliu():
    torch.manual_seed(0)
    return build_model("resnet18_kuangliu", 10, (3, 32, 32), [0.5] * 3, [0.25] * 3)


def test_kuangliu_resnet18_layout(kuangliu):
    net = kuangliu.net
    assert count_params(kuangliu) == 11_173_962  # the reference's ResNet18(num_classes=10)
    assert not any(isinstance(m, nn.MaxPool2d) for m in kuangliu.modules())
    stem = net.conv1
    assert (stem.kernel_size, stem.stride, stem.padding, stem.bias) == (
        (3, 3),
        (1, 1),
        (1, 1),
        None,
    )
    for i, width in enumerate((64, 128, 256, 512), start=1):
        stage = getattr(net, f"layer{i}")
        assert len(stage) == 2 and stage[1].conv2.out_channels == width
        shortcut = stage[0].shortcut
        if i == 1:
            assert len(shortcut) == 0  # identity: same width, stride 1
        else:  # 1x1 stride-2 conv + BN projection
            assert shortcut[0].kernel_size == (1, 1) and shortcut[0].stride == (2, 2)
            assert isinstance(shortcut[1], nn.BatchNorm2d)
    assert (net.fc.in_features, net.fc.out_features) == (512, 10)
    # the stages are found by the representation metrics (torchvision-style names)
    assert default_layers(kuangliu)[0] == "net.relu"
    assert default_layers(kuangliu)[-1] == "net.avgpool"


def test_kuangliu_resnet18_shapes(kuangliu):
    kuangliu.eval()
    with torch.no_grad():
        assert kuangliu(torch.rand(2, 3, 32, 32)).shape == (2, 10)
        seen = {}
        hooks = [
            getattr(kuangliu.net, f"layer{i}").register_forward_hook(
                lambda m, i, o, k=i: seen.__setitem__(k, tuple(o.shape))
            )
            for i in range(1, 5)
        ]
        kuangliu(torch.rand(1, 3, 32, 32))
        for h in hooks:
            h.remove()
    # no max-pool: 32x32 at layer1 (the max-pool variant has 16x16), 4x4 at layer4
    assert seen == {1: (1, 64, 32, 32), 2: (1, 128, 16, 16), 3: (1, 256, 8, 8), 4: (1, 512, 4, 4)}
