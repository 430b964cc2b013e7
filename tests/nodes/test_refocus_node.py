"""DiffCamera_ModelLoader + DiffCamera_Refocus in the fake ComfyUI: whole graph, memory, progress, bad input."""
import pytest
import torch

import comfy.model_management as mm
import comfy.utils as cu
from fake_executor import run_prompt

from diffcamera.runtime import io
from diffcamera.core.conventions import level_to_K
from diffcamera.core.pipeline import RefocusPipeline
from diffcamera.core.values import DepthMap, Focus
from diffcamera.nodes import refocus as N
from diffcamera.nodes.common import Depth, FocusType
from tiny_dit import save_tiny_flux_bundle, save_toy_model

VALUES = {}


class _Src(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="T_RefocusSrc", display_name="T", category="test", description="d",
                         inputs=[io.String.Input("key", tooltip="t")],
                         outputs=[io.Image.Output(), Depth.Output(), FocusType.Output()])

    @classmethod
    def execute(cls, key):
        v = VALUES[key]
        return io.NodeOutput(v["image"], v["depth"], v["focus"])


CLASSES = {"T_RefocusSrc": _Src, "DiffCamera_ModelLoader": N.ModelLoader, "DiffCamera_Refocus": N.Refocus}


def _values(key="s", h=32, w=48, depth_hw=None):
    g = torch.Generator().manual_seed(0)
    dh, dw = depth_hw or (h, w)
    disp = torch.linspace(0, 1, dw).view(1, 1, 1, dw).expand(1, 1, dh, dw).contiguous()
    VALUES[key] = {"image": torch.rand(1, h, w, 3, generator=g), "depth": DepthMap(disp, "test"),
                   "focus": Focus(torch.tensor([0.25]), torch.tensor([0.5]), torch.tensor([0.25]), ["point"])}
    return VALUES[key]


def _prompt(base, vae=N.AUTO_VAE, lora=N.NO_LORA, key="s", **refocus):
    inputs = {"diffcamera_model": ["1", 0], "image": ["0", 0], "depth": ["0", 1], "focus": ["0", 2],
              "bokeh_level": 16.0, "steps": 2, "seed": 3, "guidance": 3.5, "denoise": 1.0, "tiling": "auto",
              "tile_size": 0}
    inputs.update(refocus)
    return {"0": {"class_type": "T_RefocusSrc", "inputs": {"key": key}},
            "1": {"class_type": "DiffCamera_ModelLoader",
                  "inputs": {"base": base, "vae": vae, "lora": lora, "family": "auto", "dtype": "auto",
                             "weight_storage": "default", "offload": "none"}},
            "2": {"class_type": "DiffCamera_Refocus", "inputs": inputs}}


@pytest.fixture
def toy_file(comfy_models_dir):
    path, model = save_toy_model(str(comfy_models_dir / "diffcamera" / "toy_test.safetensors"))
    return path, model


@pytest.fixture
def tiny_bundle(comfy_models_dir):
    return save_tiny_flux_bundle(str(comfy_models_dir))


def test_toy_graph_end_to_end_matches_core(toy_file):
    v = _values()
    mm.load_calls.clear()
    cu.updates.clear()
    out = run_prompt(_prompt("diffcamera/toy_test.safetensors"), CLASSES)
    handle = out["1"].result[0]
    image = out["2"].result[0]
    assert image.shape == (1, 32, 48, 3) and image.dtype == torch.float32
    assert any(handle in call for call in mm.load_calls)  # loaded through model management
    # one bar over the physics solve and the two denoising steps, ending full
    total = RefocusPipeline().settings.iterations(1) + 2
    assert [u[1:] for u in cu.updates][-2:] == [(total - 1, total), (total, total)]
    expected = RefocusPipeline(toy_file[1])(v["image"].permute(0, 3, 1, 2), v["depth"].disparity, v["focus"],
                                            level_to_K(16.0, 32, 48), steps=2, seed=3, guidance=3.5, denoise=1.0)
    assert torch.equal(image, expected.image.permute(0, 2, 3, 1))
    assert torch.equal(out["2"].result[1], expected.all_in_focus.permute(0, 2, 3, 1))


def test_tiny_flux_base_vae_and_lora_from_comfy_folders(tiny_bundle):
    _values()
    choices = N.ModelLoader.INPUT_TYPES()["required"]
    assert "diffusion_models/tiny-flux" in choices["base"][1]["options"]
    assert not any("diffusion_pytorch_model" in o for o in choices["base"][1]["options"] + choices["vae"][1]["options"])
    assert "loras/tiny_refocus.safetensors" in choices["lora"][1]["options"]
    out = run_prompt(_prompt("diffusion_models/tiny-flux", "vae/tiny-flux-vae", "loras/tiny_refocus.safetensors"),
                     CLASSES)
    model = out["1"].result[0].model
    assert model.config.family == "flux1-dev" and model.config.lora_rank == 4
    assert out["2"].result[0].shape == (1, 32, 48, 3)


def test_seed_determinism_and_conditioning_changes_output(toy_file):
    _values()
    a = run_prompt(_prompt("diffcamera/toy_test.safetensors"), CLASSES)["2"].result[0]
    b = run_prompt(_prompt("diffcamera/toy_test.safetensors"), CLASSES)["2"].result[0]
    assert torch.equal(a, b)
    handle = N.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]
    model = handle.model
    before = model.prompt_embeds.clone()
    v = VALUES["s"]
    cond = [[torch.randn(1, 7, 64), {"pooled_output": torch.randn(1, 64)}]]
    kw = dict(bokeh_level=16.0, steps=2, seed=3, guidance=3.5, denoise=1.0)
    c = N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], conditioning=cond, **kw).result[0]
    d = N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], **kw).result[0]
    assert torch.equal(model.prompt_embeds, before)  # the prompt is passed per call, never stored
    assert torch.equal(d, a) and (c - d).abs().max() > 1e-4


def test_cancel_stops_after_one_step(toy_file):
    """Cancel pressed during the first model call: no further model call runs (and none at all when it was
    pressed before the node started)."""
    v = _values()
    handle = N.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]
    calls = []
    orig = handle.model.velocity_from_tokens

    def counting(*a, **k):
        calls.append(1)
        out = orig(*a, **k)
        mm.interrupt_current_processing(True)  # the user presses Cancel while the model runs
        return out

    handle.model.velocity_from_tokens = counting
    try:
        with pytest.raises(mm.InterruptProcessingException):
            N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=5)
        assert len(calls) == 1
        mm.interrupt_current_processing(True)
        with pytest.raises(mm.InterruptProcessingException):
            N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=5)
        assert len(calls) == 1
    finally:
        mm.interrupt_current_processing(False)


def test_oom_unloads_and_names_the_next_setting(toy_file, monkeypatch):
    v = _values()
    handle = N.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]
    import diffcamera.core.dit.sampler as sampler

    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(sampler, "refocus", boom)
    with pytest.raises(RuntimeError) as err:
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=2)
    assert "fp8_e4m3fn" in str(err.value) and "unloaded" in str(err.value)
    assert mm.current_loaded_models == []


def test_depth_of_another_size_is_refused_before_loading(toy_file):
    v = _values(depth_hw=(16, 48))
    handle = N.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]
    mm.load_calls.clear()
    with pytest.raises(ValueError, match="^depth is 48×16 px but the image is 48×32"):
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=2)
    assert mm.load_calls == []


def test_tiny_image_and_steps_are_refused(toy_file):
    handle = N.ModelLoader.execute("diffcamera/toy_test.safetensors").result[0]
    v = _values(h=4, w=4)
    with pytest.raises(ValueError, match="smaller than one latent token"):
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=2)
    v = _values()
    with pytest.raises(ValueError, match="steps"):
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=0)


def test_missing_files_and_foreign_lora(tiny_bundle, toy_file, comfy_models_dir):
    # a file that is not (or no longer) listed is not among the node's choices: refused, naming the input
    with pytest.raises(ValueError, match=r"^base: 'diffcamera/gone.safetensors' is not one of the choices \('physics"):
        N.ModelLoader.execute("diffcamera/gone.safetensors")
    with pytest.raises(ValueError, match="^vae: 'vae/none.safetensors' is not one of the choices"):
        N.ModelLoader.execute("diffusion_models/tiny-flux", vae="vae/none.safetensors")
    with pytest.raises(ValueError) as err:
        N.ModelLoader.execute("diffcamera/toy_test.safetensors", lora="loras/tiny_refocus.safetensors")
    assert "flux1-dev" in str(err.value) and "'toy'" in str(err.value)


def test_weight_free_physics_is_the_default_and_the_toy_next():
    assert N.base_choices()[:2] == [N.PHYSICS, N.TOY]
    assert N.ModelLoader.INPUT_TYPES()["required"]["base"][1]["default"] == N.PHYSICS


def test_external_flux_model_path_wiring(tiny_bundle, monkeypatch):
    """With base = ComfyUI MODEL, the loader keeps only conditions + VAE and the refocus node runs the MODEL given
    to flux_model (stood in for here by our own tiny transformer; tier c checks real ComfyUI) with our LoRA."""
    from diffcamera import runtime as rt
    from diffcamera.core.dit.external import diffusers_velocity_fn
    paths, model = tiny_bundle
    v = _values()
    seen = {}

    class FakePatcher:
        load_device = torch.device("cpu")
        offload_device = torch.device("cpu")

        def __init__(self, m):
            self.model = m

    def fake_fn(mp, lora, strength=1.0):
        seen["lora"] = lora
        return FakePatcher(mp.model), diffusers_velocity_fn(model.transformer)

    monkeypatch.setattr(rt.host, "flux_velocity_fn", fake_fn)
    monkeypatch.setattr(rt.host, "is_comfy_flux_model", lambda obj: True)
    handle = N.ModelLoader.execute(N.EXTERNAL, vae="vae/tiny-flux-vae", lora="loras/tiny_refocus.safetensors").result[0]
    assert handle.model.transformer is None
    with pytest.raises(ValueError, match="flux_model"):
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], steps=2)
    kw = dict(bokeh_level=16.0, steps=2, seed=3, guidance=3.5, denoise=1.0)
    ext = N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], flux_model=FakePatcher(torch.nn.Linear(1, 1)), **kw)
    assert set(seen["lora"]) and all(k.startswith("transformer.") for k in seen["lora"])
    own = N.ModelLoader.execute("diffusion_models/tiny-flux", vae="vae/tiny-flux-vae",
                                lora="loras/tiny_refocus.safetensors").result[0]
    ref = N.Refocus.execute(own, v["image"], v["depth"], v["focus"], **kw)
    assert torch.allclose(ext.result[0], ref.result[0], atol=1e-4)
    with pytest.raises(ValueError, match="lora/vae"):
        N.ModelLoader.execute(N.EXTERNAL)


def test_physics_refocus_follows_a_per_frame_focus():
    """A FOCUS batch (RackFocus's output: one focus per frame) through DiffCameraRefocus with physics: frame i is the
    core's refocus of frame i to focus i, and frames with different focus differ."""
    from diffcamera.core.physics import refocus_physics
    v = _values("frames")
    v["image"] = v["image"].expand(3, -1, -1, -1).contiguous()
    v["focus"] = Focus(torch.tensor([0.2, 0.5, 0.8]), torch.tensor([0.5] * 3), torch.tensor([0.2, 0.5, 0.8]),
                       ["point"] * 3)
    out = run_prompt(_prompt(N.PHYSICS, key="frames", input_level=0.0), CLASSES)["2"].result[0]
    assert out.shape == (3, 32, 48, 3)
    K = level_to_K(16.0, 32, 48)
    for i, d in enumerate((0.2, 0.5, 0.8)):
        one = refocus_physics(v["image"][:1].permute(0, 3, 1, 2), v["depth"].disparity, d, K, input_K=0.0,
                              input_focus_disparity=0.5)
        assert torch.allclose(out[i], one.image[0].permute(1, 2, 0), atol=1e-5)
    assert float((out[0] - out[2]).abs().mean()) > 1e-3


@pytest.mark.parametrize("bad, match", [
    (dict(input_level=float("nan")), "input_level"),
    (dict(input_level=1e9), "input_level"),
    (dict(input_focus={"x": 0.5}), "input_focus"),
    (dict(input_focus=Focus(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), torch.tensor([0.2, 0.3]),
                            ["point", "point"])), "input"),
])
def test_bad_input_blur_values_are_refused_before_work(bad, match):
    """The optional input-blur inputs are untrusted like every other: NaN, out of range, a wrong type or a batch
    that does not match the image are refused with the input's name."""
    handle = N.ModelLoader.execute(N.PHYSICS).result[0]
    v = _values()
    with pytest.raises(Exception, match=match):
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"], **bad)


def test_physics_refocus_that_does_not_fit_memory_is_refused_before_work(monkeypatch):
    """The physics solve's estimate (``RefocusPipeline.physics_bytes``) is compared with the free memory before any
    work: with less free than it needs, the node refuses naming the fix; with enough, it runs."""
    from diffcamera.nodes.validation import NotEnoughMemory
    handle = N.ModelLoader.execute(N.PHYSICS).result[0]
    v = _values()
    need = RefocusPipeline().physics_bytes(v["image"].permute(0, 3, 1, 2), level_to_K(16.0, 32, 48))
    assert need > 32 * 48 * 3 * 4 * 32
    monkeypatch.setenv("DIFFCAMERA_MEMORY_LIMIT_MB", str(max(1, need // 2**20 // 2)))
    calls = []
    monkeypatch.setattr("diffcamera.core.pipeline.refocus_physics", lambda *a, **k: calls.append(1))
    with pytest.raises(NotEnoughMemory, match="DiffCameraRefocus.*smaller image"):
        N.Refocus.execute(handle, v["image"], v["depth"], v["focus"])
    assert calls == []
    monkeypatch.undo()  # real free memory, real solver
    assert N.Refocus.execute(handle, v["image"], v["depth"], v["focus"]).result[0].shape == (1, 32, 48, 3)
