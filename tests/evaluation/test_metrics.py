import math

import pytest
import torch

from diffcamera.evaluation import metrics as M
from diffcamera.evaluation import scenes
from diffcamera.evaluation.thin_lens import render_thin_lens


@pytest.fixture(scope="module")
def scene():
    return scenes.make_scene(5, 96, "slanted")


def test_identical_images(scene):
    x = scene.image
    assert math.isinf(float(M.psnr(x, x)[0]))
    assert float(M.ssim(x, x)[0]) == pytest.approx(1.0, abs=1e-5)
    assert float(M.mae_255(x, x)[0]) == 0.0


def test_psnr_mae_values_and_batch():
    a = torch.zeros(2, 3, 8, 8)
    b = torch.zeros(2, 3, 8, 8)
    b[0] += 0.1
    b[1] += 1 / 255
    assert M.psnr(a, b).tolist() == pytest.approx([20.0, 20 * math.log10(255)], rel=1e-5)
    assert M.mae_255(a, b).tolist() == pytest.approx([25.5, 1.0], rel=1e-5)
    assert float(M.ssim(a + 0.5, torch.rand(2, 3, 8, 8).clamp(0, 1)).max()) < 0.5
    with pytest.raises(ValueError):
        M.psnr(a, b[:1])


def test_edge_band_psnr_looks_only_at_discontinuities():
    disp = torch.zeros(1, 1, 32, 32)
    disp[..., :, 16:] = 1.0  # one vertical depth edge between columns 15 and 16
    band = M.edge_band(disp, width=2)
    assert band[0, 0, 0].nonzero().flatten().tolist() == list(range(13, 19))
    a = torch.zeros(1, 3, 32, 32)
    b = a.clone()
    b[..., :, :4] = 1.0  # a big error far from the edge ...
    assert math.isinf(float(M.edge_band_psnr(a, b, disp, width=2)))  # ... is ignored
    b[..., :, 15] = 0.5
    assert float(M.edge_band_psnr(a, b, disp, width=2)) == pytest.approx(-10 * math.log10(0.25 / 6), rel=1e-4)
    assert math.isnan(float(M.edge_band_psnr(a, b, torch.zeros_like(disp))))


def test_blur_decreases_laplacian_variance_and_lvcorr(scene):
    Ks = [0.0, 2.0, 4.0, 6.0, 8.0]
    imgs = [render_thin_lens(scene, 0.5, k) for k in Ks]
    lv = [float(M.laplacian_variance(i)) for i in imgs]
    assert all(x > y for x, y in zip(lv, lv[1:]))
    assert M.lvcorr(imgs, Ks) > 0.95
    assert M.lvcorr(imgs[::-1], Ks) < -0.95  # gets sharper with K: wrong


def test_focus_plane_error(scene):
    for df in (0.25, 0.7):
        out = render_thin_lens(scene, df, 10.0)
        assert float(M.focus_plane_error(out, scene.disparity, df, reference=scene.image)) < 0.03
        assert float(M.focus_plane_error(out, scene.disparity, 1.0 - df, reference=scene.image)) > 0.3
    # batched, with a per-image request
    a = render_thin_lens(scene, 0.25, 10.0)
    b = render_thin_lens(scene, 0.7, 10.0)
    err = M.focus_plane_error(torch.cat([a, b]), scene.disparity.expand(2, -1, -1, -1), torch.tensor([0.25, 0.7]),
                              reference=scene.image.expand(2, -1, -1, -1))
    assert err.max() < 0.03


def test_summarize_skips_inf_and_nan():
    assert M.summarize([1.0, float("inf"), float("nan"), 3.0]) == 2.0
    assert M.summarize([float("inf")] * 2) == float("inf")
    assert math.isnan(M.summarize([float("nan")]))


def test_in_focus_region_is_where_the_blur_radius_is_under_one_pixel():
    from diffcamera.evaluation.metrics import in_focus_region
    d = (torch.arange(100, dtype=torch.float32) + 0.5).div(100).view(1, 1, 1, 100)  # 0.005 .. 0.995
    region = in_focus_region(d, 0.5, 10.0)
    inside = d[region]
    assert float(inside.min()) > 0.4 and float(inside.max()) < 0.6 and inside.numel() == 20
    per_image = in_focus_region(d.expand(2, -1, -1, -1), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 20.0]))
    assert per_image[0].sum() == 10 and per_image[1].sum() == 5


def test_sharpness_ratio_falls_with_blur_and_sharp_region_psnr_rewards_only_detail():
    from kornia.filters import box_blur
    from diffcamera.evaluation.metrics import psnr, sharp_region_psnr, sharpness_ratio
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(1, 3, 48, 48, generator=g)
    soft = box_blur(truth, (5, 5), border_type="reflect")
    region = torch.zeros(1, 1, 48, 48, dtype=torch.bool)
    region[..., :, :24] = True
    mixed = torch.where(region, truth, soft)  # sharp where it must be, soft elsewhere
    assert float(sharpness_ratio(truth, truth, region)[0]) == pytest.approx(1.0)
    assert float(sharpness_ratio(soft, truth, region)[0]) < 0.2
    assert float(sharp_region_psnr(mixed, truth, region)[0]) == float("inf")
    assert float(sharp_region_psnr(soft, truth, region)[0]) < float(psnr(mixed, truth)[0])
    assert torch.isnan(sharp_region_psnr(soft, truth, torch.zeros_like(region))[0])
