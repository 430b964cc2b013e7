"""Image metrics for bokeh renderers and refocus models.

Every metric takes core tensors (:mod:`diffcamera.core.conventions`): images ``[B, 3, H, W]`` sRGB ``0..1``,
disparity ``[B, 1, H, W]`` ``0..1`` (near = 1), and returns one value per image (``[B]``) unless stated
otherwise. Errors are computed on the sRGB-encoded values (what a viewer sees).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..core import conventions as cv
from ..core.depth import EDGE_THRESHOLD, depth_edges  # noqa: F401 - re-exported for the scoring suites

_LUMA = (0.299, 0.587, 0.114)
#: Disparity bins whose reference Laplacian energy per pixel is below this fraction of the image's mean are
#: ignored by the focus-plane measure (flat regions carry no focus information).
LOW_TEXTURE = 0.05


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"metrics need two [B,C,H,W] images of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def psnr(a: torch.Tensor, b: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a peak of 1, ``[B]``; ``inf`` for identical images.

    ``mask`` (``[B, 1, H, W]``, bool or 0..1 weights) restricts the mean squared error; an empty mask gives NaN.
    """
    _check_pair(a, b)
    se = (a.float() - b.float()) ** 2
    if mask is None:
        mse = se.flatten(1).mean(1)
    else:
        m = mask.float().expand_as(se)
        den = m.flatten(1).sum(1)
        mse = (se * m).flatten(1).sum(1) / den.clamp_min(1e-12)
        mse = torch.where(den > 0, mse, torch.full_like(mse, float("nan")))
    out = torch.where(mse > 0, -10.0 * torch.log10(mse.clamp_min(1e-30)), torch.full_like(mse, float("inf")))
    return torch.where(torch.isnan(mse), mse, out)


def ssim(a: torch.Tensor, b: torch.Tensor, window_size: int = 11) -> torch.Tensor:
    """Mean structural similarity (kornia.metrics.ssim, Gaussian window, data range 1), ``[B]``; 1 if identical."""
    _check_pair(a, b)
    from kornia.metrics import ssim as kssim
    return kssim(a.float(), b.float(), window_size, max_val=1.0).flatten(1).mean(1)


def mae_255(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute error in 1/255 units (8-bit levels), ``[B]``."""
    _check_pair(a, b)
    return (a.float() - b.float()).abs().flatten(1).mean(1) * 255.0


def edge_band(disparity: torch.Tensor, width: int = 4, threshold: float = EDGE_THRESHOLD) -> torch.Tensor:
    """``[B, 1, H, W]`` bool: pixels within ``width`` px (Chebyshev) of a depth discontinuity."""
    e = depth_edges(disparity, threshold).float()
    if width > 0:
        e = F.max_pool2d(e, 2 * int(width) + 1, 1, int(width))
    return e > 0.5


def edge_band_psnr(a: torch.Tensor, b: torch.Tensor, disparity: torch.Tensor, width: int = 4) -> torch.Tensor:
    """PSNR (dB) inside a band of ``width`` px around depth discontinuities of ``disparity``, ``[B]``.

    This is where layered occlusion goes right or wrong (halos, leaking, missing background). NaN for an
    image without discontinuities.
    """
    return psnr(a, b, mask=edge_band(disparity, width))


def luma(image: torch.Tensor) -> torch.Tensor:
    """Rec. 601 luma of an sRGB image, ``[B, 1, H, W]``."""
    w = torch.tensor(_LUMA, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def _laplacian(image: torch.Tensor) -> torch.Tensor:
    from kornia.filters import laplacian
    return laplacian(luma(image.float()), 3, border_type="reflect", normalized=False)


def laplacian_variance(image: torch.Tensor) -> torch.Tensor:
    """Variance of the 3×3 Laplacian of the luma (a global sharpness measure), ``[B]``; falls with blur."""
    return _laplacian(image).flatten(1).var(1)


#: Blur radius (px) under which a pixel counts as in focus for the sharp-region metrics.
IN_FOCUS_PX = 1.0


def in_focus_region(disparity: torch.Tensor, focus_disparity, K, radius_px: float = IN_FOCUS_PX) -> torch.Tensor:
    """``[B, 1, H, W]`` bool: where a render focused at ``focus_disparity`` (float or ``[B]``) with ``K`` (px per
    unit disparity, float or ``[B]``) blurs by less than ``radius_px`` px, ``|K·(d − d_f)| < radius_px``: the region
    a refocus request must make sharp."""
    d = disparity.float()
    d_f = torch.as_tensor(focus_disparity, dtype=d.dtype).reshape(-1, 1, 1, 1)
    k = torch.as_tensor(K, dtype=d.dtype).reshape(-1, 1, 1, 1)
    return (k * (d - d_f)).abs() < radius_px


def sharp_region_psnr(image: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, ``[B]``) inside ``region`` (:func:`in_focus_region`): copying a blurred input or re-blurring it
    cannot win here, only recovering detail can. NaN where the region is empty."""
    return psnr(image, truth, mask=region)


def sharpness_ratio(image: torch.Tensor, truth: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Laplacian energy of ``image`` over that of ``truth`` inside ``region`` (3 px off the border), ``[B]``:
    1 = as sharp as the truth, below 1 = softer, above 1 = sharper than the truth (ringing, noise: read it
    next to :func:`sharp_region_psnr`). NaN where the region (or the truth's energy there) is empty."""
    _check_pair(image, truth)
    inner = torch.zeros_like(region, dtype=torch.bool)
    inner[..., 3:-3, 3:-3] = True
    sel = (region.bool() & inner).float()
    e_img = (_laplacian(image) ** 2 * sel).flatten(1).sum(1)
    e_ref = (_laplacian(truth) ** 2 * sel).flatten(1).sum(1)
    return torch.where(e_ref > 0, e_img / e_ref.clamp_min(1e-30), torch.full_like(e_ref, float("nan")))


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x = x.double() - x.double().mean()
    y = y.double() - y.double().mean()
    den = float(x.norm() * y.norm())
    return float((x * y).sum()) / den if den > 0 else float("nan")


def lvcorr(images: Sequence[torch.Tensor], Ks: Sequence[float]) -> float:
    """LVCorr: how well a renderer's blur follows the requested bokeh level over a sweep of K, focus fixed.

    Pearson correlation between ``K`` and the *decrease* of sharpness, ``-log(laplacian_variance)``, over the
    sweep (one image per K; for batches, the per-image correlations are averaged). ``+1`` means the image gets
    steadily blurrier as K grows; ``0`` means K has no effect; ``-1`` means it gets sharper. The log makes the
    measure follow the trend rather than the first large drop (Laplacian variance falls roughly as 1/K²).

    Args:
        images: list of ``[B, 3, H, W]`` sRGB renders, one per K (same scene, same focus).
        Ks: the K values (px per unit disparity), same length, at least 3 distinct.
    """
    if len(images) != len(Ks) or len(Ks) < 3:
        raise ValueError("lvcorr needs one image per K and at least 3 K values")
    lv = torch.stack([laplacian_variance(im) for im in images], 0)  # [N, B]
    k = torch.tensor([float(x) for x in Ks])
    vals = [_pearson(k, -torch.log(lv[:, i].clamp_min(1e-12))) for i in range(lv.shape[1])]
    return float(sum(vals) / len(vals))


def sharpness_by_disparity(image: torch.Tensor, disparity: torch.Tensor, reference: Optional[torch.Tensor] = None,
                           bins: int = 20, min_pixels: Optional[int] = None, guard: int = 2):
    """Sharpness per disparity bin: Laplacian energy of ``image`` over that of ``reference`` (if given).

    Pixels within ``guard`` px of a depth discontinuity or 3 px of the frame are left out (blur from a neighbouring surface would leak
    in), and with a reference, bins of nearly flat reference texture (:data:`LOW_TEXTURE`) too. Returns ``(centres [B, bins] mean disparity of each bin, sharpness [B, bins])`` with NaN for bins with
    fewer than ``min_pixels`` pixels (default: 0.1 % of the image, at least 16).
    """
    if min_pixels is None:
        min_pixels = max(16, image.shape[-1] * image.shape[-2] // 1000)
    lap = _laplacian(image) ** 2
    ref = _laplacian(reference) ** 2 if reference is not None else None
    keep = ~edge_band(disparity, guard)
    border = max(guard, 3)  # frame borders: padding conventions differ between renderers
    keep[..., :border, :] = False
    keep[..., -border:, :] = False
    keep[..., :, :border] = False
    keep[..., :, -border:] = False
    b = image.shape[0]
    idx = (disparity.clamp(0, 1) * bins).long().clamp_max(bins - 1)
    centres = torch.full((b, bins), float("nan"))
    sharp = torch.full((b, bins), float("nan"))
    for i in range(b):
        k = keep[i, 0]
        ids = idx[i, 0][k]
        n = torch.bincount(ids, minlength=bins).double()
        dsum = torch.bincount(ids, weights=disparity[i, 0][k].double(), minlength=bins)
        e = torch.bincount(ids, weights=lap[i, 0][k].double(), minlength=bins)
        if ref is not None:
            er = torch.bincount(ids, weights=ref[i, 0][k].double(), minlength=bins)
            e = e / er.clamp_min(1e-12)
            # bins with almost no texture in the reference say nothing about focus (and divide by ~0)
            mean_ref = float(er.sum() / n.sum().clamp_min(1))
            ok = (n >= min_pixels) & (er > LOW_TEXTURE * mean_ref * n) & (er > 1e-12)
        else:
            e = e / n.clamp_min(1)
            ok = n >= min_pixels
        centres[i] = torch.where(ok, dsum / n.clamp_min(1), torch.full_like(dsum, float("nan"))).float()
        sharp[i] = torch.where(ok, e, torch.full_like(e, float("nan"))).float()
    return centres, sharp


def sharpest_disparity(image: torch.Tensor, disparity: torch.Tensor, reference: Optional[torch.Tensor] = None,
                       bins: int = 20) -> torch.Tensor:
    """Disparity at which ``image`` is sharpest (relative to ``reference`` when given), ``[B]``.

    The bin with the highest sharpness, refined by a sharpness-weighted mean of it and its populated neighbours.
    NaN if no bin has enough pixels.
    """
    centres, sharp = sharpness_by_disparity(image, disparity, reference, bins)
    out = torch.full((image.shape[0],), float("nan"))
    for i in range(image.shape[0]):
        s = sharp[i]
        if torch.isnan(s).all():
            continue
        j = int(torch.nan_to_num(s, nan=-1.0).argmax())
        lo, hi = max(0, j - 1), min(bins, j + 2)
        c, w = centres[i, lo:hi], s[lo:hi]
        ok = ~torch.isnan(w)
        w = (w[ok] - 0.5 * s[j]).clamp_min(0)  # neighbours count only when nearly as sharp
        out[i] = float((c[ok] * w).sum() / w.sum()) if float(w.sum()) > 0 else float(centres[i, j])
    return out


def focus_plane_error(image: torch.Tensor, disparity: torch.Tensor,
                      requested_focus_disparity: Union[float, torch.Tensor],
                      reference: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``|disparity where image is sharpest − requested focus disparity|``, ``[B]``, in disparity units (0..1).

    Sharpness is measured per disparity bin as the Laplacian energy relative to ``reference`` (the all-in-focus
    image when available), so differences of texture between depths do not bias the estimate.
    """
    req = cv.as_batch(requested_focus_disparity, image.shape[0], disparity.float())
    return (sharpest_disparity(image, disparity, reference) - req.cpu()).abs()


def summarize(values: List[float]) -> float:
    """Mean of the finite values: inf PSNRs of exact renders are left out of averages; all inf -> inf; NaN if
    there is no number at all."""
    v = [x for x in values if x == x and abs(x) != float("inf")]
    if v:
        return float(sum(v) / len(v))
    infs = [x for x in values if x == x]
    return float(infs[0]) if infs and all(x == infs[0] for x in infs) else float("nan")
