r"""The training objective: rectified flow on two focus planes, depth dropout, and the stacking constraint.

Notation (per scene group ``g`` of a batch, all latents ``[C,h,w]`` from the model's autoencoder
``E`` — FLUX-normalised VAE latents, or the toy's pixel-unshuffle):

* ``R`` reference image (what the user gives: AIF or focused elsewhere), ``D`` its disparity;
* targets ``I_1``, ``I_2`` rendered with the same bokeh strength ``K`` at focus disparities ``d_1 ≠ d_2``;
  ``I_12`` the two-plane composite (blur radius ``K·min(|D−d_1|, |D−d_2|)``), ``M = 1[|D−d_1| <= |D−d_2|]``;
* ``x_0^i = E(I_i)``, one noise ``ε ~ N(0, I)`` and one ``σ = sigmoid(n)``, ``n ~ N(μ, s²)`` (logit-normal,
  ``μ = logit_normal_mean``, ``s = logit_normal_std``) **shared by both planes**;
* ``x_σ^i = (1−σ)·x_0^i + σ·ε`` and ``v̂_i = v_θ(x_σ^i, σ, E(R), cam_i)``, where ``cam_i`` is
  :func:`~diffcamera.core.dit.conditions.build_camera_map` for ``(D, d_i, K, focus point i)`` with its
  depth-derived channels blanked for the whole group with probability ``p`` (depth dropout; both planes of a
  group drop together).

The loss of a batch of ``B`` groups (MSE = mean over all elements)::

    L_RF    = 1/2 · [ MSE(v̂_1, ε − x_0^1) + MSE(v̂_2, ε − x_0^2) ]
    x̂_0^i   = x_σ^i − σ · v̂_i                                  (the clean latent the model implies)
    M↓      = area-downsample(M) to the latent grid h×w          (values in 0..1 at plane boundaries)
    L_stack = MSE( M↓ ⊙ x̂_0^1 + (1 − M↓) ⊙ x̂_0^2 ,  E(I_12) )
    L       = L_RF + λ · L_stack                                 (λ = ``lambda_stack``; λ = 0: vanilla)

What is the paper's and what is ours: the paper states that a *latent* stacking constraint, based on
"photos of different focus planes can be linearly blended into a multi-focus image", is added to the vanilla
rectified-flow objective, together with depth dropout. The formula above — predicted clean latents (not
velocities), one shared ``ε`` and ``σ``, an area-downsampled hard nearest-plane mask, an MSE against the
*encoded rendered* composite (not a blend of encoded targets), equal weighting across ``σ``, whole-group
dropout of the depth channels — is **our reconstruction**; the paper's exact formula, λ, mask and dropout
rate are not public.

``L_stack`` costs one extra autoencoder encode (of ``I_12``) and an element-wise blend: the two DiT passes are
needed by ``L_RF`` anyway, so the vanilla loss here also trains on both planes (same compute, same data).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F


def logit_normal_sigmas(batch: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``[batch]`` noise levels ``sigmoid(N(mean, std²))`` in (0, 1) (float32, CPU)."""
    return torch.sigmoid(mean + std * torch.randn(batch, generator=generator))


def mask_to_latent(mask: torch.Tensor, size) -> torch.Tensor:
    """``[B,1,H,W]`` mask -> ``[B,1,h,w]`` by area averaging (fractional at boundaries)."""
    return F.adaptive_avg_pool2d(mask.float(), tuple(size))


def predicted_x0(noisy: torch.Tensor, sigma: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
    """``x̂_0 = x_σ − σ·v̂`` with ``σ`` of shape ``[B]``."""
    return noisy - sigma.view(-1, 1, 1, 1).to(noisy.dtype) * velocity


def stacking_loss(x0_hat1: torch.Tensor, x0_hat2: torch.Tensor, mask_latent: torch.Tensor,
                  composite_latent: torch.Tensor) -> torch.Tensor:
    """``MSE(M↓·x̂_0^1 + (1−M↓)·x̂_0^2, E(I_12))`` (scalar)."""
    m = mask_latent.to(x0_hat1.dtype)
    blend = m * x0_hat1 + (1.0 - m) * x0_hat2
    return F.mse_loss(blend.float(), composite_latent.float())


def refocus_loss(model, batch: Dict[str, torch.Tensor], generator: torch.Generator, *, lambda_stack: float = 1.0,
                 depth_dropout: float = 0.0, logit_mean: float = 0.0, logit_std: float = 1.0,
                 device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
    """The loss of the module docstring for one micro-batch.

    Args:
        model: a :class:`~diffcamera.core.dit.model.RefocusModel` (``autoencoder``, ``config``, ``velocity``).
        batch: a :mod:`diffcamera.training.dataset` batch of ``B`` groups (CPU tensors).
        generator: CPU generator for ``ε``, ``σ`` and the dropout draw (the trainer seeds it per step).
    Returns:
        dict with ``loss`` (differentiable), ``rf``, ``stack`` (detached floats as tensors).
    """
    from ..core.dit.conditions import build_camera_map

    device = device or torch.device("cpu")
    cfg = model.config
    b = batch["reference"].shape[0]
    drop = torch.rand(b, generator=generator) < depth_dropout if depth_dropout > 0 else torch.zeros(b, dtype=torch.bool)
    sigma = logit_normal_sigmas(b, generator, logit_mean, logit_std)

    def dev(t):
        return t.to(device)

    ae = model.autoencoder
    with torch.no_grad():
        ref = ae.encode(dev(batch["reference"])).float()
        x01 = ae.encode(dev(batch["target1"])).float()
        x02 = ae.encode(dev(batch["target2"])).float()
        comp = ae.encode(dev(batch["composite"])).float() if lambda_stack > 0 else None
    noise = torch.randn(x01.shape, generator=generator).to(device)
    s = dev(sigma).view(-1, 1, 1, 1)
    xt1 = (1 - s) * x01 + s * noise
    xt2 = (1 - s) * x02 + s * noise
    disp = dev(batch["disparity"])
    cam1 = build_camera_map(disp, dev(batch["focus_disparity1"]), dev(batch["K"]), dev(batch["focus_xy1"]),
                            depth_dropout=dev(drop), coc_scale=cfg.coc_scale)
    cam2 = build_camera_map(disp, dev(batch["focus_disparity2"]), dev(batch["K"]), dev(batch["focus_xy2"]),
                            depth_dropout=dev(drop), coc_scale=cfg.coc_scale)
    # both planes in one forward pass (batch 2B): same cost as two passes, better for small batches
    v = model.velocity(torch.cat([xt1, xt2]), torch.cat([dev(sigma), dev(sigma)]), torch.cat([ref, ref]),
                       torch.cat([cam1, cam2])).float()
    v1, v2 = v[:b], v[b:]
    rf = 0.5 * (F.mse_loss(v1, noise - x01) + F.mse_loss(v2, noise - x02))
    out = {"rf": rf.detach()}
    if lambda_stack > 0:
        m = mask_to_latent(dev(batch["mask"]), x01.shape[-2:])
        st = stacking_loss(predicted_x0(xt1, dev(sigma), v1), predicted_x0(xt2, dev(sigma), v2), m, comp)
        out["stack"] = st.detach()
        out["loss"] = rf + lambda_stack * st
    else:
        out["stack"] = torch.zeros(())
        out["loss"] = rf
    return out
