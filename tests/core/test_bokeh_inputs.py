"""Bad input to render_bokeh: clear ValueErrors naming the input, raised before any work."""
import pytest
import torch

from diffcamera.core import bokeh_classical
from diffcamera.core.bokeh import render_bokeh

IMG = torch.rand(2, 3, 16, 16)
DISP = torch.rand(2, 1, 16, 16)


@pytest.fixture(autouse=True)
def _no_work(monkeypatch):
    """Any rendering work during a bad-input call is a test failure."""
    def boom(*a, **k):
        raise AssertionError("work started before validation")
    monkeypatch.setattr(bokeh_classical, "scatter", boom)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(disparity=torch.rand(2, 1, 8, 8)), "^disparity is 8×8 px but the image is 16×16"),
    (dict(disparity=torch.full((2, 1, 16, 16), float("nan"))), "NaN"),
    (dict(disparity=torch.full((2, 1, 16, 16), float("inf"))), "infinite"),
    (dict(K=-1.0), "K"),
    (dict(K=float("nan")), "K"),
    (dict(K=1e5), r"^K: 100000 px per unit disparity \(bokeh level 6.4e\+06\) is more than this 16×16 image accepts, "
                  r"64 px .*lower the level"),
    (dict(K=torch.tensor([8.0, 65.0])), "^K: 65 px"),
    (dict(gamma=0.0), "gamma"),
    (dict(gamma=-2.0), "gamma"),
    (dict(blades=2), "blades"),
    (dict(blades=13), "blades"),
    (dict(blades=4.5), "blades"),
    (dict(curvature=1.5), "curvature"),
    (dict(disparity=torch.rand(3, 1, 16, 16)), "^disparity: 3 depth maps for 2 images"),
    (dict(focus_disparity=torch.tensor([0.1, 0.2, 0.3])), "focus_disparity"),
    (dict(K=torch.tensor([1.0, 2.0, 3.0])), "K"),
    (dict(mode="fancy"), "mode"),
    (dict(image=torch.rand(2, 16, 16)), "image"),
    (dict(image=torch.rand(2, 4, 16, 16)), "image"),
    (dict(image=torch.rand(2, 3, 0, 16), disparity=torch.rand(2, 1, 0, 16)), "empty"),
    (dict(disparity=torch.rand(2, 16, 16)), "disparity"),
    (dict(highlight_gain=-1.0), "highlight_gain"),
    (dict(focus_range=2.0), "focus_range"),
    (dict(edge_softness=3), "option"),
])
def test_bad_input_raises_naming_it(kwargs, needle):
    args = dict(image=IMG, disparity=DISP, focus_disparity=0.5, K=8.0)
    args.update(kwargs)
    image, disparity, fd, k = args.pop("image"), args.pop("disparity"), args.pop("focus_disparity"), args.pop("K")
    with pytest.raises(ValueError, match=needle):
        render_bokeh(image, disparity, fd, k, **args)


def test_constant_depth_and_tiny_images(monkeypatch):
    monkeypatch.undo()
    # constant depth away from focus: a uniform blur, no crash; at focus: unchanged
    out = render_bokeh(IMG, torch.full_like(DISP, 0.7), 0.2, 10.0)
    assert torch.isfinite(out).all() and out.shape == IMG.shape
    one = torch.rand(1, 3, 1, 1)
    for mode in ("classical", "layered"):
        o = render_bokeh(one, torch.rand(1, 1, 1, 1), 0.0, 50.0, mode=mode)
        assert torch.allclose(o, one, atol=1e-4), mode   # a single pixel can only spread onto itself
    # broadcast a single depth map and a single focus over a batch
    o = render_bokeh(IMG, DISP[:1], 0.3, 6.0)
    assert o.shape == IMG.shape
