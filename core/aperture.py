"""Aperture kernels: the shape a defocused point spreads into.

All kernels are *soft* masks in BokehMe's form ``m(o) = 0.5 + 0.5·tanh(4·(r·ρ(θ) − |o|))`` over pixel
offsets ``o = (dy, dx)`` (``θ`` the offset's angle), where ``r`` is the blur radius in pixels and ``ρ(θ)``
the aperture's boundary in units of ``r``:

* circle (``blades=0``): ``ρ = 1`` (exactly BokehMe's classical kernel);
* ``blades`` = 3..12: a regular polygon (an iris of straight blades) with circumradius ``r`` (as
  :mod:`diffcamera.evaluation.thin_lens`), a vertex at angle ``rotation`` radians from +x towards +y (down),
  its sides bent outwards towards the circumscribed circle by ``curvature`` in ``0..1`` (``1`` = circle);
* cat's-eye: the aperture intersected with a second disk of the same size shifted by ``catseye``
  (a 2-vector, in units of ``r``) — the mechanical vignetting seen towards the frame edges.

Kernels are returned on a square grid of half-size ``R`` (``[2R+1, 2R+1]``, offset ``(0,0)`` at the centre),
truncated to BokehMe's window ``|dy|, |dx| ≤ ⌊r·max ρ⌋ + 1``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

MIN_BLADES, MAX_BLADES = 3, 12


@dataclass(frozen=True)
class Aperture:
    """Aperture shape parameters (hashable, so kernel banks can be cached per shape).

    Attributes:
        blades: 0 for a circle, else 3..12 straight blades.
        rotation: polygon rotation in radians (a vertex at this angle from +x towards +y).
        curvature: 0 = straight blades .. 1 = circle.
        catseye: ``(dy, dx)`` shift of the clipping disk in units of the radius, or ``None``.
    """

    blades: int = 0
    rotation: float = 0.0
    curvature: float = 0.0
    catseye: Optional[Tuple[float, float]] = None

    def __post_init__(self):
        validate_aperture(self.blades, self.curvature)

    @property
    def is_circle(self) -> bool:
        return (self.blades == 0 or self.curvature >= 1.0) and not self.catseye

    @property
    def symmetric(self) -> bool:
        """Point-symmetric kernels (``k(o) = k(−o)``) have a real Fourier transform."""
        return self.catseye is None and (self.blades == 0 or self.curvature >= 1.0 or self.blades % 2 == 0)

    def max_extent(self) -> float:
        """``max ρ(θ)``: how far the boundary reaches, in units of ``r`` (1 for the circle)."""
        if self.blades == 0 or self.curvature >= 1.0:
            return 1.0
        theta = torch.linspace(0, 2 * math.pi, 2049, dtype=torch.float64)
        return float(boundary(theta, self).max())


def validate_aperture(blades: int, curvature: float = 0.0) -> None:
    """Raise ``ValueError`` naming the input for an impossible aperture."""
    if int(blades) != blades or not (blades == 0 or MIN_BLADES <= blades <= MAX_BLADES):
        raise ValueError(f"blades must be 0 (circular aperture) or an integer in {MIN_BLADES}..{MAX_BLADES}, "
                         f"got {blades}")
    if not 0.0 <= float(curvature) <= 1.0:
        raise ValueError(f"blade curvature must be in 0..1 (0 straight blades, 1 circle), got {curvature}")


def _polygon_rho(theta: torch.Tensor, n: int, rotation: float) -> torch.Tensor:
    """Boundary of a regular n-gon with circumradius 1, a vertex at angle ``rotation`` (from +x to +y)."""
    sector = 2 * math.pi / n
    phi = torch.remainder(theta - rotation, sector) - sector / 2
    return math.cos(math.pi / n) / torch.cos(phi)


def boundary(theta: torch.Tensor, aperture: Aperture) -> torch.Tensor:
    """``ρ(θ)``: the aperture boundary in units of the radius (``θ`` from +x towards +y)."""
    if aperture.blades == 0 or aperture.curvature >= 1.0:
        return torch.ones_like(theta)
    return (1 - aperture.curvature) * _polygon_rho(theta, aperture.blades, aperture.rotation) + aperture.curvature


def soft_kernel(radius, half: int, aperture: Aperture = Aperture(), *, dtype=torch.float64,
                device=None, edge: str = "tanh") -> torch.Tensor:
    """Unnormalised soft aperture mask ``[2·half+1, 2·half+1]`` for blur radius ``radius`` px.

    ``radius`` may be a float or a 1-D tensor of ``n`` radii (then ``[n, 2·half+1, 2·half+1]``). Values in
    ``0..1``; for the circle this is exactly BokehMe's ``0.5 + 0.5·tanh(4·(r − |o|))`` inside its square
    window ``|dy|, |dx| ≤ ⌊r⌋ + 1``. ``edge="linear"`` gives instead the pixel-coverage (antialiased) disk
    ``clamp(r·ρ − |o| + 0.5, 0, 1)``, whose ``r = 0`` kernel is exactly a unit impulse.
    """
    batched = torch.is_tensor(radius) and radius.dim() > 0
    r = torch.as_tensor(radius, dtype=dtype, device=device).reshape(-1, 1, 1)
    ax = torch.arange(-half, half + 1, dtype=dtype, device=device)
    dy, dx = torch.meshgrid(ax, ax, indexing="ij")
    dist = torch.sqrt(dy * dy + dx * dx)
    if aperture.blades == 0 or aperture.curvature >= 1.0:
        reach = r
        rr = r
    else:
        theta = torch.atan2(dy, dx)
        rr = r * boundary(theta, aperture)
        reach = r * aperture.max_extent()
    soft = (lambda x: 0.5 + 0.5 * torch.tanh(4 * x)) if edge == "tanh" else (lambda x: (x + 0.5).clamp(0, 1))
    m = soft(rr - dist)
    if aperture.catseye is not None:
        cy, cx = aperture.catseye
        d2 = torch.sqrt((dy - cy * r) ** 2 + (dx - cx * r) ** 2)
        m = m * soft(r - d2)
    win = torch.floor(reach) + 1
    inside = (dy.abs() <= win) & (dx.abs() <= win)
    m = torch.where(inside, m, torch.zeros_like(m))
    return m if batched else m[0]


def kernel_half_size(radius: float, aperture: Aperture = Aperture()) -> int:
    """Half-size of the window that holds :func:`soft_kernel` for ``radius``."""
    return int(radius * aperture.max_extent()) + 1
