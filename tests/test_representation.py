"""Known-answer tests for the representation diagnostics (linear CKA, layer-wise CKA, confusion
matrix, penultimate embeddings) of :mod:`bench.metrics.representation`."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from bench.metrics.representation import (
    confusion,
    default_layers,
    embeddings,
    layer_features,
    layerwise_cka,
    linear_cka,
)
from bench.models.archs import ARCHS, build_model


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: one intra-op thread is as fast, and does not slow to a crawl
    when another job holds the cores (runs after conftest's ``_threads``, restores it)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _orthogonal(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(_rng(seed).standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def smallcnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("smallcnn", 10, (1, 8, 8), [0.5], [0.25])


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    """One ``resnet18_cifar`` for the module (building it costs ~1.5 s of init on 2 cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        return build_model("resnet18_cifar", 10, (3, 32, 32), [0.5] * 3, [0.25] * 3)
    finally:
        torch.set_num_threads(before)


def images(n: int, shape=(1, 8, 8), seed: int = 0) -> torch.Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def final_linear_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen = []
    h = fc.register_forward_hook(lambda m, i, o: seen.append(i[0].detach().clone()))
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    return seen[0]


# ---------------------------------------------------------------------------------------
# linear_cka


def test_cka_self_is_one_numpy_and_torch():
    x = _rng(0).standard_normal((40, 7))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    t = torch.as_tensor(x, dtype=torch.float32).requires_grad_()
    assert linear_cka(t, t) == pytest.approx(1.0, abs=1e-12)


def test_cka_hand_computed_single_features_is_squared_correlation():
    # x = [0, 1, 2] -> centered [-1, 0, 1]; y = [0, 1, 3] -> centered [-4/3, -1/3, 5/3]
    # y^T x = 3, x^T x = 2, y^T y = 42/9 = 14/3, so CKA = 9 / (2 * 14/3) = 27/28
    x = np.array([[0.0], [1.0], [2.0]])
    y = np.array([[0.0], [1.0], [3.0]])
    assert linear_cka(x, y) == pytest.approx(27 / 28, abs=1e-14)
    assert linear_cka(x, y) == pytest.approx(np.corrcoef(x[:, 0], y[:, 0])[0, 1] ** 2, abs=1e-14)


def test_cka_hand_computed_two_features():
    # already centered; X^T X = 2 I (||.||_F = 2 sqrt 2), Y = first column: Y^T Y = [2],
    # Y^T X = [2, 0] (||.||_F^2 = 4) -> CKA = 4 / (2 sqrt 2 * 2) = 1 / sqrt 2
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    for method in ("primal", "dual", "auto"):
        assert linear_cka(x, x[:, :1], method=method) == pytest.approx(2**-0.5, abs=1e-14)
    # a constant offset changes nothing (column centering)
    assert linear_cka(x + 5.0, x[:, :1] - 3.0) == pytest.approx(2**-0.5, abs=1e-12)


def test_cka_orthogonal_and_isotropic_scale_invariance_and_symmetry():
    rng = _rng(1)
    x = rng.standard_normal((60, 12))
    y = x @ rng.standard_normal((12, 9)) + 0.5 * rng.standard_normal((60, 9))
    base = linear_cka(x, y)
    assert 0.05 < base < 0.999
    q = _orthogonal(12, seed=2)
    assert linear_cka(3.7 * x @ q, y) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, 1e-3 * y @ _orthogonal(9, seed=3)) == pytest.approx(base, abs=1e-12)
    assert linear_cka(y, x) == pytest.approx(base, abs=1e-12)
    assert linear_cka(x, 2.0 * x @ q) == pytest.approx(1.0, abs=1e-12)
    # not invariant to a general (anisotropic) invertible map
    aniso = np.diag(np.linspace(0.1, 10.0, 12))
    assert abs(linear_cka(x @ aniso, y) - base) > 1e-3


def test_cka_primal_equals_dual():
    rng = _rng(4)
    for n, d1, d2 in [(30, 5, 8), (10, 50, 40), (25, 25, 3)]:
        x, y = rng.standard_normal((n, d1)), rng.standard_normal((n, d2))
        assert linear_cka(x, y, method="primal") == pytest.approx(
            linear_cka(x, y, method="dual"), abs=1e-12
        )


def test_cka_independent_features_near_zero():
    # independent, n >> d: E[CKA] ~ sqrt(d1 d2) / n = 1e-3 here; tolerance 0.01
    rng = _rng(5)
    x, y = rng.standard_normal((5000, 5)), rng.standard_normal((5000, 5))
    assert 0.0 <= linear_cka(x, y) < 0.01


def test_cka_zero_variance_is_nan():
    x = _rng(6).standard_normal((10, 3))
    assert np.isnan(linear_cka(np.full((10, 4), 0.1), x))
    assert np.isnan(linear_cka(x, np.zeros((10, 2))))
    # one constant column among varying ones is fine
    xc = np.concatenate([x, np.full((10, 1), 0.1)], axis=1)
    assert linear_cka(xc, x) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    "x, y, match",
    [
        (np.zeros(5), np.zeros((5, 1)), "2-D"),
        (np.ones((5, 2)), np.ones((4, 2)), "same number of rows"),
        (np.ones((1, 2)), np.ones((1, 2)), "at least 2"),
        (np.ones((5, 0)), np.ones((5, 2)), "no features"),
        (np.array([[1.0], [np.nan]]), np.ones((2, 1)), "NaN"),
        ("abc", np.ones((2, 1)), "numeric"),
    ],
)
def test_cka_bad_input(x, y, match):
    with pytest.raises(ValueError, match=match):
        linear_cka(x, y)
    with pytest.raises(ValueError, match="method"):
        linear_cka(np.eye(3), np.eye(3), method="kernel")


# ---------------------------------------------------------------------------------------
# default_layers / layer_features


def test_default_layers_smallcnn_and_resnet18(resnet18):
    assert default_layers(smallcnn()) == ["net.2", "net.5", "net.9", "net.11"]
    raw = ARCHS.get("smallcnn")(num_classes=10, in_shape=(1, 8, 8))
    assert default_layers(raw) == ["2", "5", "9", "11"]
    assert default_layers(resnet18) == [
        "net.maxpool",
        "net.layer1",
        "net.layer2",
        "net.layer3",
        "net.layer4",
        "net.avgpool",
    ]


def test_default_layers_nested_blocks_and_fallback():
    block = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    seq = nn.Sequential(block, nn.Conv2d(2, 2, 1), nn.Flatten(), nn.Linear(72, 3))
    assert default_layers(seq) == ["0", "2"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 2, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.head = nn.Linear(2, 3)

        def forward(self, x):
            return self.head(self.pool(self.body(x)).flatten(1))

    assert default_layers(Net()) == ["body", "pool"]
    with pytest.raises(ValueError, match="no layers"):
        default_layers(nn.Sequential(nn.Linear(2, 2)))


def test_layer_features_shapes_dtype_and_batching():
    model, x = smallcnn(), images(16)
    feats = layer_features(model, x, batch_size=5)
    assert list(feats) == default_layers(model)
    dims = {"net.2": 32 * 64, "net.5": 64 * 64, "net.9": 128 * 16, "net.11": 128}
    for name, f in feats.items():
        assert f.dtype == torch.float64 and f.device.type == "cpu"
        assert tuple(f.shape) == (16, dims[name])
    whole = layer_features(model, x.numpy(), ["net.9", "net.11"], batch_size=256)
    assert torch.allclose(whole["net.11"], feats["net.11"], atol=1e-6)
    assert torch.allclose(whole["net.9"], feats["net.9"], atol=1e-6)
    # ReLU(inplace=True) outputs are captured as the post-activation values
    assert (feats["net.2"] >= 0).all()


def test_layer_features_restores_flags_and_removes_hooks_on_error():
    model = smallcnn()
    model.train()
    model.net[1].eval()
    flags = {n: m.training for n, m in model.named_modules()}
    stats = model.net[1].running_mean.clone(), model.net[4].running_mean.clone()

    layer_features(model, images(8))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert torch.equal(model.net[1].running_mean, stats[0])  # eval mode: no BN update
    assert torch.equal(model.net[4].running_mean, stats[1])

    with pytest.raises(RuntimeError):  # wrong channel count: the conv itself fails
        layer_features(model, images(4, shape=(3, 8, 8)))
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert all(not m._forward_hooks for m in model.modules())


def test_layer_features_bad_input():
    model = smallcnn()
    x = images(4)
    with pytest.raises(ValueError, match="unknown layer"):
        layer_features(model, x, ["net.99"])
    with pytest.raises(ValueError, match="repeated"):
        layer_features(model, x, ["net.2", "net.2"])
    with pytest.raises(ValueError, match="floating-point"):
        layer_features(model, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="batch_size"):
        layer_features(model, x, batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        layer_features(model, x[:0])

    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.unused = model, nn.ReLU()

        def forward(self, x):
            return self.model(x)

    extra = Unused()
    with pytest.raises(ValueError, match="did not run"):
        layer_features(extra, x, ["unused"])
    assert all(not m._forward_hooks for m in extra.modules())


# ---------------------------------------------------------------------------------------
# layerwise_cka


def test_layerwise_cka_deepcopy_is_one_reinit_is_not():
    model, x = smallcnn(), images(16)
    same = layerwise_cka(model, copy.deepcopy(model), x)
    assert list(same) == default_layers(model)
    for v in same.values():
        assert v == pytest.approx(1.0, abs=1e-9)
    other = layerwise_cka(model, smallcnn(seed=1), x)
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in other.values())
    assert other["net.11"] < 0.95


def test_layerwise_cka_resnet18(resnet18):
    model, x = resnet18, images(4, shape=(3, 16, 16))  # 16x16 keeps it fast; layer4 is 1x1
    twin = copy.deepcopy(model)
    same = layerwise_cka(model, twin, x, batch_size=3)
    assert list(same) == default_layers(model)
    for v in same.values():
        assert v == pytest.approx(1.0, abs=1e-9)
    # re-initialize only the last stage: earlier layers stay identical, later ones move
    torch.manual_seed(1)
    for m in twin.net.layer4.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    moved = layerwise_cka(model, twin, x)
    for name in ("net.maxpool", "net.layer1", "net.layer2", "net.layer3"):
        assert moved[name] == pytest.approx(1.0, abs=1e-9)
    assert moved["net.avgpool"] < 0.999


def test_layerwise_cka_layer_mismatch():
    with pytest.raises(ValueError, match="share layers"):
        layerwise_cka(smallcnn(), nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), images(4))


# ---------------------------------------------------------------------------------------
# embeddings


def test_embeddings_equal_final_linear_input(resnet18):
    model, x = smallcnn(), images(16)
    emb = embeddings(model, x, batch_size=7)
    assert emb.shape == (16, 128) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, final_linear_input(model, x).numpy(), rtol=1e-6, atol=1e-6)

    net, xr = resnet18, images(4, shape=(3, 16, 16))
    emb = embeddings(net, xr.numpy())
    assert emb.shape == (4, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, final_linear_input(net, xr).numpy(), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------
# confusion


def test_confusion_hand_case():
    before = [0, 0, 1, 2, 2, 2]
    after = torch.tensor([0, 1, 1, 0, 0, 2])
    expected = np.array([[1, 1, 0], [0, 1, 0], [2, 0, 1]])
    m = confusion(np.array(before), after, 3)
    assert m.dtype == np.int64
    np.testing.assert_array_equal(m, expected)
    assert m.sum() == 6 and np.trace(m) == 3
    np.testing.assert_array_equal(confusion(before, before, 4), np.diag([2, 1, 3, 0]))
    np.testing.assert_array_equal(confusion([], [], 2), np.zeros((2, 2), dtype=np.int64))


@pytest.mark.parametrize(
    "before, after, c, match",
    [
        ([0, 1], [0], 2, "differ in length"),
        ([0, 3], [0, 1], 3, "outside"),
        ([0, -1], [0, 1], 3, "outside"),
        ([0.0, 1.0], [0, 1], 2, "integer"),
        (np.zeros((2, 3)), [0, 1], 3, "argmax"),
        ([0, 1], [0, 1], 0, "num_classes"),
    ],
)
def test_confusion_bad_input(before, after, c, match):
    with pytest.raises(ValueError, match=match):
        confusion(before, after, c)
