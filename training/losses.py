r"""The training objective: the DiT refines the physics estimate; rectified flow on two focus planes, depth
dropout, and the stacking constraint.

Notation (per scene group ``g`` of a batch, all latents ``[C,h,w]`` from the model's autoencoder ``E`` —
FLUX-normalised VAE latents, or the toy's pixel-unshuffle):

* ``R`` the user's input (AIF or focused elsewhere), ``D`` its disparity; targets ``I_1``, ``I_2`` rendered with
  the same bokeh strength ``K`` at focus disparities ``d_1 ≠ d_2``; ``P_i`` the physics refocus of ``R`` to plane
  ``i`` (:mod:`diffcamera.training.simulate`), **the reference the DiT is conditioned on** — exactly what
  :class:`diffcamera.core.pipeline.RefocusPipeline` gives it at inference;
* ``I_12`` the two-plane composite, ``M = 1[|D−d_1| <= |D−d_2|]``, ``M↓ = E.mask_to_latent(M)`` (exact for the
  toy's pixel-unshuffle, an area average for a VAE);
* ``x_0^i = E(I_i)``, one noise ``ε ~ N(0, I)`` and one ``σ`` (:func:`training_sigmas`) **shared by both planes**;
* ``x_σ^i = (1−σ)·S_i + σ·ε``, where the start ``S_i`` is the target ``x_0^i`` (``noise_from="target"``: plain
  rectified flow) or the physics reference ``E(P_i)`` (``"reference"``: the state the sampler starts its refinement
  from at inference, the physics estimate noised to ``denoise``); the model gives the velocity
  ``v̂_i = v_θ(x_σ^i, σ, E(P_i), cam_i)``, where
  ``cam_i`` is :func:`~diffcamera.core.dit.conditions.build_camera_map` for ``(D, d_i, K, focus point i)`` with
  its depth-derived channels blanked for the whole group with probability ``p`` (depth dropout), and the clean
  latent it implies is ``x̂_0^i = x_σ^i − σ·v̂_i``.

The loss of a batch of ``B`` groups (MSE = mean over all elements)::

    L_RF    = 1/2 · Σ_i MSE(v̂_i, ε − x_0^i)       prediction "velocity" (FLUX + LoRA: the pretrained parameterisation)
    L_RF    = 1/2 · Σ_i MSE(x̂_0^i, x_0^i)         prediction "residual" (the toy: x̂_0 = E(P_i) + output),
                                                  and either prediction with noise_from "reference"
    L_stack = MSE( M↓ ⊙ x̂_0^1 + (1 − M↓) ⊙ x̂_0^2 ,  E(I_12) )
    L       = L_RF + λ · L_stack                  (λ = ``lambda_stack``; λ = 0: vanilla)

With ``noise_from="reference"`` the RF term is the ``x̂_0`` loss for both predictions (the velocity that leads from
``x_σ`` to ``x_0`` is ``(x_σ − x_0)/σ``, unbounded as ``σ → 0``). Why a reference start: from a noised *target* the
model learns to read the target back out of ``x_σ``, but at inference ``x_σ`` holds the noised physics estimate, so
what it reads back is physics and its learned residual is noise (measured, the toy on unseen 64² thin-lens cases:
−0.02 / −0.04 dB against physics, 24 / 48 cases); from the noised reference it must learn the correction itself
(the bundled toy config: +0.02 / +0.01 dB, worse than physics by over 0.05 dB on 0 / 2 cases instead of 10 / 19).
The price: ``x_σ`` then holds nothing the condition ``E(P_i)`` does not, so the best ``x̂_0`` is the mean of the
plausible targets given the estimate, the same at every ``σ`` — a deterministic correction, not a sampler (the toy's
output moves by under 1e-3 with the seed). Right for a toy that cannot generate texture anyway; a model meant to
generate the texture the input's blur erased (FLUX + LoRA) keeps ``"target"``.

The residual model's ``x̂_0`` loss is the velocity loss weighted by ``σ²`` (``x̂_0 − x_0 = −σ·(v̂ − v)``): it
measures the error of the image the sampler returns, equally at every noise level, instead of exploding
where ``σ`` is small. Its output layer starts at zero, so before training it returns ``P_i`` exactly: the
refinement starts as the physics estimate and only moves where training finds something to add.

With the layered renderer the composite is the mask blend of the two targets (``simulate``), so for the toy
(``M↓`` exact) ``L_stack = MSE(M↓⊙(x̂_0^1 − x_0^1) + (1−M↓)⊙(x̂_0^2 − x_0^2))``: the error of each plane inside
the region it renders sharp — the stacking constraint becomes an extra weight on the sharp regions, the part
physics recovers worst. With the classical renderer's exact two-plane rendering it is the paper's constraint.

What is the paper's and what is ours: the paper adds a *latent* stacking constraint ("photos of different focus
planes can be linearly blended into a multi-focus image") and depth dropout to the vanilla rectified-flow
objective, conditioned on the user's image. Conditioning on the physics estimate, the residual
parameterisation, the formula above — predicted clean latents, one shared ``ε`` and ``σ``, the nearest-plane
mask, an MSE against the *encoded* composite, equal weighting across ``σ``, whole-group dropout of the depth
channels — are **our reconstruction**; the paper's exact formula, λ, mask and dropout rate are not public.

``L_stack`` costs one extra autoencoder encode (of ``I_12``) and an element-wise blend: the two DiT passes are
needed by ``L_RF`` anyway, so the vanilla loss here also trains on both planes (same compute, same data).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .config import check_noise_from


def training_sigmas(batch: int, generator: torch.Generator, *, sampling: str = "logit_normal", mean: float = 0.0,
                    std: float = 1.0, denoise_max: float = 1.0, image_seq_len: Optional[int] = None) -> torch.Tensor:
    """``[batch]`` noise levels in (0, 1) (float32, CPU).

    A step position ``t`` is drawn — ``sigmoid(N(mean, std²))`` (``sampling="logit_normal"``) or ``U(0, 1)``
    (``"uniform"``) — scaled into ``(0, denoise_max]``, then mapped by FLUX's resolution shift for
    ``image_seq_len`` tokens per model call (:func:`diffcamera.core.dit.sampler.time_shift`, what the sampler applies
    to its own grid; ``None`` = no shift). So training sees the noise levels that sampling at ``denoise ≤
    denoise_max`` visits, shifted the same way.
    """
    if sampling == "logit_normal":
        t = torch.sigmoid(mean + std * torch.randn(batch, generator=generator))
    elif sampling == "uniform":
        t = 1.0 - torch.rand(batch, generator=generator)   # (0, 1]
    else:
        raise ValueError(f"unknown timestep sampling {sampling!r}")
    t = t * float(denoise_max)
    if image_seq_len is None:
        return t.float()
    from ..core.dit.sampler import time_shift
    return time_shift(t, int(image_seq_len))


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
                 depth_dropout: float = 0.0, timesteps: Optional[Dict] = None,
                 device: Optional[torch.device] = None, noise_from: str = "target") -> Dict[str, torch.Tensor]:
    """The loss of the module docstring for one micro-batch.

    Args:
        model: a :class:`~diffcamera.core.dit.model.RefocusModel` (``autoencoder``, ``config``, ``velocity``).
        batch: a :mod:`diffcamera.training.dataset` batch of ``B`` groups (CPU tensors).
        generator: CPU generator for ``ε``, ``σ`` and the dropout draw (the trainer seeds it per step).
        timesteps: keyword arguments of :func:`training_sigmas` (``sampling``, ``mean``, ``std``, ``denoise_max``,
            ``resolution_shift``: apply FLUX's shift for this batch's tokens per call, default ``True``).
        noise_from: ``"target"`` or ``"reference"``: what the noisy sample ``x_σ`` is built from (module docstring).
    Returns:
        dict with ``loss`` (differentiable), ``rf``, ``stack`` (detached floats as tensors).
    """
    from ..core.dit.conditions import build_camera_map

    check_noise_from(noise_from)   # before any encoding
    device = device or torch.device("cpu")
    cfg = model.config
    b = batch["reference"].shape[0]
    drop = torch.rand(b, generator=generator) < depth_dropout if depth_dropout > 0 else torch.zeros(b, dtype=torch.bool)

    def dev(t):
        return t.to(device)

    ae = model.autoencoder
    with torch.no_grad():
        ref1 = ae.encode(dev(batch["physics1"])).float()
        ref2 = ae.encode(dev(batch["physics2"])).float()
        x01 = ae.encode(dev(batch["target1"])).float()
        x02 = ae.encode(dev(batch["target2"])).float()
        comp = ae.encode(dev(batch["composite"])).float() if lambda_stack > 0 else None
    ts = dict(timesteps or {})
    shift = ts.pop("resolution_shift", True)
    tokens = (x01.shape[-2] // 2) * (x01.shape[-1] // 2)
    sigma = training_sigmas(b, generator, image_seq_len=tokens if shift else None, **ts)
    noise = torch.randn(x01.shape, generator=generator).to(device)
    s = dev(sigma).view(-1, 1, 1, 1)
    start1, start2 = (ref1, ref2) if noise_from == "reference" else (x01, x02)
    xt1 = (1 - s) * start1 + s * noise
    xt2 = (1 - s) * start2 + s * noise
    disp = dev(batch["disparity"])
    cam1 = build_camera_map(disp, dev(batch["focus_disparity1"]), dev(batch["K"]), dev(batch["focus_xy1"]),
                            depth_dropout=dev(drop), coc_scale=cfg.coc_scale)
    cam2 = build_camera_map(disp, dev(batch["focus_disparity2"]), dev(batch["K"]), dev(batch["focus_xy2"]),
                            depth_dropout=dev(drop), coc_scale=cfg.coc_scale)
    # both planes in one forward pass (batch 2B): same cost as two passes, better for small batches
    v = model.velocity(torch.cat([xt1, xt2]), torch.cat([dev(sigma), dev(sigma)]), torch.cat([ref1, ref2]),
                       torch.cat([cam1, cam2])).float()
    v1, v2 = v[:b], v[b:]
    x0_hat1, x0_hat2 = predicted_x0(xt1, dev(sigma), v1), predicted_x0(xt2, dev(sigma), v2)
    if cfg.prediction == "residual" or noise_from == "reference":
        rf = 0.5 * (F.mse_loss(x0_hat1, x01) + F.mse_loss(x0_hat2, x02))
    else:
        rf = 0.5 * (F.mse_loss(v1, noise - x01) + F.mse_loss(v2, noise - x02))
    out = {"rf": rf.detach()}
    if lambda_stack > 0:
        m = ae.mask_to_latent(dev(batch["mask"]))
        st = stacking_loss(x0_hat1, x0_hat2, m, comp)
        out["stack"] = st.detach()
        out["loss"] = rf + lambda_stack * st
    else:
        out["stack"] = torch.zeros(())
        out["loss"] = rf
    return out
