"""Tier a: camera map, packing, and that conditions really reach the DiT (tiny random models)."""
import pytest
import torch

from diffcamera.core.dit.conditions import CAMERA_CHANNELS, build_camera_map
from diffcamera.core.dit.packing import pack_latents, token_ids, unpack_latents
from tiny_dit import randomise_lora, tiny_flux, toy


def _scene(b=1, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(b, 3, size, size, generator=g)
    disp = torch.zeros(b, 1, size, size)
    disp[..., size // 2:, :] = 0.8
    disp[..., : size // 2, :] = 0.2
    return img, disp


def test_pack_roundtrip_and_order():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    t = pack_latents(x)
    assert t.shape == (2, 6, 12)
    # token 0 = channel-major 2x2 block at the top-left
    assert torch.equal(t[0, 0, :4], torch.tensor([x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1]]))
    assert torch.equal(unpack_latents(t, 4, 6), x)
    ids = token_ids(2, 3, index=2)
    assert ids.shape == (6, 3) and torch.equal(ids[4], torch.tensor([2.0, 1.0, 1.0]))


def test_camera_map_channels_and_dropout():
    _, disp = _scene(2)
    cam = build_camera_map(disp, torch.tensor([0.2, 0.8]), torch.tensor([32.0, 16.0]),
                           torch.tensor([[0.5, 0.25], [0.5, 0.75]]))
    assert cam.shape == (2, CAMERA_CHANNELS, 64, 64)
    # sample 0 focuses on the top half (d=0.2): zero CoC there, K·0.6/32 below
    assert cam[0, 0, :32].abs().max() == 0 and torch.allclose(cam[0, 0, 40], torch.full((64,), 32 * 0.6 / 32))
    assert torch.allclose(cam[1, 0, 0], torch.full((64,), 16 * -0.6 / 32))
    assert torch.allclose(cam[:, 1], cam[:, 0].abs())
    r, c = divmod(int(cam[0, 3].argmax()), 64)  # mark at (x=.5, y=.25) -> pixel corner (16, 32)
    assert abs(r - 15.5) <= 0.5 and abs(c - 31.5) <= 0.5 and cam[0, 3].max() > 0.8 and cam[0, 3, 60, 5] < 1e-3
    assert torch.allclose(cam[1, 4], torch.full((64, 64), 0.5))
    drop = build_camera_map(disp, torch.tensor([0.2, 0.8]), torch.tensor([32.0, 16.0]),
                            torch.tensor([[0.5, 0.25], [0.5, 0.75]]), depth_dropout=torch.tensor([True, False]))
    assert drop[0, [0, 1, 2, 5]].abs().max() == 0
    assert torch.equal(drop[0, [3, 4]], cam[0, [3, 4]]) and torch.equal(drop[1], cam[1])


@pytest.mark.parametrize("family, size, level, bound", [("toy", 64, 256.0, 2.0), ("flux1-kontext-dev", 512, 96.0, 1.5)])
def test_camera_map_ranges_are_the_documented_ones(family, size, level, bound):
    """The CoC and strength channels span ±K_max/coc_scale (conditions docstring): ±2 for the toy at its highest
    training level, ±1.5 for FLUX at 512² and level 96; a real scene (disparity 0..1, focus at an extreme) reaches
    the bound, a mid-focus one stays within half of it."""
    from diffcamera.core.conventions import level_to_K
    from diffcamera.core.dit.toy import flux_config, toy_config
    from diffcamera.evaluation.scenes import make_scene
    cfg = toy_config() if family == "toy" else flux_config(family)
    d = make_scene(2, size=64, kind="ground").disparity.float()
    d = (d - d.min()) / (d.max() - d.min())
    K = level_to_K(level, size, size)
    far = build_camera_map(d, 0.0, K, torch.tensor([0.5, 0.5]), coc_scale=cfg.coc_scale)
    mid = build_camera_map(d, 0.5, K, torch.tensor([0.5, 0.5]), coc_scale=cfg.coc_scale)
    assert float(far[:, 0].abs().max()) == pytest.approx(bound, rel=1e-5)
    assert float(far[:, 4].max()) == pytest.approx(bound, rel=1e-5)
    assert float(mid[:, 0].abs().max()) <= bound / 2 + 1e-5


def test_camera_map_is_local_under_crop():
    """Per-pixel conditions: the map of a crop equals the crop of the map (except the focus mark's normalisation)."""
    _, disp = _scene(1, 64)
    full = build_camera_map(disp, 0.2, 20.0, torch.tensor([0.5, 0.5]))
    crop = build_camera_map(disp[..., 16:48, 8:40], 0.2, 20.0, torch.tensor([0.5, 0.5]))
    assert torch.equal(full[:, [0, 1, 2, 4], 16:48, 8:40], crop[:, [0, 1, 2, 4]])


@pytest.mark.parametrize("layout", ["fused", "separate"])
def test_conditions_reach_the_velocity(layout):
    model = randomise_lora(tiny_flux(layout))
    img, disp = _scene()
    ref = model.autoencoder.encode(img)
    noisy = torch.randn_like(ref)
    cam = build_camera_map(disp, 0.2, 20.0, torch.tensor([0.5, 0.5]))
    cam2 = build_camera_map(disp, 0.8, 20.0, torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        v = model.velocity(noisy, torch.tensor([0.7]), ref, cam, guidance=3.5)
        v_cam = model.velocity(noisy, torch.tensor([0.7]), ref, cam2, guidance=3.5)
        v_ref = model.velocity(noisy, torch.tensor([0.7]), ref.flip(-1), cam, guidance=3.5)
        v_again = model.velocity(noisy, torch.tensor([0.7]), ref, cam, guidance=3.5)
    assert v.shape == ref.shape
    assert torch.equal(v, v_again)
    assert (v - v_cam).abs().max() > 1e-4
    assert (v - v_ref).abs().max() > 1e-4


def test_zero_init_equals_plain_kontext_call():
    """Fresh LoRA (B = 0) + zero camera projection = the base FLUX called with one Kontext reference, bit for bit."""
    model = tiny_flux("fused")
    img, disp = _scene()
    ref = model.autoencoder.encode(img)
    noisy = torch.randn_like(ref)
    cam = build_camera_map(disp, 0.2, 20.0, torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        v = model.velocity(noisy, torch.tensor([0.3]), ref, cam, guidance=2.5)
        from diffusers import FluxTransformer2DModel
        from tiny_dit import base_transformer_state_dict
        base = FluxTransformer2DModel(**model.transformer.config)
        base.load_state_dict(base_transformer_state_dict(model))
        n = 16
        hidden = torch.cat([pack_latents(noisy), pack_latents(ref)], 1)
        ids = torch.cat([token_ids(4, 4, 0), token_ids(4, 4, 1)])
        out = base(hidden_states=hidden, encoder_hidden_states=model.prompt_embeds,
                   pooled_projections=model.pooled_prompt_embeds, timestep=torch.tensor([0.3]), img_ids=ids,
                   txt_ids=torch.zeros(model.prompt_embeds.shape[1], 3), guidance=torch.tensor([2.5]),
                   return_dict=False)[0]
    assert torch.equal(v, unpack_latents(out[:, :n], 8, 8))


def test_fused_reference_is_one_kontext_latent():
    model = randomise_lora(tiny_flux("fused"))
    img, disp = _scene()
    ref = model.autoencoder.encode(img)
    cam = build_camera_map(disp, 0.2, 20.0, torch.tensor([0.5, 0.5]))
    with torch.no_grad():
        fused = model.fused_reference_latents(ref, cam)
        assert not torch.equal(fused, ref)
        model.camera_encoder.fc2.weight.zero_()
        model.camera_encoder.fc2.bias.zero_()
        assert torch.equal(model.fused_reference_latents(ref, cam), ref)


def test_toy_model_shapes_and_trainable_parameters():
    model = toy()
    img, disp = _scene(2)
    ref = model.autoencoder.encode(img)
    assert ref.shape == (2, 48, 16, 16)
    assert torch.equal(model.autoencoder.decode(ref), img)  # exactly invertible
    names = {id(p) for p in model.trainable_parameters()}
    assert all(id(p) in names for p in model.transformer.parameters())
    cam = build_camera_map(disp, 0.5, 10.0, torch.tensor([0.5, 0.5]))
    v = model.velocity(torch.randn_like(ref), torch.rand(2), ref, cam)
    loss = v.square().mean()
    loss.backward()
    assert model.transformer.x_embedder.weight.grad is not None


def test_lora_model_trains_only_adapter_and_camera():
    model = tiny_flux()
    params = list(model.trainable_parameters())
    assert all(p.requires_grad for p in params)
    n_lora = sum(p.numel() for n, p in model.transformer.named_parameters() if "lora_" in n)
    assert sum(p.numel() for p in params) == n_lora + sum(p.numel() for p in model.camera_encoder.parameters())
    assert not any(p.requires_grad for n, p in model.transformer.named_parameters() if "lora_" not in n)


def test_mismatched_shapes_raise():
    model = tiny_flux()
    img, disp = _scene()
    ref = model.autoencoder.encode(img)
    cam = build_camera_map(disp[..., :48, :], 0.2, 20.0, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="camera map"):
        model.velocity(torch.randn_like(ref), torch.tensor([0.5]), ref, cam)


def test_flux_autoencoder_tiles_large_images_and_previews():
    """diffusers' tiled VAE path is on (it engages above ``tile_sample_min_size``); the cheap preview is fitted
    on the reference and maps latents to RGB in 0..1."""
    model = tiny_flux()
    ae = model.autoencoder
    vae = ae.vae
    assert vae.use_tiling
    img, _ = _scene(1, 64)
    whole = ae.encode(img)
    calls = []
    orig = vae._tiled_encode if hasattr(vae, "_tiled_encode") else vae.tiled_encode
    name = "_tiled_encode" if hasattr(vae, "_tiled_encode") else "tiled_encode"

    def spy(*a, **k):
        calls.append(1)
        return orig(*a, **k)

    setattr(vae, name, spy)
    vae.tile_sample_min_size, vae.tile_latent_min_size = 32, 4
    tiled = ae.encode(img)
    assert calls and tiled.shape == whole.shape and torch.isfinite(tiled).all()
    ae.fit_preview(whole, img)
    pv = ae.preview(whole)
    assert pv.shape == (1, 3, 8, 8) and 0 <= pv.min() and pv.max() <= 1
