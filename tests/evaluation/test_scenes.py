import pytest
import torch

from diffcamera.core import conventions as cv
from diffcamera.evaluation import scenes


@pytest.mark.parametrize("kind", scenes.KINDS)
def test_scene_is_deterministic_and_consistent(kind):
    a = scenes.make_scene(3, 64, kind)
    b = scenes.make_scene(3, 64, kind)
    assert torch.equal(a.image, b.image) and torch.equal(a.depth, b.depth)
    assert all(torch.equal(x.color, y.color) and torch.equal(x.alpha, y.alpha) for x, y in zip(a.layers, b.layers))
    c = scenes.make_scene(4, 64, kind)
    assert (a.image - c.image).abs().mean() > 0.02  # another seed, another scene
    assert a.image.shape == (1, 3, 64, 64) and a.depth.shape == (1, 1, 64, 64)
    assert a.image.min() >= 0 and a.image.max() <= 1 and (a.depth > 0).all()
    assert torch.allclose(a.disparity, cv.metric_depth_to_disparity(a.depth, near=a.near, far=a.far))
    for lay in a.layers:
        assert lay.color.shape == (3, 64, 64) and lay.alpha.shape == (1, 64, 64) and lay.depth.shape == (1, 64, 64)
    assert torch.equal(a.layers[0].alpha, torch.ones_like(a.layers[0].alpha))  # full background


def test_layers_are_ordered_far_to_near_and_span_depth():
    for seed in range(4):
        s = scenes.make_scene(seed, 96, "layers")
        z = [float(l.depth.mean()) for l in s.layers]
        assert z == sorted(z, reverse=True)
        assert all(l.is_fronto for l in s.layers)
        assert 3 <= len(s.layers) - 1 <= 5
        assert float(s.disparity.max() - s.disparity.min()) > 0.5


def test_continuous_depth_kinds():
    sl = scenes.make_scene(0, 96, "slanted")
    d = sl.disparity[0, 0].double()
    # a plane: disparity is affine in (x, y) -> second differences vanish
    assert d.diff(dim=1).diff(dim=1).abs().max() < 1e-4 and d.diff(dim=0).diff(dim=0).abs().max() < 1e-4
    assert float(d.max() - d.min()) > 0.4
    gr = scenes.make_scene(0, 96, "ground")
    col = gr.disparity[0, 0, :, 48]
    assert col[0] == 0 and col[-1] > 0.8  # sky far at the top, ground near at the bottom
    assert (col.diff() >= -1e-6).all()  # increasing downwards
    mx = scenes.make_scene(0, 96, "mixed")
    assert len(mx.layers) >= 4 and not mx.layers[1].is_fronto


def test_textures_have_fine_detail_and_highlights():
    from kornia.filters import laplacian
    for kind in scenes.KINDS:
        s = scenes.make_scene(1, 128, kind)
        lap = laplacian(s.image, 3, normalized=False).var()
        assert lap > 0.01, kind
        assert (s.image.amin(1) > 0.85).float().sum() >= 3, kind  # bright (near-white) highlight pixels


def test_rectangular_size_and_helpers():
    s = scenes.make_scene(0, (48, 80), "mixed")
    assert s.image.shape == (1, 3, 48, 80) and s.size == (48, 80)
    imgs, disp = scenes.scene_batch(scenes.make_scenes([0, 1], 32, "layers"))
    assert imgs.shape == (2, 3, 32, 32) and disp.shape == (2, 1, 32, 32)
    assert abs(float(scenes.depth_for_disparity(0.0)) - scenes.FAR) < 1e-6
    with pytest.raises(ValueError):
        scenes.make_scene(0, 64, "nope")


@pytest.mark.parametrize("kind", ["layers", "slanted", "ground", "mixed"])
def test_check_is_called_throughout_and_changes_nothing(kind):
    """``check`` runs between the full-image operations (Cancel during a big scene) and the scene is bit-identical."""
    calls = []
    make_scene = scenes.make_scene
    a = make_scene(3, 32, kind, check=lambda: calls.append(1))
    b = make_scene(3, 32, kind)
    assert len(calls) > 10 and torch.equal(a.image, b.image) and torch.equal(a.disparity, b.disparity)

    class Stop(Exception):
        pass

    def stop_at_5():
        calls.append(1)
        if len(calls) == 5:
            raise Stop

    calls.clear()
    with pytest.raises(Stop):
        make_scene(3, 32, kind, check=stop_at_5)
    assert len(calls) == 5
    assert torch.equal(make_scene(3, 32, kind).image, b.image)  # the check is gone after the call
