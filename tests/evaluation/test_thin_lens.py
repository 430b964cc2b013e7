import math

import pytest
import torch

from diffcamera.core import conventions as cv
from diffcamera.evaluation import scenes
from diffcamera.evaluation.scenes import Layer, depth_for_disparity, scene_from_layers
from diffcamera.evaluation.thin_lens import aperture_cells, render_thin_lens

N = 64


def _flat(rgb, d, alpha=None, n=N):
    col = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, n, n).clone()
    a = torch.ones(1, n, n) if alpha is None else alpha
    return Layer(col, a, torch.full((1, n, n), float(depth_for_disparity(d))))


def _disc(r, n=N, cx=None, cy=None):
    cx = n / 2 if cx is None else cx
    cy = n / 2 if cy is None else cy
    y, x = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    dist = torch.sqrt((x - cx) ** 2 + (y - cy) ** 2)
    return torch.clamp(r - dist + 0.5, 0, 1)[None], dist


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_K0_returns_the_all_in_focus_image_exactly(kind):
    s = scenes.make_scene(0, 48, kind)
    assert torch.equal(render_thin_lens(s, 0.4, 0.0), s.image)
    # and the general path converges to it
    assert (render_thin_lens(s, 0.4, 1e-4) - s.image).abs().max() < 0.5 / 255


@pytest.mark.parametrize("kind,K,df", [("layers", 10.0, 0.9), ("mixed", 12.0, 0.1), ("slanted", 8.0, 0.5)])
def test_default_sampling_noise_is_below_half_a_level(kind, K, df):
    s = scenes.make_scene(1, 96, kind)
    out = render_thin_lens(s, df, K)
    dense = render_thin_lens(s, df, K, samples=1300)  # ~40 cells across: 4x denser than the default here
    err = (out - dense) * 255
    assert err.pow(2).mean().sqrt() < 0.5
    assert err.abs().mean() < 0.3


def test_in_focus_layer_is_untouched():
    s = scenes.make_scene(2, 64, "layers")
    d_top = float(s.layers[-1].disparity().flatten()[0])
    out = render_thin_lens(s, d_top, 12.0)
    core = (s.layers[-1].alpha[0] > 0.999)
    # erode: the nearest layer is fully opaque and in focus -> exact inside its silhouette
    core = -torch.nn.functional.max_pool2d(-core.float()[None, None], 3, 1, 1)[0, 0] > 0.5
    assert core.sum() > 20
    assert (out - s.image)[0][:, core].abs().max() < 1e-3


def test_background_visible_behind_a_blurred_foreground_edge():
    # background in focus: green, with a BLUE disc hidden exactly under a red foreground disc
    r, K = 16.0, 8.0
    hidden, dist = _disc(r)
    bg = torch.tensor([0.1, 0.6, 0.1]).view(3, 1, 1) * (1 - hidden) + torch.tensor([0.1, 0.1, 0.9]).view(3, 1, 1) * hidden
    back = Layer(bg, torch.ones(1, N, N), torch.full((1, N, N), float(depth_for_disparity(0.0))))
    fg_alpha, _ = _disc(r)
    front = _flat((0.9, 0.1, 0.1), 1.0, alpha=fg_alpha)
    s = scene_from_layers([back, front])
    assert s.image[0, 2][dist < r - 1].max() < 0.2  # the blue disc is invisible in the all-in-focus image
    out = render_thin_lens(s, 0.0, K)  # foreground blurred by r = 8 px, background sharp
    inside = (dist > r - 3) & (dist < r - 1)  # just inside the foreground silhouette
    blue = out[0, 2][inside].mean()
    assert blue > 0.35  # the hidden background shows through the blurred rim
    outside = (dist > r + 1) & (dist < r + 3)
    assert out[0, 0][outside].mean() > 0.3 and out[0, 1][outside].mean() > 0.3  # red spill over green
    far = dist > r + K + 2
    assert (out - s.image)[0][:, far].abs().max() < 1e-3  # beyond the CoC the sharp background is untouched


def test_sharp_foreground_does_not_bleed_into_blurred_background():
    r, K = 14.0, 10.0
    fg_alpha, dist = _disc(r)
    back = _flat((0.1, 0.6, 0.1), 0.0)
    front = _flat((0.9, 0.1, 0.1), 1.0, alpha=fg_alpha)
    s = scene_from_layers([back, front])
    out = render_thin_lens(s, 1.0, K)  # foreground sharp, background blurred
    outside = dist > r + 1.0
    assert (out[0, 0][outside] - 0.1).abs().max() < 2 / 255  # no red outside the silhouette
    inside = dist < r - 1.0
    assert (out - s.image)[0][:, inside].abs().max() < 1e-4


def test_blur_radius_follows_the_convention_and_energy_is_kept_in_linear_light():
    n = 96
    dot, dist = _disc(1.0, n)
    back = _flat((0.0, 0.0, 0.0), 0.2, n=n)
    dot_layer = Layer(torch.ones(3, n, n), dot, torch.full((1, n, n), float(depth_for_disparity(0.8))))
    s = scene_from_layers([back, dot_layer])
    for K, df in ((20.0, 0.2), (30.0, 0.4)):
        out = cv.srgb_to_linear(render_thin_lens(s, df, K))[0, 1]
        assert out.sum() == pytest.approx(cv.srgb_to_linear(s.image)[0, 1].sum().item(), rel=0.02)
        r_true = K * abs(0.8 - df)
        # uniform disk of radius r: E[rho^2] = r^2 / 2 (minus the dot's own size)
        r_est = math.sqrt(2 * float((out * dist ** 2).sum() / out.sum()))
        assert r_est == pytest.approx(r_true, rel=0.08)


def test_polygon_aperture_shapes_the_bokeh():
    pos, w = aperture_cells(16, blades=6, rotation=0.0)
    assert pos[:, 0].max() > 0.9 and pos[:, 1].abs().max() < math.cos(math.pi / 6) + 0.01
    assert float(w.sum()) * (2 / 16) ** 2 == pytest.approx(1.5 * math.sqrt(3), rel=0.02)  # hexagon area
    pos, w = aperture_cells(16)
    assert float(w.sum()) * (2 / 16) ** 2 == pytest.approx(math.pi, rel=0.01)
    n = 96
    dot, _ = _disc(1.0, n)
    s = scene_from_layers([_flat((0, 0, 0), 0.0, n=n),
                           Layer(torch.ones(3, n, n), dot, torch.full((1, n, n), float(depth_for_disparity(1.0))))])
    out = cv.srgb_to_linear(render_thin_lens(s, 0.0, 30.0, blades=6))[0, 1]
    row = out[n // 2] > 0.5 * out.max()
    col = out[:, n // 2] > 0.5 * out.max()
    # vertices on the x axis: wider than tall by 1 / cos(30°)
    assert int(row.sum()) / int(col.sum()) == pytest.approx(1 / math.cos(math.pi / 6), rel=0.1)


def test_bad_arguments():
    s = scenes.make_scene(0, 32)
    with pytest.raises(ValueError):
        render_thin_lens(s, 0.5, -1.0)
    with pytest.raises(ValueError):
        render_thin_lens(s, 1.5, 4.0)


def test_rectangular_scene_callback_and_interrupt():
    s = scenes.make_scene(1, (40, 72), "mixed")
    calls = []
    out = render_thin_lens(s, 0.3, 6.0, callback=lambda d, t, p: calls.append((d, t)))
    assert out.shape == (1, 3, 40, 72) and 0 <= float(out.min()) and float(out.max()) <= 1
    assert calls and calls[-1][0] == calls[-1][1]

    def stop(d, t, p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_thin_lens(s, 0.3, 6.0, callback=stop)
    # transposed scene renders the transposed way: the renderer has no axis bias
    lay = [scenes.Layer(l.color.transpose(1, 2), l.alpha.transpose(1, 2), l.depth.transpose(1, 2)) for l in s.layers]
    t = scene_from_layers(lay)
    out_t = render_thin_lens(t, 0.3, 6.0)
    assert (out_t.transpose(2, 3) - out).abs().max() < 2e-3
