"""The layered operator's explicit-hidden form (what the physics refocus inverts): linear in (colour, hidden
colour), exact adjoint, and the hidden colour only matters behind nearer layers."""
import torch

from diffcamera.core.aperture import Aperture
from diffcamera.core.bokeh_layered import LayeredOperator


def _coc(h=40, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = torch.zeros(1, 1, h, w)
    d[..., 8:26, 10:30] = 0.8            # a near square
    d[..., 20:36, 28:44] = 0.45          # a middle one, partly behind it
    d = d + 0.02 * torch.rand(1, 1, h, w, generator=g)
    return 12.0 * (d - 0.1)


def test_dot_product_of_the_explicit_hidden_form():
    torch.manual_seed(1)
    for ap in (Aperture(), Aperture(blades=5, rotation=0.3)):
        op = LayeredOperator(_coc().double(), aperture=ap)
        x, h, y = (torch.randn(1, 3, 40, 48, dtype=torch.float64) for _ in range(3))
        xt, ht = op.adjoint(y, hidden=True)
        lhs = float((op(x, hidden=h) * y).sum())
        rhs = float((x * xt).sum() + (h * ht).sum())
        assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def test_hidden_colour_shows_only_where_a_layer_extends_behind_nearer_ones():
    coc = _coc()
    op = LayeredOperator(coc)
    x = torch.rand(1, 3, 40, 48)
    a = op(x, hidden=torch.zeros_like(x))
    b = op(x, hidden=torch.ones_like(x))
    diff = (a - b).abs().amax(1, keepdim=True)
    # far from every nearer layer (top-left corner, 3 px margin of the square's blur) nothing changes...
    assert float(diff[..., :2, :2].max()) < 1e-6
    # ...while around the near square's rim the hidden colour shows through
    assert float(diff[..., 6:28, 8:32].max()) > 0.05


def test_flat_coc_has_no_hidden_part():
    coc = torch.full((1, 1, 32, 32), 3.0)
    op = LayeredOperator(coc)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(op(x, hidden=torch.rand_like(x)), op(x), atol=1e-6)
    xt, ht = op.adjoint(torch.rand_like(x), hidden=True)
    assert float(ht.abs().max()) == 0.0
