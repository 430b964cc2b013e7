"""Tier a: the conditions as Kontext reference latents for an external FLUX (ComfyUI's MODEL path)."""
import pytest
import torch

from diffcamera.core.dit.conditions import build_camera_map
from diffcamera.core.dit.external import (ExternalRefocusModel, diffusers_velocity_fn, load_condition_bundle,
                                          reference_latents)
from diffcamera.core.dit.sampler import refocus
from diffcamera.core.values import Focus
from tiny_dit import randomise_lora, save_tiny_flux_bundle, tiny_flux


def _inputs(model):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 64, 48, generator=g)
    disp = torch.rand(1, 1, 64, 48, generator=g)
    ref = model.autoencoder.encode(img)
    return img, disp, ref, torch.randn(ref.shape, generator=g), build_camera_map(disp, 0.4, 24.0, torch.tensor([.3, .6]))


@pytest.mark.parametrize("layout, n_refs", [("fused", 1), ("separate", 2)])
def test_reference_latents_reproduce_our_sequence(layout, n_refs):
    model = randomise_lora(tiny_flux(layout))
    img, disp, ref, noisy, cam = _inputs(model)
    refs = reference_latents(model, ref, cam)
    assert len(refs) == n_refs and refs[0].shape == ref.shape
    ext = ExternalRefocusModel(model, diffusers_velocity_fn(model.transformer))
    with torch.no_grad():
        ours = model.velocity(noisy, torch.tensor([0.4]), ref, cam, 3.5)
        theirs = ext.velocity(noisy, torch.tensor([0.4]), ref, cam, 3.5)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_sampler_runs_on_an_external_transformer(tmp_path):
    paths, model = save_tiny_flux_bundle(str(tmp_path))
    bundle = load_condition_bundle(paths["lora"], paths["vae"])
    assert bundle.transformer is None and bundle.lora_tensors
    assert all(k.startswith("transformer.") for k in bundle.lora_tensors)
    assert torch.equal(bundle.prompt_embeds, model.prompt_embeds)
    ext = ExternalRefocusModel(bundle, diffusers_velocity_fn(model.transformer))  # stands in for ComfyUI's FLUX
    img, disp, *_ = _inputs(model)
    focus = Focus.from_disparity(0.4)
    with torch.no_grad():
        a = refocus(model, img, disp, focus, 12.0, steps=2, guidance=3.5)
        b = refocus(ext, img, disp, focus, 12.0, steps=2, guidance=3.5)
    assert torch.allclose(a, b, atol=1e-5)


def test_toy_lora_has_no_comfy_counterpart(tmp_path):
    from diffcamera.core.dit.lora import save_refocus_lora
    from tiny_dit import toy
    m = toy(lora_rank=2)
    path = save_refocus_lora(m, str(tmp_path / "t.safetensors"))
    with pytest.raises(ValueError, match="toy"):
        load_condition_bundle(path, str(tmp_path))
