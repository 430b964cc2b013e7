"""Gradients of both render modes w.r.t. the image: gradcheck (float64) on small cases that reach every
band kind and the tiled path, and a finite-difference check at a size where the reduced-resolution bands
come in (issue 15: classical backward used to fail there)."""
import pytest
import torch
import torch.nn.functional as F

from diffcamera.core import bokeh_classical as bc
from diffcamera.core import bokeh_layered as bl
from diffcamera.core.aperture import Aperture
from diffcamera.core.bokeh import render_bokeh


def _radius_map(size, values, seed=0):
    """``[1,1,size,size]`` radius map made of square blocks of the given radii (shuffled)."""
    g = torch.Generator().manual_seed(seed)
    n = 4
    cells = torch.tensor(values, dtype=torch.float64)[torch.randint(len(values), (n * n,), generator=g)]
    return F.interpolate(cells.view(1, 1, n, n), size=(size, size), mode="nearest")


def _image(size, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (0.1 + 0.8 * torch.rand(1, 3, size, size, generator=g, dtype=torch.float64)).requires_grad_(True)


# every band kind of the classical engine: dense full resolution (most pixels r <= 6), sparse full
# resolution (a few pixels in (6, 12]), pooled (12, 24] at level 2, (24, 48] at level 4, (48, 96] at 8
CLASSICAL_RADII = {
    "dense": [0.0, 2.0, 3.5, 5.0],
    "sparse+pooled": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 18.0, 30.0, 55.0],
}


def _band_kinds(radius):
    """Which kinds of band :func:`bc.scatter` uses for this radius map (so the test says what it covers)."""
    kinds = set()
    r = radius[0, 0]
    for i, band in enumerate(bc.band_layout(float(r.max()))):
        inside = (r <= band.hi) & ((r >= band.lo) if i == 0 else (r > band.lo))
        count = int(inside.sum())
        if count:
            kinds.add("pooled" if band.level > 1 else
                      ("dense" if count > bc.DENSE_FRACTION * r.numel() else "sparse"))
    return kinds


@pytest.mark.parametrize("case", sorted(CLASSICAL_RADII))
@pytest.mark.parametrize("tiled", [False, True])
def test_classical_gradcheck(case, tiled):
    size = 20
    radius = _radius_map(size, CLASSICAL_RADII[case])
    expect = {"dense"} if case == "dense" else {"dense", "sparse", "pooled"}
    assert _band_kinds(radius) == expect
    budget = bc._estimate_bytes(3, 12, 12, 8) if tiled else bc.DEFAULT_MEMORY_BUDGET
    calls = []
    fn = lambda x: bc.render_classical(x, radius, 2.2, memory_budget=budget,
                                       callback=lambda *a: calls.append(a))
    assert torch.autograd.gradcheck(fn, (_image(size),), fast_mode=True, atol=1e-6, rtol=1e-4)
    if tiled:  # the tiled path really ran (one callback per tile)
        assert calls and calls[-1][1] >= 4


@pytest.mark.parametrize("blades", [0, 5])
@pytest.mark.parametrize("tiled", [False, True])
def test_layered_gradcheck(blades, tiled):
    # signed CoC from -30 to +30 px: flipped far layers, shifted-sum layers (|c| <= 1), FFT layers at
    # full and reduced resolution, background extension behind nearer layers
    size = 24
    coc = _radius_map(size, [-30.0, -12.0, -4.0, -0.7, 0.0, 0.4, 1.0, 3.0, 9.0, 30.0], seed=3)
    coc = coc + 0.3 * torch.linspace(-1, 1, size, dtype=torch.float64).view(1, 1, 1, size)
    ap = Aperture(blades=blades, rotation=0.3)
    budget = (size * size * 4 * 4 * 14) // 3 if tiled else bl.DEFAULT_MEMORY_BUDGET
    fn = lambda x: bl.render_layered(x, coc, aperture=ap, memory_budget=budget)
    assert torch.autograd.gradcheck(fn, (_image(size),), fast_mode=True, atol=1e-6, rtol=1e-4)


def _directional_check(mode, size, K, memory_budget=None, gamma=2.0):
    g = torch.Generator().manual_seed(size)
    x = (0.1 + 0.8 * torch.rand(1, 3, size, size, generator=g, dtype=torch.float64)).requires_grad_(True)
    d = F.interpolate(torch.rand(1, 1, 8, 8, generator=g, dtype=torch.float64), size=(size, size),
                      mode="bilinear", align_corners=False)
    w = torch.rand(1, 3, size, size, generator=g, dtype=torch.float64)
    kw = dict(mode=mode, memory_budget=memory_budget, gamma=gamma)
    loss = lambda img: (render_bokeh(img, d, 0.5, K, **kw) * w).sum()
    loss(x).backward()
    v = torch.randn(1, 3, size, size, generator=g, dtype=torch.float64) * 0.01
    eps = 1e-3
    with torch.no_grad():
        fd = (loss(x + eps * v) - loss(x - eps * v)) / (2 * eps)
    an = (x.grad * v).sum()
    assert torch.isfinite(x.grad).all()
    assert abs(float(an - fd)) <= 1e-6 * max(1.0, abs(float(fd))), (float(an), float(fd))


def test_classical_backward_at_512_matches_finite_differences():
    _directional_check("classical", 512, 32.0)   # radii up to 16 px: reduced-resolution bands


def test_classical_backward_in_tiles_matches_finite_differences():
    budget = bc._estimate_bytes(3, 160, 160, 80)
    _directional_check("classical", 256, 64.0, memory_budget=budget)   # radii up to 32 px, tiles


def test_layered_backward_matches_finite_differences():
    _directional_check("layered", 256, 64.0)
