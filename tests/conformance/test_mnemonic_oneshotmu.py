"""Conformance of Mnemonic code's one-shot forgetting step
(``bench.unlearning.mnemonic.one_shot_forget``)
with the reference code: github.com/tomyamkum/OneShotMU-with-MNCode at commit
b62107892948db7bde72927fa2eed40b6c43e21c (``utils.py``: ``get_fishers``,
``test_with_MNCodes``; ``main.py``: ``forget``).

The reference's step is restated below in plain torch, independently (not copied), on a tiny
model with hand-made codes; what it does, each point read in that code:

1. Fisher per group of class codes (``get_fishers``): the model in eval mode; for every class
   ``i`` its code alone (batch of one), cross-entropy with label ``i``, one backward; the
   squared gradient is added to the forget or the remain accumulator of every named
   parameter, each accumulator starting at ``1e-16``; then divided by the number of codes in
   the group.
2. Amplitude (``forget``): ``noise = log f_F - log f_R``; NaN entries -> 0; the entries that
   are +-inf -> the largest of the other entries (``max(noise[~isinf(noise)])``, taken after
   the NaN replacement); ``eta = exp(noise)``.
3. Per named parameter tensor: ``alpha = min(lambda1, lambda2 / max eta)``.
4. Two models: ``w + alpha * eta`` and ``w - alpha * eta``, every named parameter (weights,
   biases and BatchNorm affine parameters; running statistics are buffers and stay).
5. Each scored on the codes (``test_with_MNCodes``): eval mode, one code at a time, arg-max;
   forget accuracy over the forget codes, remain accuracy over the others.
6. ``w +`` if ``(1 - forget acc) + remain acc`` is strictly larger for it, else ``w -``
   (ties -> ``w -``).

The reference works in float32; the harness computes the Fisher ratio and the candidates in
float64 and casts back, so parameters agree to rounding (asserted: 1e-6 relative)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from bench.unlearning import mnemonic as mn

#: three hand-made codes (one per class) for a 4-feature input
CODES = torch.tensor(
    [
        [0.9, 0.1, 0.2, 0.7],
        [0.1, 0.8, 0.3, 0.2],
        [0.3, 0.2, 0.9, 0.5],
    ]
)


class Negate(nn.Module):
    """A parameter-free sign flip of the logits: it turns which candidate wins around."""

    def forward(self, x):
        return -x


def tiny_model(negate: bool) -> nn.Module:
    """Linear-BatchNorm-Tanh-Linear (optionally negated), fitted to classify the codes."""
    torch.manual_seed(1)
    layers = [nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Tanh(), nn.Linear(5, 3)]
    model = nn.Sequential(*layers, *([Negate()] if negate else []))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(200):
        loss = F.cross_entropy(model(CODES), torch.arange(3))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


# ---------------------------------------------------------------------------------------
# the reference's step, restated


def ref_fishers(model, codes, forget):
    acc = [{n: torch.full_like(p, 1e-16) for n, p in model.named_parameters()} for _ in "fr"]
    count = [0, 0]
    model.eval()
    for i in range(codes.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(codes[i].unsqueeze(0)).view(1, -1), torch.tensor([i])).backward()
        group = 0 if i in forget else 1
        count[group] += 1
        for n, p in model.named_parameters():
            acc[group][n] += p.grad**2
    return [{n: f / count[g] for n, f in acc[g].items()} for g in (0, 1)]


def ref_amplitude(f_forget, f_remain):
    noise = torch.log(f_forget) - torch.log(f_remain)
    noise = torch.where(noise != noise, torch.zeros_like(noise), noise)
    inf = torch.isinf(noise)
    noise = torch.where(inf, noise[~inf].max(), noise)
    return torch.exp(noise)


def ref_scores(model, codes, forget):
    model.eval()
    hit_f = hit_r = 0
    with torch.no_grad():
        for i in range(codes.shape[0]):
            right = int(model(codes[i].unsqueeze(0)).view(1, -1).argmax(1)) == i
            if i in forget:
                hit_f += right
            else:
                hit_r += right
    n_f = len(forget)
    return (1 - hit_f / n_f) + hit_r / (codes.shape[0] - n_f)


def ref_one_shot(model, codes, forget, lambda1, lambda2):
    """(chosen model, +1 or -1) as the reference's ``forget`` returns it."""
    f_f, f_r = ref_fishers(model, codes, forget)
    candidates = {}
    for sign in (1, -1):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in m.named_parameters():
                eta = ref_amplitude(f_f[n], f_r[n])
                alpha = min(lambda1, lambda2 / torch.max(eta))
                p += sign * alpha * eta
        candidates[sign] = m
    plus, minus = (ref_scores(candidates[s], codes, forget) for s in (1, -1))
    return (candidates[1], 1) if plus > minus else (candidates[-1], -1)


# ---------------------------------------------------------------------------------------


def _assert_close(ours: torch.Tensor, ref: torch.Tensor):
    """Within 1e-6 of the tensor's largest magnitude."""
    scale = ref.abs().max().clamp_min(1e-30)
    assert float((ours.double() - ref.double()).abs().max() / scale) <= 1e-6


@pytest.mark.parametrize(
    "negate, lambda1, lambda2, sign",
    [
        (False, 1.0, 1.0, -1),  # w - wins on the plain model
        (True, 0.3, 1.0, 1),  # the negated head makes w + the right one
        (True, 1e-6, 1.0, -1),  # both candidates score the same: a tie -> w -
    ],
)
def test_one_shot_step_matches_the_reference(negate, lambda1, lambda2, sign):
    model = tiny_model(negate)
    ref_model, ref_sign = ref_one_shot(copy.deepcopy(model), CODES, [0], lambda1, lambda2)
    assert ref_sign == sign  # the case exercises the branch it is named for
    ours = copy.deepcopy(model)
    info = mn.one_shot_forget(ours, CODES, [0], lambda1, lambda2)
    assert info["sign"] == ref_sign
    if negate and sign == -1:  # a tie: equal scores
        assert info["code_score_plus"] == info["code_score_minus"]
    got, want = dict(ours.named_parameters()), dict(ref_model.named_parameters())
    assert got.keys() == want.keys() and len(got) == 6  # BN affine parameters included
    for n in got:
        _assert_close(got[n].detach(), want[n].detach())
        assert not torch.equal(got[n], dict(model.named_parameters())[n])  # every tensor moved
    for (n, b), b0 in zip(ours.named_buffers(), model.buffers()):
        assert torch.equal(b, b0), f"buffer {n} changed"  # running statistics stay


def test_fishers_and_amplitude_match_the_reference():
    model = tiny_model(negate=False)
    ref_f, ref_r = ref_fishers(copy.deepcopy(model), CODES, [0])
    f_f, f_r = mn.code_fishers(copy.deepcopy(model), CODES, [0])
    for n in ref_f:
        _assert_close(f_f[n], ref_f[n])
        _assert_close(f_r[n], ref_r[n])
        _assert_close(mn.amplitude(f_f[n], f_r[n]), ref_amplitude(ref_f[n], ref_r[n]))
        eta = ref_amplitude(ref_f[n], ref_r[n])
        for lambda1, lambda2 in ((1e-3, 1e3), (1e3, 1e-3)):  # either side of the min binds
            alpha = min(lambda1, lambda2 / torch.max(eta))
            delta = mn.perturbation({n: f_f[n]}, {n: f_r[n]}, lambda1, lambda2)[n]
            _assert_close(delta, alpha * eta)


def test_amplitude_special_values_as_the_reference():
    """NaN -> 0 and both +inf and -inf -> the largest other entry (here 0, from the NaN)."""
    f_forget = torch.tensor([0.0, 1.0, float("inf"), 2.0, 3.0])
    f_remain = torch.tensor([1.0, 0.0, float("inf"), 4.0, 1.0])
    # log ratios: -inf, +inf, NaN, log 0.5, log 3
    want = ref_amplitude(f_forget, f_remain)
    torch.testing.assert_close(want, torch.tensor([3.0, 3.0, 1.0, 0.5, 3.0]))
    torch.testing.assert_close(mn.amplitude(f_forget, f_remain).float(), want)
    # all entries NaN: the maximum is taken over the zeros the NaNs became
    nan = torch.tensor([float("inf")] * 2)
    torch.testing.assert_close(mn.amplitude(nan, nan).float(), ref_amplitude(nan, nan))
