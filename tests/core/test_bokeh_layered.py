"""Layered (occlusion-aware) mode and the options of render_bokeh."""
import math

import pytest
import torch
import torch.nn.functional as F

from diffcamera.core import bokeh_layered as bl
from diffcamera.core.bokeh import render_bokeh


def _two_layers(size=64, fg_disp=0.9, bg_disp=0.1):
    """A textured background and a textured foreground square: exact disparity, no anti-aliasing."""
    g = torch.Generator().manual_seed(0)
    bg = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bilinear") * 0.5
    fg = 0.5 + 0.5 * F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(size, size), mode="bilinear")
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    img = fg * mask + bg * (1 - mask)
    disp = fg_disp * mask + bg_disp * (1 - mask)
    return img, disp, mask


def test_sharp_foreground_does_not_bleed():
    img, disp, mask = _two_layers()
    out_l = render_bokeh(img, disp, 0.9, 20.0, mode="layered")       # background blurred by 16 px
    out_c = render_bokeh(img, disp, 0.9, 20.0, mode="classical")
    fg_band = (mask > 0) & (F.avg_pool2d(mask, 9, 1, 4) < 1)  # foreground pixels within 4 px of its edge
    err_l = (out_l - img).abs()[fg_band.expand(-1, 3, -1, -1)].mean()
    err_c = (out_c - img).abs()[fg_band.expand(-1, 3, -1, -1)].mean()
    assert err_l < 0.01 < err_c, (err_l, err_c)


def test_blurred_foreground_rim_shows_background():
    # focus on the background: the foreground's blurred rim must spread OVER the sharp background
    img, disp, mask = _two_layers()
    out = render_bokeh(img, disp, 0.1, 20.0, mode="layered")
    outside_rim = (mask == 0) & (F.avg_pool2d(mask, 9, 1, 4) > 0)   # background within 4 px outside
    fg_mean = img[mask.expand(-1, 3, -1, -1) > 0].mean()
    # the foreground (brighter) spreads onto the background rim: brighter than the sharp background
    rim = outside_rim.expand(-1, 3, -1, -1)
    assert (out - img)[rim].mean() > 0.05
    assert fg_mean > img[rim].mean()


def test_beats_classical_against_thin_lens_reference():
    pytest.importorskip("diffcamera.evaluation.thin_lens")
    from diffcamera.evaluation import metrics, scenes, thin_lens
    sc = scenes.make_scene(0, 96, "layers")
    fd = float(sc.disparity.max())
    ref = thin_lens.render_thin_lens(sc, fd, 16.0)
    lay = render_bokeh(sc.image, sc.disparity, fd, 16.0, mode="layered")
    cla = render_bokeh(sc.image, sc.disparity, fd, 16.0, mode="classical")
    assert metrics.edge_band_psnr(lay, ref, sc.disparity) >= metrics.edge_band_psnr(cla, ref, sc.disparity) + 3
    assert metrics.psnr(lay, ref) >= metrics.psnr(cla, ref)


def test_layered_identity_cases():
    img, disp, _ = _two_layers(32)
    assert torch.equal(render_bokeh(img, disp, 0.5, 0.0, mode="layered"), img)
    # all in focus with a nonzero K: pixel-coverage kernels make c = 0 an exact impulse
    out = render_bokeh(img, torch.full_like(disp, 0.4), 0.4, 30.0, mode="layered")
    assert torch.equal(out, img)


def test_layered_tiles_equal_one_pass():
    img, disp, _ = _two_layers(48)
    lin = img ** 2.2
    coc = 10 * (disp - 0.5)
    a = bl.render_layered(lin, coc)
    b = bl.render_layered(lin, coc, memory_budget=48 * 48 * 4 * 4 * 14 - 1)
    assert (a - b).abs().max() < 1e-4


def test_layered_is_differentiable_wrt_image():
    img, disp, _ = _two_layers(24)
    img = img.double().requires_grad_(True)
    out = render_bokeh(img, disp.double(), 0.9, 10.0, mode="layered")
    (g,) = torch.autograd.grad(out.sum(), img)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("mode", ["classical", "layered"])
def test_aperture_shape_options(mode):
    img = torch.zeros(1, 3, 64, 64)
    img[..., 32, 32] = 1.0
    disp = torch.zeros(1, 1, 64, 64)
    disp[..., 32, 32] = 1.0  # the point is in front, everything else in focus
    kw = dict(mode=mode, gamma=1.0)
    circle = render_bokeh(img, disp, 0.0, 14.0, **kw)
    hexa = render_bokeh(img, disp, 0.0, 14.0, blades=6, **kw)
    hexa_rot = render_bokeh(img, disp, 0.0, 14.0, blades=6, rotation=math.pi / 6, **kw)
    round_blades = render_bokeh(img, disp, 0.0, 14.0, blades=6, curvature=1.0, **kw)
    assert (hexa - circle).abs().max() > 1e-3
    assert (hexa - hexa_rot).abs().max() > 1e-3
    assert (round_blades - circle).abs().max() < 1e-6


def test_signed_coc_and_focus_range():
    img = torch.rand(1, 3, 32, 32)
    disp = torch.linspace(0, 1, 32).view(1, 1, 1, 32).expand(1, 1, 32, 32).contiguous()
    _, coc = render_bokeh(img, disp, 0.5, 10.0, return_coc=True)
    assert torch.allclose(coc, 10.0 * (disp - 0.5))
    out, coc = render_bokeh(img, disp, 0.5, 10.0, mode="layered", focus_range=0.4, return_coc=True)
    band = (disp - 0.5).abs() <= 0.2
    assert (coc[band] == 0).all() and (coc[~band].abs() > 0).all()
    assert (coc.diff(dim=-1) >= 0).all()   # monotone, continuous ramp
    assert (coc.diff(dim=-1).abs() <= 10.0 / 31 + 1e-5).all()


@pytest.mark.parametrize("mode", ["classical", "layered"])
def test_highlight_boost_brightens_blurred_highlights(mode):
    img = torch.full((1, 3, 48, 48), 0.2)
    img[..., 24, 24] = 1.0
    disp = torch.ones(1, 1, 48, 48)
    plain = render_bokeh(img, disp, 0.0, 8.0, mode=mode)
    boosted = render_bokeh(img, disp, 0.0, 8.0, mode=mode, highlight_threshold=0.8, highlight_gain=8.0)
    assert boosted[..., 24, 24 + 4].mean() > plain[..., 24, 24 + 4].mean() + 0.02
    assert (boosted[..., 0:4, 0:4] - plain[..., 0:4, 0:4]).abs().max() < 1e-4  # dark areas unchanged


def test_chromatic_aberration_and_catseye_change_the_edges_only_a_little():
    img = torch.rand(1, 3, 40, 40)
    disp = torch.rand(1, 1, 40, 40)
    base = render_bokeh(img, disp, 0.5, 8.0, mode="layered")
    ca = render_bokeh(img, disp, 0.5, 8.0, mode="layered", chromatic_aberration=0.02)
    assert torch.equal(ca[:, 1], base[:, 1]) and (ca[:, 0] - base[:, 0]).abs().max() > 1e-3
    cat = render_bokeh(img, disp, 0.5, 8.0, mode="classical", catseye=0.8)
    plain = render_bokeh(img, disp, 0.5, 8.0, mode="classical")
    diff = (cat - plain).abs().mean(1)
    assert diff[:, 18:22, 18:22].mean() < diff[:, :6, :6].mean()  # centre ~unchanged, corners clipped
