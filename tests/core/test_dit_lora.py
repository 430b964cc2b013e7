"""Tier a: refocus LoRA files — round trip, diffusers' loader, ComfyUI's key rule, refusals."""
import json

import pytest
import torch
from safetensors import safe_open

from diffcamera.core.dit.conditions import build_camera_map
from diffcamera.core.dit.lora import load_refocus_lora, save_refocus_lora
from diffcamera.core.dit.model import load_model_file, save_refocus_model
from tiny_dit import base_transformer_state_dict, randomise_lora, save_tiny_flux_lora, tiny_flux, toy


def _inputs(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, 64, 64, generator=g)
    disp = torch.rand(1, 1, 64, 64, generator=g)
    ref = model.autoencoder.encode(img)
    noisy = torch.randn(ref.shape, generator=g)
    cam = build_camera_map(disp, 0.4, 24.0, torch.tensor([0.3, 0.6]))
    return noisy, ref, cam


@pytest.mark.parametrize("layout", ["fused", "separate"])
def test_round_trip_identical(tmp_path, layout):
    path, model = save_tiny_flux_lora(str(tmp_path / "a.safetensors"), layout)
    fresh = tiny_flux("fused", lora_rank=0)  # same base weights (seed 0), no LoRA, other layout
    load_refocus_lora(fresh, path)
    assert fresh.config.condition_layout == layout
    noisy, ref, cam = _inputs(model)
    with torch.no_grad():
        a = model.velocity(noisy, torch.tensor([0.6]), ref, cam, 3.5)
        b = fresh.velocity(noisy, torch.tensor([0.6]), ref, cam, 3.5)
        c = tiny_flux(layout).velocity(noisy, torch.tensor([0.6]), ref, cam, 3.5)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4  # the LoRA file changed something
    assert torch.equal(fresh.prompt_embeds, model.prompt_embeds)
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["family"] == "flux1-dev" and side["condition_layout"] == layout


def test_keys_follow_comfyui_flux_rule(tmp_path):
    """Our keys are ``transformer.<diffusers key minus .weight>`` + lora_A/lora_B/alpha for modules that
    ComfyUI's ``flux_to_diffusers`` maps (tier c checks against real ComfyUI)."""
    path, model = save_tiny_flux_lora(str(tmp_path / "a.safetensors"))
    with safe_open(path, "pt") as f:
        keys = list(f.keys())
    mapped_suffixes = ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.net.0.proj", "ff.net.2",
                       "proj_mlp", "proj_out", "x_embedder")
    modules = set()
    for k in keys:
        if k.startswith("diffcamera."):
            continue
        assert k.startswith("transformer.")
        mod, tail = k[len("transformer."):].rsplit(".", 1)[0], k.rsplit(".", 2)
        if k.endswith(".alpha"):
            modules.add(k[len("transformer."):-len(".alpha")])
            continue
        assert k.endswith((".lora_A.weight", ".lora_B.weight"))
        modules.add(k[len("transformer."):].rsplit(".lora_", 1)[0])
    assert modules and all(m.endswith(mapped_suffixes) for m in modules)
    base_names = set(base_transformer_state_dict(model))
    assert all(m + ".weight" in base_names for m in modules)


def test_diffusers_load_lora_reads_our_file(tmp_path):
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders import FluxLoraLoaderMixin
    path, model = save_tiny_flux_lora(str(tmp_path / "a.safetensors"))
    t2 = FluxTransformer2DModel(**model.transformer.config)
    t2.load_state_dict(base_transformer_state_dict(model))
    st, alphas = FluxLoraLoaderMixin.lora_state_dict(path, return_alphas=True)
    x, txt = torch.randn(1, 20, 64), torch.randn(1, 4, 32)
    ids = torch.zeros(20, 3)
    ids[:, 1] = torch.arange(20)
    kw = dict(hidden_states=x, encoder_hidden_states=txt, pooled_projections=torch.randn(1, 16),
              timestep=torch.tensor([0.5]), img_ids=ids, txt_ids=torch.zeros(4, 3), guidance=torch.tensor([3.5]),
              return_dict=False)
    with torch.no_grad():
        before = t2(**kw)[0]
        FluxLoraLoaderMixin.load_lora_into_transformer(st, alphas, t2)
        after, ours = t2(**kw)[0], model.transformer(**kw)[0]
    assert (before - ours).abs().max() > 1e-4
    assert torch.allclose(after, ours, atol=1e-6)


def test_refuses_other_family_naming_both(tmp_path):
    path, _ = save_tiny_flux_lora(str(tmp_path / "a.safetensors"))
    with pytest.raises(ValueError) as err:
        load_refocus_lora(toy(), path)
    assert "flux1-dev" in str(err.value) and "'toy'" in str(err.value)


def test_refuses_layout_change_over_trained_lora(tmp_path):
    path, _ = save_tiny_flux_lora(str(tmp_path / "a.safetensors"), layout="separate")
    with pytest.raises(ValueError) as err:
        load_refocus_lora(randomise_lora(tiny_flux("fused")), path)
    assert "separate" in str(err.value) and "fused" in str(err.value)


def test_missing_lora_file_names_file_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_refocus_lora(tiny_flux(), str(tmp_path / "nope.safetensors"))
    assert "nope.safetensors" in str(err.value) and str(tmp_path) in str(err.value)


def test_toy_whole_model_round_trip(tmp_path):
    model = toy("separate")
    randomise_lora(model)
    path = save_refocus_model(model, str(tmp_path / "toyfolder"))
    back = load_model_file(path)
    noisy, ref, cam = _inputs(model)
    with torch.no_grad():
        assert torch.equal(model.velocity(noisy, torch.tensor([0.5]), ref, cam),
                           back.velocity(noisy, torch.tensor([0.5]), ref, cam))
    with pytest.raises(ValueError, match="no LoRA"):
        save_refocus_lora(model, str(tmp_path / "x.safetensors"))
