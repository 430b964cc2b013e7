"""LayeredOperator: the layered render as an explicit linear operator with its exact adjoint."""
import math

import pytest
import torch
import torch.nn.functional as F

from diffcamera.core import bokeh_layered as bl
from diffcamera.core.aperture import Aperture
from diffcamera.core.bokeh_layered import LayeredOperator, render_layered


def _coc(size, lo, hi, seed=0, batch=1, dtype=torch.float64):
    """Smooth signed CoC map in ``[lo, hi]`` px with a sharp-edged block (depth edge)."""
    g = torch.Generator().manual_seed(seed)
    d = F.interpolate(torch.rand(batch, 1, 5, 5, generator=g, dtype=dtype), size=(size, size), mode="bilinear",
                      align_corners=False)
    d = (d - d.amin((2, 3), keepdim=True)) / (d.amax((2, 3), keepdim=True) - d.amin((2, 3), keepdim=True))
    d[..., size // 3:size // 2, size // 4:size // 2] = 1.0
    return lo + (hi - lo) * d


def _dot_test(op, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(op.shape, generator=g, dtype=torch.float64)
    y = torch.randn(op.shape, generator=g, dtype=torch.float64)
    lhs = float((op(x) * y).sum())
    rhs = float((x * op.adjoint(y)).sum())
    return lhs, rhs


@pytest.mark.parametrize("size,lo,hi,blades", [
    (24, -0.8, 0.9, 0),      # shifted-sum layers only (|c| <= 1)
    (40, -6.0, 7.0, 0),      # full-resolution FFT layers, both signs
    (48, -30.0, 20.0, 5),    # reduced-resolution layers, flipped far polygon, extension
    (37, 0.0, 45.0, 6),      # odd size, front only, level 8
])
def test_adjoint_passes_the_dot_product_test(size, lo, hi, blades):
    op = LayeredOperator(_coc(size, lo, hi, seed=size), aperture=Aperture(blades=blades, rotation=0.4))
    lhs, rhs = _dot_test(op)
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (lhs, rhs)


def test_adjoint_dot_product_without_extension_and_with_catseye():
    coc = _coc(32, -12.0, 12.0, seed=3)
    for kw in (dict(extend_background=False), dict(catseye=0.7)):
        lhs, rhs = _dot_test(LayeredOperator(coc, **kw))
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs)), (kw, lhs, rhs)


def test_float32_dot_product_to_float_precision():
    coc = _coc(64, -20.0, 20.0, seed=5, dtype=torch.float32)
    op = LayeredOperator(coc)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(op.shape, generator=g), torch.randn(op.shape, generator=g)
    lhs, rhs = float((op(x).double() * y.double()).sum()), float((x.double() * op.adjoint(y).double()).sum())
    assert abs(lhs - rhs) <= 1e-5 * (op(x).norm() * y.norm()).item()


def test_operator_equals_render_layered_and_is_linear():
    coc = _coc(48, -25.0, 25.0, seed=7, dtype=torch.float32)
    x = torch.rand(1, 3, 48, 48)
    op = LayeredOperator(coc)
    # render_layered streams (colour and coverage blurred together): the same maths, float rounding apart
    assert (op(x).clamp_min(0) - render_layered(x, coc)).abs().max() < 1e-5
    assert (LayeredOperator(coc, precompute=False)(x) - op(x)).abs().max() < 1e-5
    # linear (any sign): A(2x − 3z) = 2Ax − 3Az
    z = torch.randn(1, 3, 48, 48)
    assert (op(2 * x - 3 * z) - (2 * op(x) - 3 * op(z))).abs().max() < 1e-5
    # and not trivial: blurred
    assert (op(x) - x).abs().mean() > 0.05


@pytest.mark.parametrize("tiled", [False, True])
def test_state_kept_by_the_first_render_equals_the_precomputed_one(tiled, monkeypatch):
    """``precompute="first"``: the streamed first render keeps its state; later applications and the adjoint
    equal those of the precomputed operator (untiled and in tiles)."""
    size = 96
    coc = _coc(size, -12.0, 12.0, seed=3)
    coc = torch.cat([coc, coc.flip(-1)])
    if tiled:   # tile regions of at most 64² px, room for the state (as in the test above)
        monkeypatch.setattr(bl, "STREAM_BYTES_PER_PX", (1 << 29) // (64 * 64))
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, size, size, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, size, size, generator=g, dtype=torch.float64)
    ref = LayeredOperator(coc, memory_budget=1 << 31)
    lazy = LayeredOperator(coc, memory_budget=1 << 31, precompute="first")
    assert (len(lazy.tiles[0]) > 1) == tiled and ref.precomputed and not lazy.precomputed
    assert (lazy(x) - ref(x)).abs().max() < 1e-10
    assert lazy.precomputed
    assert (lazy.adjoint(y) - ref.adjoint(y)).abs().max() < 1e-10
    assert (lazy(y) - ref(y)).abs().max() < 1e-10


def test_batch_with_a_different_coc_per_image_equals_singles():
    coc = torch.cat([_coc(40, -15.0, 15.0, seed=1), _coc(40, 0.0, 3.0, seed=2)])
    x = torch.rand(2, 3, 40, 40, dtype=torch.float64)
    y = torch.randn(2, 3, 40, 40, dtype=torch.float64)
    op = LayeredOperator(coc)
    fx, ay = op(x), op.adjoint(y)
    for i in range(2):
        single = LayeredOperator(coc[i:i + 1])
        assert (fx[i:i + 1] - single(x[i:i + 1])).abs().max() < 1e-12
        assert (ay[i:i + 1] - single.adjoint(y[i:i + 1])).abs().max() < 1e-12
    lhs, rhs = float((fx * y).sum()), float((x * ay).sum())
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


@pytest.mark.parametrize("precompute", [True, False])
def test_tiled_equals_untiled_forward_and_adjoint(precompute, monkeypatch):
    size = 96
    coc = _coc(size, -3.0, 4.0, seed=11)   # halo 2·4 + 8 = 16 px
    whole = LayeredOperator(coc)
    # tiles whose region (tile + halo) is at most 64² px, and room for the state of all of them
    # (float64: twice the float32 bytes, so 64² px regions take half of the 2 GiB budget)
    monkeypatch.setattr(bl, "STREAM_BYTES_PER_PX", (1 << 29) // (64 * 64))
    tiled = LayeredOperator(coc, memory_budget=1 << 31, precompute=precompute)
    assert whole.precomputed and len(whole.tiles[0]) == 1
    assert tiled.precomputed == precompute and len(tiled.tiles[0]) == 9
    g = torch.Generator().manual_seed(0)
    x = torch.randn(whole.shape, generator=g, dtype=torch.float64)
    y = torch.randn(whole.shape, generator=g, dtype=torch.float64)
    assert (whole(x) - tiled(x)).abs().max() < 1e-12
    assert (whole.adjoint(y) - tiled.adjoint(y)).abs().max() < 1e-12
    lhs, rhs = _dot_test(tiled)
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_callback_reports_progress_and_can_interrupt():
    coc = _coc(40, -12.0, 12.0, seed=4)
    seen = []
    op = LayeredOperator(coc, callback=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1]
    calls = []
    op(torch.rand(op.shape, dtype=torch.float64), callback=lambda d, t: calls.append((d, t)))
    assert len(calls) == calls[-1][1] == len(op.plans[0].layers)

    class Stop(Exception):
        pass

    def cancel(done, total):
        if done == 2:
            raise Stop
    with pytest.raises(Stop):
        op.adjoint(torch.rand(op.shape, dtype=torch.float64), callback=cancel)


def test_render_layered_gradient_is_the_adjoint():
    coc = _coc(32, -9.0, 18.0, seed=9)
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    w = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    (render_layered(x, coc) * w).sum().backward()
    op = LayeredOperator(coc)
    mask = (op(x.detach()) > 0).to(w.dtype)   # the final clamp at 0
    assert (x.grad - op.adjoint(w * mask)).abs().max() < 1e-12


def test_gradient_wrt_coc_by_autograd():
    coc = _coc(24, -6.0, 10.0, seed=2).requires_grad_(True)
    x = torch.rand(1, 3, 24, 24, dtype=torch.float64)
    (g,) = torch.autograd.grad(render_layered(x, coc).sum(), coc)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_bad_shapes_are_refused_with_the_input_named():
    with pytest.raises(ValueError, match="coc"):
        LayeredOperator(torch.zeros(1, 3, 8, 8))
    op = LayeredOperator(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="x must be"):
        op(torch.zeros(1, 3, 8, 9))
    with pytest.raises(ValueError, match="y must be"):
        op.adjoint(torch.zeros(2, 3, 8, 8))
