import pytest
import torch

from diffcamera.core import conventions as cv


def test_level_to_K_is_resolution_independent():
    assert cv.level_to_K(16, 1024, 768) == 16
    assert cv.level_to_K(16, 512, 512) == 8
    assert cv.K_to_level(cv.level_to_K(7.5, 300, 2048), 300, 2048) == pytest.approx(7.5)


def test_metric_depth_to_disparity_orders_near_high():
    z = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
    d = cv.metric_depth_to_disparity(z)
    assert d.flatten().tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert torch.all(cv.metric_depth_to_disparity(torch.full((1, 1, 2, 2), 3.0)) == 0.5)


def test_signed_coc_sign_and_batch():
    d = torch.tensor([0.2, 0.8]).view(1, 1, 1, 2).expand(2, 1, 1, 2)
    c = cv.signed_coc(d, torch.tensor([0.5, 0.2]), 10.0)
    assert c[0].flatten().tolist() == pytest.approx([-3.0, 3.0])
    assert c[1].flatten().tolist() == pytest.approx([0.0, 6.0])


def test_point_to_pixel_and_padding():
    assert cv.point_to_pixel(0.0, 0.0, 10, 20) == (0, 0)
    assert cv.point_to_pixel(1.0, 1.0, 10, 20) == (9, 19)
    x = torch.rand(1, 3, 17, 33)
    p, size = cv.pad_to_multiple(x)
    assert p.shape[-2:] == (32, 48) and size == (17, 33)
    assert torch.equal(p[..., :17, :33], x)


def test_srgb_linear_round_trip():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(cv.linear_to_srgb(cv.srgb_to_linear(x)), x, atol=1e-5)


def test_comfy_layout_round_trip():
    x = torch.rand(2, 5, 7, 3)
    assert torch.equal(cv.core_to_comfy(cv.comfy_to_core(x)), x)
