"""Focus picking on depths with exactly known values: points, windows on edges, masks, batches, bad input."""
import json

import pytest
import torch

from diffcamera.core import focus as F
from diffcamera.core.conventions import level_to_K


def two_planes(h=64, w=96, far=0.2, near=0.8, edge=None):
    """Far plane on the left, near plane from column ``edge`` (default w//2) on: ``[1,1,h,w]``."""
    d = torch.full((1, 1, h, w), far)
    d[..., (w // 2 if edge is None else edge):] = near
    return d


def scene_disparity():
    """The exact disparity ``[1,1,64,64]`` of a procedural scene (:mod:`diffcamera.evaluation.scenes`)."""
    from diffcamera.evaluation.scenes import make_scene
    return make_scene(3, size=64, kind="layers").disparity


# ------------------------------------------------------------------------------------------ parsing
def test_parse_single_point_and_lists():
    assert F.parse_point_json('{"x": 0.25, "y": 0.75}') == (0.25, 0.75)
    assert F.parse_point_json("[0.1, 0.9]") == (0.1, 0.9)
    assert F.parse_points_json('[{"x": 0, "y": 1}, {"x": 1, "y": 0}]') == [(0.0, 1.0), (1.0, 0.0)]
    assert F.parse_point_json(F.point_json(0.123456, 0.5)) == (0.1235, 0.5)
    assert F.parse_point_json(F.DEFAULT_POINT_JSON) == (0.5, 0.5)


@pytest.mark.parametrize("text, words", [
    ('{"x": 0.5, "y": 0.5', "not valid JSON"),
    ("", "empty"),
    ('{"x": 1.5, "y": 0.5}', "outside the image"),
    ('{"x": -0.1, "y": 0.5}', "outside the image"),
    ('{"x": 0.5}', "lacks y"),
    ('{"x": "left", "y": 0.5}', "numbers"),
    ('{"x": true, "y": 0.5}', "numbers"),
    ('{"x": NaN, "y": 0.5}', "non-finite"),
    ("[]", "empty"),
    ("42", "expected an object"),
    ('[{"x": 0.5, "y": 0.5}, {"x": 2, "y": 0}]', "point 1"),
])
def test_parse_errors_name_the_widget(text, words):
    with pytest.raises(ValueError) as err:
        F.parse_points_json(text, widget="focus_point")
    msg = str(err.value)
    assert msg.startswith("focus_point:") and words in msg


def test_parse_point_json_rejects_a_list_of_many():
    with pytest.raises(ValueError, match="one point"):
        F.parse_point_json('[{"x": 0.1, "y": 0.1}, {"x": 0.2, "y": 0.2}]')


# ------------------------------------------------------------------------------------ reading focus
@pytest.mark.parametrize("x, expected", [(0.1, 0.2), (0.45, 0.2), (0.55, 0.8), (0.99, 0.8), (0.0, 0.2), (1.0, 0.8)])
def test_point_reads_exact_plane_disparity(x, expected):
    f = F.focus_from_point(two_planes(), x, 0.5)
    assert f.disparity.item() == torch.tensor(expected).item()  # exactly the plane's float32 value
    assert f.method == ["point"] and f.x.tolist() == [pytest.approx(x)]


def test_point_on_a_procedural_scene_matches_the_pixel_when_the_window_is_flat():
    d = scene_disparity()
    # find a pixel whose 5x5 neighbourhood is constant, and click its centre
    h, w = d.shape[-2:]
    pooled_max = torch.nn.functional.max_pool2d(d, 5, 1, 2)
    pooled_min = -torch.nn.functional.max_pool2d(-d, 5, 1, 2)
    flat = torch.nonzero((pooled_max - pooled_min)[0, 0] == 0)
    r, c = flat[len(flat) // 2].tolist()
    f = F.focus_from_point(d, (c + 0.5) / w, (r + 0.5) / h, window=5)
    assert f.disparity.item() == d[0, 0, r, c].item()


def test_median_window_ignores_a_flying_pixel_on_a_depth_edge():
    d = two_planes(64, 96, edge=48)
    d[..., 47] = 0.5                            # a column of "flying pixels" between the planes
    x_click = (47 + 0.5) / 96                    # click exactly on it
    assert F.read_disparity_at(d, x_click, 0.5, window=1).item() == pytest.approx(0.5)  # naive read fails
    # a plain median of a window centred on the edge fails too (as many far as near pixels)
    assert F.read_disparity_at(d, x_click, 0.5, window=7, cluster_tolerance=0).item() == pytest.approx(0.5)
    got = F.read_disparity_at(d, x_click, 0.5, window=7).item()
    assert got in (pytest.approx(0.2), pytest.approx(0.8))
    # one pixel inside the near plane: the window is mostly near -> near
    assert F.read_disparity_at(d, (49 + 0.5) / 96, 0.5, window=7).item() == pytest.approx(0.8)
    # default window works too (odd, ~1% of the long side, >= 5)
    assert F.default_window(512, 512) == 5 and F.default_window(1024, 768) == 11 and F.default_window(32, 32) == 5
    assert F.read_disparity_at(d, x_click, 0.5).item() != pytest.approx(0.5)


def test_robust_median_on_smooth_surface_is_the_median():
    ramp = torch.linspace(0.3, 0.5, 49)
    assert F.robust_median(ramp).item() == pytest.approx(ramp.median().item(), abs=1e-6)
    noisy = torch.cat([torch.full((30,), 0.7), torch.full((10,), 0.4), torch.full((9,), 0.1)])
    assert F.robust_median(noisy).item() == pytest.approx(0.7)


def test_window_is_clipped_at_the_border():
    d = two_planes()
    assert F.read_disparity_at(d, 0.0, 0.0, window=9).item() == pytest.approx(0.2)
    assert F.read_disparity_at(d, 1.0, 1.0, window=9).item() == pytest.approx(0.8)


def test_batches_one_point_for_all_or_one_per_image():
    d = torch.cat([two_planes(far=0.1, near=0.9), two_planes(far=0.3, near=0.6)])
    shared = F.focus_from_point(d, 0.9, 0.5)
    assert shared.disparity.tolist() == pytest.approx([0.9, 0.6])
    per = F.focus_from_point(d, [0.1, 0.9], [0.5, 0.2])
    assert per.disparity.tolist() == pytest.approx([0.1, 0.6])
    assert per.x.tolist() == pytest.approx([0.1, 0.9]) and per.batch == 2
    with pytest.raises(ValueError, match="^x: 3 values for 2 images; give one, or one per image"):
        F.focus_from_point(d, [0.1, 0.2, 0.3], 0.5)


def test_mask_median_and_centroid():
    d = two_planes(64, 96)
    mask = torch.zeros(1, 1, 64, 96)
    mask[..., 10:30, 50:90] = 1.0               # on the near plane...
    mask[..., 10:12, 40:48] = 1.0               # ...plus a few far pixels: the median stays near
    f = F.focus_from_mask(d, mask)
    assert f.disparity.item() == pytest.approx(0.8) and f.method == ["mask"]
    only = torch.zeros(1, 1, 64, 96)
    only[..., 10:30, 50:90] = 1.0
    g = F.focus_from_mask(d, only)
    assert g.x.item() == pytest.approx(70 / 96) and g.y.item() == pytest.approx(20 / 64)
    # a 3-D ComfyUI-style mask, shared across a batch of two
    f2 = F.focus_from_mask(torch.cat([d, 1 - d]), only[:, 0])
    assert f2.disparity.tolist() == pytest.approx([0.8, 0.2])


def test_mask_errors():
    d = two_planes()
    with pytest.raises(ValueError, match="mask: the mask is empty"):
        F.focus_from_mask(d, torch.zeros(1, 1, 64, 96))
    with pytest.raises(ValueError, match="resize the mask"):
        F.focus_from_mask(d, torch.ones(1, 1, 32, 48))
    with pytest.raises(ValueError, match="one per image"):
        F.focus_from_mask(torch.cat([d, d]), torch.ones(3, 1, 64, 96))
    two = torch.ones(2, 1, 64, 96)
    two[1] = 0
    with pytest.raises(ValueError, match="image 1"):
        F.focus_from_mask(torch.cat([d, d]), two)


def test_nan_depth_is_rejected():
    d = two_planes()
    d[0, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        F.focus_from_point(d, 0.5, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        F.focus_from_mask(d, torch.ones(1, 1, 64, 96))


def test_override():
    f = F.focus_override(0.37, 3, x=0.2, y=0.4)
    assert f.disparity.tolist() == pytest.approx([0.37] * 3) and f.method == ["override"] * 3
    assert f.x.tolist() == pytest.approx([0.2] * 3)
    with pytest.raises(ValueError, match="0..1"):
        F.focus_override(1.5, 1)


# ------------------------------------------------------------------------------------------ preview
def test_in_focus_mask_is_the_one_pixel_coc_band():
    d = torch.tensor([0.5, 0.55, 0.59, 0.61, 0.65, 0.3]).view(1, 1, 1, 6)
    sharp = F.in_focus_mask(d, 0.5, 10.0)  # |10*(d-0.5)| < 1  <=> |d-0.5| < 0.1
    assert sharp.view(-1).tolist() == [True, True, True, False, False, False]
    # K from the artist's bokeh level at this resolution; per-image K and d_f
    K = level_to_K(20, 512, 512)
    assert K == 10.0
    two = F.in_focus_mask(torch.cat([d, d]), torch.tensor([0.5, 0.3]), torch.tensor([10.0, 1.0]))
    assert two[1].view(-1).tolist() == [True] * 6


def test_preview_tints_in_focus_region_and_marks_the_point():
    h, w = 64, 96
    d = two_planes(h, w)
    image = torch.full((1, 3, h, w), 0.5)
    f = F.focus_from_point(d, 0.75, 0.5)
    prev = F.focus_preview(image, d, f, K=10.0)
    assert prev.shape == image.shape and prev.min() >= 0 and prev.max() <= 1
    far_px, near_px = prev[0, :, 5, 5], prev[0, :, 5, 70]
    assert torch.allclose(far_px, torch.tensor(0.5))           # out of focus: untouched
    assert near_px[1] > 0.6 and near_px[0] < 0.45                # in focus: green tint
    # the ring of the marker (radius max(5, 2% of 96) = 5 px) is white, the centre dot too
    cx, cy = int(0.75 * w), int(0.5 * h)
    assert prev[0, :, cy, cx].min() > 0.95
    assert prev[0, :, cy, cx + 5].min() > 0.95
    # and nothing changes far from the point on the near plane apart from the tint
    assert torch.allclose(prev[0, :, 5, 90], near_px)


def test_point_json_round_trip_is_what_the_front_end_writes():
    s = F.point_json(0.3, 0.7)
    assert json.loads(s) == {"x": 0.3, "y": 0.7}


def test_marker_at_the_borders_and_per_image():
    image = torch.zeros(2, 3, 40, 60)
    out = F.draw_marker(image, [0.0, 1.0], [0.0, 1.0])
    assert out.shape == image.shape
    assert out[0, :, 0, 0].min() > 0.95 and out[1, :, 39, 59].min() > 0.95   # the centre dots
    assert out[0, :, 39, 59].max() == 0 and out[1, :, 0, 0].max() == 0       # each image only its own marker
    assert torch.equal(image, torch.zeros(2, 3, 40, 60))                      # input untouched
