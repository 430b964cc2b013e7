"""Tier a: loading refocus models from local files (toy bundle, diffusers folders, ComfyUI single files)."""
import os

import pytest
import torch

from diffcamera.core.dit.conditions import build_camera_map
from diffcamera.core.dit.loading import load_refocus_model
from diffcamera.core.dit.memory import is_oom, oom_message, resolve_dtype
from tiny_dit import save_tiny_flux_single_files, save_toy_model


def _velocity(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, 64, 64, generator=g)
    disp = torch.rand(1, 1, 64, 64, generator=g)
    with torch.no_grad():
        ref = model.autoencoder.encode(img)
        noisy = torch.randn(ref.shape, generator=g)
        cam = build_camera_map(disp, 0.4, 24.0, torch.tensor([0.3, 0.6]))
        return model.velocity(noisy, torch.tensor([0.6]), ref, cam, 3.5)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    return save_tiny_flux_single_files(str(d))


def test_diffusers_folders_plus_lora_give_the_same_model(tiny_files):
    paths, model = tiny_files
    loaded = load_refocus_model(paths["transformer"], paths["vae"], paths["lora"])
    assert loaded.config.family == "flux1-dev" and loaded.config.lora_rank == 4
    from diffcamera.core.dit.lora import lora_layers, unmerge_lora
    assert lora_layers(loaded) and all(m.merged for m in lora_layers(loaded))  # inference: LoRA folded in
    assert torch.allclose(_velocity(loaded), _velocity(model), atol=1e-5)
    unmerge_lora(loaded)
    assert torch.allclose(_velocity(loaded), _velocity(model), atol=1e-6)


def test_single_file_base_in_comfyui_layout(tiny_files):
    paths, model = tiny_files
    loaded = load_refocus_model(paths["single_file"], paths["vae"], paths["lora"], config_dir=paths["config_dir"])
    assert torch.allclose(_velocity(loaded), _velocity(model), atol=1e-6)


def test_toy_bundle_folder(tmp_path):
    path, model = save_toy_model(str(tmp_path / "toy_refocus"))
    assert path.endswith(os.path.join("toy_refocus", "model.safetensors"))
    loaded = load_refocus_model(str(tmp_path / "toy_refocus"))
    assert loaded.config.family == "toy"
    v = _velocity(model)
    assert torch.equal(_velocity(loaded), v)


def test_fp8_storage_runs_close_to_fp32(tiny_files):
    paths, model = tiny_files
    loaded = load_refocus_model(paths["transformer"], paths["vae"], paths["lora"], storage="fp8_e4m3fn")
    w = loaded.transformer.transformer_blocks[0].ff.net[2].base_layer.weight
    assert w.dtype == torch.float8_e4m3fn
    ref = _velocity(model)
    err = (_velocity(loaded) - ref).abs().mean() / ref.abs().mean()
    assert 0 < err < 0.1


@pytest.mark.parametrize("offload", ["group", "leaf"])
def test_group_offloading_gives_the_same_velocity(tiny_files, offload):
    """diffusers group offloading hooks (onload = offload = CPU here; CUDA streams on a GPU)."""
    paths, model = tiny_files
    loaded = load_refocus_model(paths["transformer"], paths["vae"], paths["lora"], offload=offload)
    assert loaded.offload_mode == offload
    assert any(hasattr(m, "_diffusers_hook") for m in loaded.transformer.modules())
    assert torch.allclose(_velocity(loaded), _velocity(model), atol=1e-5)


@pytest.mark.parametrize("which", ["base", "vae", "lora"])
def test_missing_files_name_file_and_folder(tiny_files, tmp_path, which):
    paths, _ = tiny_files
    args = dict(base=paths["transformer"], vae=paths["vae"], lora=paths["lora"])
    args[which] = str(tmp_path / f"missing_{which}.safetensors")
    with pytest.raises(FileNotFoundError) as err:
        load_refocus_model(args["base"], args["vae"], args["lora"])
    assert f"missing_{which}.safetensors" in str(err.value) and str(tmp_path) in str(err.value)


def test_flux_base_without_vae_says_where_to_put_it(tiny_files):
    paths, _ = tiny_files
    with pytest.raises(FileNotFoundError, match="models/vae"):
        load_refocus_model(paths["transformer"])


def test_missing_toy_bundle_message(tmp_path, monkeypatch):
    import diffcamera.core.dit.loading as loading
    monkeypatch.setattr(loading, "TOY_BUNDLE", str(tmp_path / "toy_refocus"))
    monkeypatch.setattr(loading.toy_bundle_file, "__defaults__", (str(tmp_path / "toy_refocus"),))
    with pytest.raises(FileNotFoundError, match="model.safetensors' not found in"):
        load_refocus_model("toy")


def test_memory_helpers():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_oom(ValueError("x"))
    assert "fp8_e4m3fn" in oom_message("default", "none")
    assert "'group'" in oom_message("fp8_e4m3fn", "none")
    assert "'leaf'" in oom_message("fp8_e4m3fn", "group")
