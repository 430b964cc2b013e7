"""The direct scatter reference of BokehMe's classical renderer (slow; lives only in the tests).

``direct_scatter`` is a literal transcription of the formula: every source pixel ``p`` with radius
``r = |defocus_p|`` adds ``w = (0.5 + 0.5·tanh(4·(r − |p−q|)))/(r² + 0.2)`` to every target ``q`` inside
its square window ``|dy|, |dx| ≤ ⌊r⌋ + 1`` (targets outside the image are dropped), and the result is
``(Σ w·c^γ / Σ w)^(1/γ)``. Vectorised over the pixels, looped over the offsets: cost ∝ H·W·R².
Other tests and ``benchmarks/bench_bokeh.py`` load it with :func:`load_reference`.
"""
import importlib.util
import math
import os

import torch


def direct_scatter(image, radius, gamma=4.0, *, return_sums=False):
    """``image`` [B,C,H,W] in 0..1, ``radius`` [B,1,H,W] px ≥ 0 -> [B,C,H,W] (float64 inside)."""
    img = image.double().clamp(0, 1) ** gamma
    r = radius.double()
    b, c, h, w = img.shape
    big = int(math.floor(float(r.max()))) + 1
    win = torch.floor(r) + 1
    num = torch.zeros(b, c, h + 2 * big, w + 2 * big, dtype=torch.float64)
    den = torch.zeros(b, 1, h + 2 * big, w + 2 * big, dtype=torch.float64)
    norm = r * r + 0.2
    for dy in range(-big, big + 1):
        for dx in range(-big, big + 1):
            dist = math.sqrt(dy * dy + dx * dx)
            wt = (0.5 + 0.5 * torch.tanh(4 * (r - dist))) / norm
            wt = torch.where((win >= abs(dy)) & (win >= abs(dx)), wt, torch.zeros_like(wt))
            num[:, :, big + dy:big + dy + h, big + dx:big + dx + w] += wt * img
            den[:, :, big + dy:big + dy + h, big + dx:big + dx + w] += wt
    num = num[:, :, big:big + h, big:big + w]
    den = den[:, :, big:big + h, big:big + w]
    if return_sums:
        return num, den
    return (num / den) ** (1.0 / gamma)


def load_reference():
    """This module, loaded by path (tests run with ``--import-mode=importlib``)."""
    spec = importlib.util.spec_from_file_location("bokeh_reference", os.path.abspath(__file__))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_reference_single_pixel_hand_computed():
    # one bright pixel of radius 2 on black, gamma 1: the weight at distance 1 vs the centre.
    img = torch.zeros(1, 1, 9, 9)
    img[0, 0, 4, 4] = 1.0
    rad = torch.zeros(1, 1, 9, 9)
    rad[0, 0, 4, 4] = 2.0
    num, den = direct_scatter(img, rad, gamma=1.0, return_sums=True)
    w = lambda r, d: (0.5 + 0.5 * math.tanh(4 * (r - d))) / (r * r + 0.2)
    assert abs(float(num[0, 0, 4, 5]) - w(2, 1)) < 1e-12
    assert abs(float(num[0, 0, 4, 7]) - w(2, 3)) < 1e-12          # window ⌊2⌋+1 = 3 reaches here
    assert float(num[0, 0, 4, 8]) == 0.0                               # ... but not here
    # den at (4,5): its own w(0,0) + neighbours' w(0,1) + the bright pixel's w(2,1)
    expect = w(0, 0) + 2 * w(0, 1) + 2 * w(0, 1) * 0 + w(2, 1)
    got = float(den[0, 0, 4, 5])
    # neighbours of (4,5) at distance 1: (3,5), (5,5), (4,6) with r=0 and (4,4) with r=2 (counted above)
    expect = w(0, 0) + 3 * w(0, 1) + 4 * w(0, math.sqrt(2)) + w(2, 1)
    assert abs(got - expect) < 1e-9


def test_reference_zero_radius_is_nearly_identity():
    img = torch.rand(1, 3, 8, 8)
    out = direct_scatter(img, torch.zeros(1, 1, 8, 8), gamma=2.0)
    assert (out - img.double()).abs().mean() < 0.003
