"""Representation diagnostics for unlearning, written for this project.

These are the analyses of Cha et al. (AAAI 2024, "Learning to Unlearn: Instance-wise Unlearning
for Pre-trained Classifiers", L2UL), Figs. 2-4:

* Fig. 2, where the forgotten examples go: :func:`confusion`, the confusion matrix of the
  original model's predictions (rows) against the unlearned model's predictions (columns) on
  the forget set ``D_f``.
* Fig. 3, which layers unlearning changes: :func:`layerwise_cka`, linear CKA between the
  original and the unlearned model's features at each layer of :func:`default_layers`, on
  ``D_f`` and on ``D_r``.
* Fig. 4, how the feature space looks: :func:`embeddings`, the penultimate (pre-classifier)
  feature of every example, ready for a t-SNE (e.g. ``sklearn.manifold.TSNE``) downstream.

Linear CKA is Kornblith et al. (ICML 2019, "Similarity of Neural Network Representations
Revisited"), Eq. (5) / Sec. 3: for column-centered ``X`` (n, d1) and ``Y`` (n, d2),

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

equal to the HSIC-based CKA with linear kernels. It is in [0, 1], equals 1 for ``Y = X``, is
invariant to orthogonal transforms and isotropic scaling of either argument (not to arbitrary
invertible linear maps), and is symmetric. :func:`linear_cka` computes it in float64.

Features come from forward hooks (:func:`layer_features`) with the model in eval mode and no
gradients; every module's train/eval flag is restored and every hook removed afterwards, also
when the forward pass raises. Models take images in [0, 1] (the bench archs carry their own
``Normalize``), so the inputs are passed through unchanged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = [
    "confusion",
    "default_layers",
    "embeddings",
    "layer_features",
    "layerwise_cka",
    "linear_cka",
]

# a centered feature matrix whose Frobenius norm is below this fraction of the uncentered
# one has (numerically) zero variance: it is constant across examples up to rounding
_ZERO_VAR_RTOL = 1e-10

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
)


# ---------------------------------------------------------------------------------------
# linear CKA


def _as_matrix(a, what: str) -> np.ndarray:
    if torch.is_tensor(a):
        a = a.detach().to("cpu", torch.float64).numpy()
    try:
        m = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a numeric array, got {type(a).__name__}") from exc
    if m.ndim != 2:
        raise ValueError(
            f"{what} must be a 2-D feature matrix (n_examples, n_features), got shape "
            f"{m.shape}; flatten per-example features first, e.g. x.reshape(len(x), -1)"
        )
    if m.shape[1] == 0:
        raise ValueError(f"{what} has no features (shape {m.shape})")
    if not np.isfinite(m).all():
        raise ValueError(f"{what} contains NaN or infinite values")
    return m


def _center_unit(m: np.ndarray) -> np.ndarray | None:
    """Column-center ``m`` and scale it to unit Frobenius norm (CKA is invariant to isotropic
    scaling, and this keeps the products below far from overflow); ``None`` when ``m`` has
    (numerically) zero variance."""
    scale = np.linalg.norm(m)
    c = m - m.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(c)
    if norm == 0.0 or norm <= _ZERO_VAR_RTOL * scale:
        return None
    return c / norm


def linear_cka(x, y, *, method: str = "auto") -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019) of two feature matrices.

    ``x`` is (n, d1) and ``y`` is (n, d2), numpy arrays or torch tensors, row ``i`` of both
    describing the same example. With ``X``, ``Y`` the column-centered matrices
    (``X = x - 1 mean(x, axis=0)``),

        CKA = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)
            = <X X^T, Y Y^T>_F / (||X X^T||_F * ||Y Y^T||_F),

    the second (dual, n x n Gram) form being the same number. ``method="primal"`` uses the
    feature-space form (cost ~ n (d1 + d2)^2), ``"dual"`` the Gram form (cost ~ n^2 (d1 + d2));
    ``"auto"`` picks the dual form when ``n < d1 + d2``. Everything is computed in float64.

    Returns a float in [0, 1] (up to rounding). If either matrix has zero variance (every
    feature constant over the n examples, up to a relative 1e-10, e.g. a dead ReLU layer),
    CKA is 0/0 and ``nan`` is returned. Raises ``ValueError`` for non-2-D inputs, different
    numbers of rows, fewer than 2 rows, no features, or non-finite values.

    Note that with few examples CKA is biased upwards (with n = 2 any two non-constant
    representations give 1); use n well above a handful.
    """
    if method not in ("auto", "primal", "dual"):
        raise ValueError(f"method must be 'auto', 'primal' or 'dual', got {method!r}")
    xm = _as_matrix(x, "x")
    ym = _as_matrix(y, "y")
    n = xm.shape[0]
    if ym.shape[0] != n:
        raise ValueError(f"x and y must have the same number of rows, got {n} and {ym.shape[0]}")
    if n < 2:
        raise ValueError(f"linear CKA needs at least 2 examples, got {n}")
    xc = _center_unit(xm)
    yc = _center_unit(ym)
    if xc is None or yc is None:
        return float("nan")
    if method == "dual" or (method == "auto" and n < xm.shape[1] + ym.shape[1]):
        kx = xc @ xc.T
        ky = yc @ yc.T
        num = float(np.vdot(kx, ky))
        den = float(np.linalg.norm(kx) * np.linalg.norm(ky))
    else:
        num = float(np.linalg.norm(yc.T @ xc) ** 2)
        den = float(np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    return num / den


# ---------------------------------------------------------------------------------------
# which modules are "layers"


def _is_normalize(m: nn.Module) -> bool:
    from bench.models.archs import Normalize

    return isinstance(m, Normalize)


def _is_resnet_like(m: nn.Module) -> bool:
    """torchvision-style ResNet: ``layer1..layer4`` and a linear ``fc`` as attributes."""
    return all(isinstance(getattr(m, f"layer{i}", None), nn.Module) for i in range(1, 5)) and (
        isinstance(getattr(m, "fc", None), nn.Linear)
    )


def _is_activation_block(m: nn.Module) -> bool:
    """An activation module, or a container whose last leaf module is one."""
    if isinstance(m, _ACTIVATIONS):
        return True
    leaves = [s for s in m.modules() if not any(True for _ in s.children())]
    return len(leaves) > 0 and leaves[-1] is not m and isinstance(leaves[-1], _ACTIVATIONS)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def default_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the modules whose outputs are the "layers"
    of layer-wise CKA, in forward order. The last name is always the pre-classifier feature
    (the input of the final linear layer), used by :func:`embeddings`.

    The rule, applied to the first matching case:

    1. torchvision-style ResNet anywhere in the model (the shallowest module with attributes
       ``layer1`` .. ``layer4`` and an ``nn.Linear`` ``fc``; prefix ``p``): the stem output
       ``p.maxpool`` (conv1-bn1-relu-maxpool; an ``Identity`` where the max-pool is dropped,
       ``p.relu`` if there is no ``maxpool``), then ``p.layer1`` .. ``p.layer4``, then the
       pooled feature ``p.avgpool`` (or ``p.global_pool``), whose flattened output is the input
       of ``p.fc``. E.g. ``build_model("resnet18_cifar", ...)`` gives ``net.maxpool``,
       ``net.layer1`` .. ``net.layer4``, ``net.avgpool``.
    2. Otherwise the backbone is found by unwrapping: while the module is not an
       ``nn.Sequential`` and has exactly one direct child other than a bench ``Normalize``,
       descend into that child (so ``Classifier(norm, net)`` gives ``net``). If the backbone is
       an ``nn.Sequential``, its classifier is its last ``nn.Linear`` child (its last child if
       it has none); the layers are every earlier child that is an activation block (an
       activation module such as ``nn.ReLU``, or a container whose last leaf module is one),
       followed by the child just before the classifier (the flattened pre-classifier
       feature), without repeats. E.g. ``build_model("smallcnn", ...)`` gives ``net.2``,
       ``net.5``, ``net.9`` (the three ReLUs) and ``net.11`` (the ``Flatten``).
    3. Fallback: every direct child of the backbone except bench ``Normalize`` modules and
       the last ``nn.Linear`` child (the classifier).

    Raises ``ValueError`` if the rule finds no layer.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for prefix, m in model.named_modules():
        if _is_resnet_like(m):
            names = []
            if isinstance(getattr(m, "maxpool", None), nn.Module):
                names.append(_join(prefix, "maxpool"))
            elif isinstance(getattr(m, "relu", None), nn.Module):
                names.append(_join(prefix, "relu"))
            names += [_join(prefix, f"layer{i}") for i in range(1, 5)]
            for pool in ("avgpool", "global_pool"):
                if isinstance(getattr(m, pool, None), nn.Module):
                    names.append(_join(prefix, pool))
                    break
            return names

    prefix, net = "", model
    while not isinstance(net, nn.Sequential):
        kids = [(n, c) for n, c in net.named_children() if not _is_normalize(c)]
        if len(kids) != 1:
            break
        prefix, net = _join(prefix, kids[0][0]), kids[0][1]

    kids = [(n, c) for n, c in net.named_children() if not _is_normalize(c)]
    linear_idx = [i for i, (_, c) in enumerate(kids) if isinstance(c, nn.Linear)]
    if isinstance(net, nn.Sequential):
        head = linear_idx[-1] if linear_idx else len(kids) - 1
        names = [n for n, c in kids[:head] if _is_activation_block(c)]
        if head >= 1 and kids[head - 1][0] not in names:
            names.append(kids[head - 1][0])
    else:
        skip = linear_idx[-1] if linear_idx else -1
        names = [n for i, (n, _) in enumerate(kids) if i != skip]
    if not names:
        raise ValueError(
            f"default_layers found no layers in {type(model).__name__}; pass layer names "
            f"explicitly (see model.named_modules())"
        )
    return [_join(prefix, n) for n in names]


# ---------------------------------------------------------------------------------------
# features


def _as_images(x, dtype: torch.dtype) -> torch.Tensor:
    t = x if torch.is_tensor(x) else torch.as_tensor(np.asarray(x))
    if not t.is_floating_point():
        raise ValueError(
            f"x must be floating-point images in [0, 1], got dtype {t.dtype}; convert integer "
            f"pixels with x / 255"
        )
    if t.ndim < 2:
        raise ValueError(f"x must be a batch of inputs (n, ...), got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("x is empty (0 examples)")
    return t.detach().to(dtype)


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    return int(batch_size)


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    device, dtype = torch.device("cpu"), torch.float32
    for t in list(model.parameters()) + list(model.buffers()):
        device = t.device
        if t.is_floating_point():
            return device, t.dtype
    return device, dtype


def layer_features(model: nn.Module, x, layers=None, batch_size: int = 256):
    """Outputs of the named modules of ``model`` on inputs ``x``.

    ``x`` (n, ...) is a numpy array or torch tensor of floating-point images in [0, 1] (the
    model normalizes them itself); ``layers`` is a list of names from ``model.named_modules()``
    (default :func:`default_layers`). The model runs in eval mode under ``torch.no_grad()`` in
    batches of ``batch_size``, on the device and in the dtype of its parameters. Every
    module's train/eval flag is restored afterwards and every hook removed, also on error.

    Returns ``{name: tensor}`` in the order of ``layers``, each the module's output reshaped to
    (n, -1) (row-major flattening of the per-example output), float64 on the CPU. If a module
    runs more than once per forward pass, its last output is kept. Raises ``ValueError`` for
    unknown, repeated or empty layer names, a module that does not run or does not return a
    tensor, non-float or empty inputs, or a bad ``batch_size``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    bs = _check_batch_size(batch_size)
    if layers is None:
        layers = default_layers(model)
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValueError("layers is empty")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers contains repeated names: {layers}")
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        known = ", ".join(repr(n) for n in list(modules)[:30])
        raise ValueError(f"unknown layer name(s) {unknown}; the model's modules are: {known}")
    device, dtype = _model_device_dtype(model)
    xt = _as_images(x, dtype)

    current: dict[str, torch.Tensor] = {}
    bad: list[str] = []

    def make_hook(name: str):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                bad.append(f"{name!r} returned {type(output).__name__}")
                return
            # copy now: a later in-place op (e.g. ReLU(inplace=True)) may overwrite it
            current[name] = (
                output.detach().reshape(output.shape[0], -1).to("cpu", torch.float64, copy=True)
            )

        return hook

    flags = {m: m.training for m in model.modules()}
    handles = []
    chunks: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    try:
        for n in layers:
            handles.append(modules[n].register_forward_hook(make_hook(n)))
        model.eval()
        with torch.no_grad():
            for start in range(0, xt.shape[0], bs):
                current.clear()
                model(xt[start : start + bs].to(device))
                if bad:
                    raise ValueError(
                        f"layer {bad[0]}, not a tensor; pick a module that returns one"
                    )
                missing = [n for n in layers if n not in current]
                if missing:
                    raise ValueError(f"layer(s) {missing} did not run in the forward pass")
                for n in layers:
                    chunks[n].append(current[n])
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
        current.clear()
    return {n: torch.cat(chunks.pop(n), dim=0) for n in layers}


def layerwise_cka(model_a: nn.Module, model_b: nn.Module, x, layers=None, batch_size: int = 256):
    """Linear CKA (:func:`linear_cka`) between ``model_a``'s and ``model_b``'s features at each
    layer, on the same inputs ``x``: ``{name: CKA(features_a[name], features_b[name])}``.

    The two models must share the layer names (same architecture, e.g. the original and the
    unlearned model); ``layers`` defaults to :func:`default_layers` of ``model_a``. Features
    come from :func:`layer_features` (eval mode, no grad, float64); a layer whose features are
    constant over ``x`` in either model gives ``nan``. L2UL (Fig. 3) reports this on ``D_f``
    and ``D_r``: 1 means unchanged up to rotation and scale.

    Memory: both models' flattened features of all layers are held at once,
    ``8 * n * sum_l d_l`` bytes per model (about 190 kB per example for ``resnet18_cifar`` on
    32x32 inputs), so subsample large sets.
    """
    if layers is None:
        layers = default_layers(model_a)
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    names_b = dict(model_b.named_modules()) if isinstance(model_b, nn.Module) else None
    if names_b is None:
        raise ValueError(f"model_b must be a torch.nn.Module, got {type(model_b).__name__}")
    missing = [n for n in layers if n not in names_b]
    if missing:
        raise ValueError(f"model_b has no module(s) {missing}: the models must share layers")
    fa = layer_features(model_a, x, layers, batch_size)
    fb = layer_features(model_b, x, layers, batch_size)
    out = {}
    for n in layers:
        a, b = fa.pop(n), fb.pop(n)
        out[n] = linear_cka(a, b)
    return out


def embeddings(model: nn.Module, x, batch_size: int = 256) -> np.ndarray:
    """Penultimate (pre-classifier) features, (n, d) float32 numpy: the output of the last
    module of :func:`default_layers`, flattened, i.e. the input of the final linear layer for
    the bench archs (512-d for ``resnet18_cifar``, 128-d for ``smallcnn``). For the t-SNE
    plots of L2UL (Fig. 4), e.g. ``sklearn.manifold.TSNE(2).fit_transform(embeddings(...))``."""
    name = default_layers(model)[-1]
    return layer_features(model, x, [name], batch_size)[name].numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------
# confusion matrix


def _as_labels(a, what: str) -> np.ndarray:
    if torch.is_tensor(a):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(
            f"{what} must be a 1-D array of predicted class indices, got shape {arr.shape}"
            + ("; pass logits.argmax(1)" if arr.ndim == 2 else "")
        )
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{what} must hold integer class indices, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def confusion(pred_before, pred_after, num_classes: int) -> np.ndarray:
    """Confusion matrix of two predictions of the same examples, (C, C) int64 counts:
    ``M[i, j] = #{k : pred_before[k] == i and pred_after[k] == j}``; rows are the original
    model's predictions, columns the unlearned model's (L2UL Fig. 2, on ``D_f``). ``M.sum()``
    is the number of examples and the diagonal counts unchanged predictions.

    Inputs are 1-D integer arrays/tensors of equal length with values in [0, num_classes).
    Raises ``ValueError`` otherwise.
    """
    if (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    c = int(num_classes)
    b = _as_labels(pred_before, "pred_before")
    a = _as_labels(pred_after, "pred_after")
    if b.shape != a.shape:
        raise ValueError(f"pred_before and pred_after differ in length: {b.size} vs {a.size}")
    for arr, what in ((b, "pred_before"), (a, "pred_after")):
        if arr.size and (arr.min() < 0 or arr.max() >= c):
            raise ValueError(
                f"{what} has class indices outside [0, {c}): min {arr.min()}, max {arr.max()}"
            )
    return np.bincount(b * c + a, minlength=c * c).reshape(c, c).astype(np.int64)
