"""Refocus nodes: choose the refocus model, and refocus an image with it.

``DiffCamera_ModelLoader``: ``physics (no model)`` (the default, weight-free), or a DiT that refines the physics
estimate: the bundled toy model, a whole model in ``models/diffcamera``, or a FLUX.1 Kontext [dev] / [dev]
transformer from ComfyUI's ``models/diffusion_models`` with its VAE (``models/vae``) and a DiffCamera LoRA
(``models/loras`` or ``models/diffcamera``), wrapped in a ``ModelPatcher`` so ComfyUI's model management
accounts for it.

``DiffCamera_Refocus`` (DiffCameraRefocus): one call of :class:`diffcamera.core.pipeline.RefocusPipeline`
(physics, then the optional DiT refinement), with a progress bar, previews, Cancel, the all-in-focus estimate as
a second output and the input blur it used (given or estimated) in its text preview.
"""
from __future__ import annotations

import os

from .. import runtime as rt
from ..core.conventions import comfy_to_core, core_to_comfy, level_to_K
from ..core.dit import memory as dit_memory
from ..core.pipeline import PhysicsOnly
from ..core.safe_paths import PathRefused
from ..runtime import io, ui
from .common import CATEGORY, Depth, DiffCameraModel, FocusType, node_progress
from .validation import checked_inputs, require_memory

PHYSICS = "physics (no model)"
TOY = "toy (bundled)"
EXTERNAL = "(ComfyUI MODEL: connect it to DiffCameraRefocus)"
AUTO_VAE = "auto (from the base folder)"
NO_LORA = "none"
SEP = "/"


def _files(folder: str, exts=(".safetensors", ".sft")) -> list:
    return [f for f in rt.list_model_files(folder) if f.lower().endswith(exts)]


def _dirs(folder: str) -> list:
    return rt.list_model_dirs(folder, "config.json")


def _folders_and_files(folder: str) -> list:
    """Diffusers folders (with config.json) and single files, without the weight files inside those folders."""
    dirs = _dirs(folder)
    inside = tuple(d.replace(os.sep, "/").rstrip("/") + "/" for d in dirs)
    files = [f for f in _files(folder) if not f.replace(os.sep, "/").startswith(inside)] if inside else _files(folder)
    return dirs + files


def _own_files() -> tuple:
    """Files of the ``diffcamera`` folder split into ``(whole models, LoRAs)`` (one listing, one header read each)."""
    models, loras = [], []
    for f in _files("diffcamera"):
        (models if _is_whole_model("diffcamera", f) else loras).append(f"diffcamera{SEP}{f}")
    return models, loras


def base_choices(own_models: list = None) -> list:
    own = _own_files()[0] if own_models is None else own_models
    dm = [f"diffusion_models{SEP}{f}" for f in _folders_and_files("diffusion_models")]
    return [PHYSICS, TOY] + own + dm + [EXTERNAL]


def vae_choices() -> list:
    return [AUTO_VAE] + [f"vae{SEP}{f}" for f in _folders_and_files("vae")]


def lora_choices(own_loras: list = None) -> list:
    own = _own_files()[1] if own_loras is None else own_loras
    return [NO_LORA] + own + [f"loras{SEP}{f}" for f in _files("loras")]


def _is_whole_model(folder: str, name: str) -> bool:
    from ..core.dit.loading import is_diffcamera_model
    try:
        path = rt.find_model(folder, name, "file", kind="file")
    except PathRefused:  # a link leaving the folder: listed, refused when picked, never opened here
        return False
    return is_diffcamera_model(path)


def resolve_choice(choice: str, what: str) -> str:
    """``"<folder>/<relative>"`` (one of the node's options) -> real path inside that model folder, by the pack's
    path policy (:func:`diffcamera.runtime.find_model`); a refusal names ``what`` and the folder."""
    folder, _, rel = choice.partition(SEP)
    return rt.find_model(folder, rel, what)


class ModelLoader(io.ComfyNode):
    """Load the refocus DiT: base transformer + VAE + DiffCamera LoRA."""

    @classmethod
    def define_schema(cls):
        own_models, own_loras = _own_files()
        bases, vaes, loras = base_choices(own_models), vae_choices(), lora_choices(own_loras)
        return io.Schema(
            node_id="DiffCamera_ModelLoader",
            display_name="DiffCamera ModelLoader",
            category=f"{CATEGORY}/refocus",
            description=("Chooses how DiffCameraRefocus works: 'physics (no model)' (default) inverts the lens blur "
                         "with no weights and works on any photo; a DiffCamera model refines that physics estimate: "
                         "a FLUX.1-family transformer (FLUX.1 Kontext [dev] recommended, FLUX.1 [dev] supported) "
                         "with its VAE and a DiffCamera LoRA, or the small bundled toy model (CPU-sized, 64 px "
                         "training, for trying the graph). Nothing is downloaded."),
            inputs=[
                io.Combo.Input(id="base", options=bases, default=bases[0],
                               tooltip=("'physics (no model)': refocus by inverting the lens blur, no file needed "
                                        "(the other inputs are then ignored). Or a model that refines it: "
                                        "'toy (bundled)', a whole DiffCamera model in "
                                        "models/diffcamera, or a FLUX.1 transformer in models/diffusion_models "
                                        "(single .safetensors as ComfyUI keeps them, bf16 or fp8, or a diffusers "
                                        "folder). The last choice loads only the LoRA's conditions and the VAE: "
                                        "FLUX then comes from a ComfyUI MODEL connected to DiffCameraRefocus "
                                        "(fp8, GGUF, whatever you already run), so it is not loaded twice.")),
                io.Combo.Input(id="vae", options=vaes, default=vaes[0],
                               tooltip=("The FLUX VAE (ae.safetensors in models/vae). 'auto' uses the base's own "
                                        "(toy model, diffusers pipeline folder).")),
                io.Combo.Input(id="lora", options=loras, default=loras[0],
                               tooltip=("A DiffCamera refocus LoRA (models/loras or models/diffcamera). A LoRA "
                                        "trained for another base family is refused.")),
                io.Combo.Input(id="family", options=["auto", "flux1-kontext-dev", "flux1-dev"], default="auto",
                               tooltip="Base family of a FLUX single file; auto = 'kontext' in the file name "
                                       "means FLUX.1 Kontext [dev], else FLUX.1 [dev]."),
                io.Combo.Input(id="dtype", options=list(dit_memory.DTYPES), default="auto",
                               tooltip="Compute precision. auto = bf16 on a GPU, fp32 on the CPU."),
                io.Combo.Input(id="weight_storage", options=list(dit_memory.STORAGES), default="default",
                               tooltip=("fp8_e4m3fn keeps transformer weights in 8 bits and up-casts each layer "
                                        "when it runs: about half the memory of bf16 (FLUX.1: ~12 GB instead of "
                                        "~24 GB), slightly lower quality.")),
                io.Combo.Input(id="offload", options=list(dit_memory.OFFLOAD_MODES), default="none",
                               tooltip=("none = the whole model on the GPU (ComfyUI frees other models first); "
                                        "group = one transformer block at a time on the GPU (small GPUs, slower); "
                                        "leaf = layer by layer (lowest memory, slowest).")),
            ],
            outputs=[DiffCameraModel.Output(display_name="diffcamera_model")],
        )

    @classmethod
    @checked_inputs
    def execute(cls, base, vae=AUTO_VAE, lora=NO_LORA, family="auto", dtype="auto", weight_storage="default",
                offload="none"):
        if base == PHYSICS:
            return io.NodeOutput(PhysicsOnly())
        vae_path = None if vae == AUTO_VAE else resolve_choice(vae, "vae")
        lora_path = None if lora == NO_LORA else resolve_choice(lora, "lora")
        if base == EXTERNAL:
            from ..core.dit.external import load_condition_bundle
            if lora_path is None or vae_path is None:
                raise ValueError("lora/vae: with a ComfyUI MODEL as the base, pick the DiffCamera LoRA and the FLUX "
                                 "VAE (ae.safetensors) here")
            return io.NodeOutput(rt.wrap_model(load_condition_bundle(lora_path, vae_path)))
        base_path = "toy" if base == TOY else resolve_choice(base, "base")
        return io.NodeOutput(rt.load_refocus_model(base_path, vae_path, lora_path,
                                                   family=None if family == "auto" else family, dtype=dtype,
                                                   storage=weight_storage, offload=offload))


def _prompt_from_conditioning(conditioning):
    """ComfyUI CONDITIONING (FLUX: T5 sequence + CLIP pooled) -> ``(seq [1,T,D], pooled [1,P])`` or ``None``."""
    if conditioning is None:
        return None
    cond, extra = conditioning[0][0], conditioning[0][1]
    pooled = extra.get("pooled_output")
    if pooled is None:
        raise ValueError("conditioning: no pooled_output (it must come from a FLUX text encoder: T5 + CLIP-L)")
    return cond[:1].float().cpu(), pooled[:1].float().cpu()


class Refocus(io.ComfyNode):
    """Refocus an image after the fact: physics (no weights), optionally refined by a DiT."""

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="DiffCamera_Refocus",
            display_name="DiffCameraRefocus",
            category=f"{CATEGORY}/refocus",
            description=("Re-renders the image focused at FOCUS with the given bokeh level, guided by DEPTH: it "
                         "estimates how the image is blurred now (or takes input_focus / input_level), inverts "
                         "the occlusion-aware lens blur to get the all-in-focus image, and renders the request. "
                         "With a DiffCamera model (toy or FLUX + LoRA) a DiT then refines that estimate, adding "
                         "detail physics cannot recover. Any size and aspect ratio; also outputs the all-in-focus "
                         "estimate."),
            inputs=[
                DiffCameraModel.Input(id="diffcamera_model",
                                      tooltip="From DiffCamera ModelLoader ('physics (no model)' needs no file)."),
                io.Image.Input(id="image",
                               tooltip="The images to refocus (any size; a batch takes one focus for all or one "
                                       "per frame)."),
                Depth.Input(id="depth",
                            tooltip="Depth of the same images (DepthEstimate / DepthFromImage), same size; one "
                                    "map for all or one per frame."),
                FocusType.Input(id="focus", tooltip="Where to focus (FocusPicker or RackFocus)."),
                io.Float.Input(id="bokeh_level", default=20.0, min=0.0, max=200.0, step=0.5,
                               tooltip=("Blur strength of the result: blur radius in px per 1024 px of the long side "
                                        "for a disparity difference of 1 (the same scale as FocusPicker/"
                                        "BokehSimulate). 0 = all in focus (deblur).")),
                io.Int.Input(id="steps", default=28, min=1, max=200,
                             tooltip="DiT models only: sampling steps (FLUX default 28)."),
                io.Int.Input(id="seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip=("FLUX models only: noise seed; the same seed gives the same image (the "
                                      "bundled toy is a deterministic correction of physics: no seed).")),
                io.Float.Input(id="guidance", default=2.5, min=0.0, max=10.0, step=0.1,
                               tooltip="FLUX models only: distilled guidance (Kontext default 2.5)."),
                io.Float.Input(id="denoise", default=0.5, min=0.01, max=1.0, step=0.01,
                               tooltip=("FLUX models only: how far the DiT may move from the physics estimate "
                                        "(its refinement starts from the estimate noised to this level). Low = "
                                        "close to physics, 1 = from pure noise. The bundled toy is a deterministic "
                                        "correction of physics and ignores it.")),
                io.Combo.Input(id="tiling", options=["auto", "off", "on"], default="auto",
                               tooltip=("DiT models only: auto = tiled denoising when the image is over 1.5x the "
                                        "model's trained size; on = always (tile_size); off = one pass.")),
                io.Int.Input(id="tile_size", default=0, min=0, max=4096, step=16,
                             tooltip="Tile side in pixels; 0 = the model's trained size (1024 for FLUX, 64 toy)."),
                FocusType.Input(id="input_focus", optional=True,
                                tooltip=("Optional: where the input is sharp now (a FocusPicker clicked on its "
                                         "sharp part). Without it the current focus is estimated.")),
                io.Float.Input(id="input_level", default=-1.0, min=-1.0, max=400.0, step=0.5, optional=True,
                               tooltip=("Optional: the input's own bokeh level (same scale as bokeh_level; 0 = the "
                                        "input is all in focus: set 0 for a text-to-image output that is sharp "
                                        "everywhere, which a soft look can make read as blurred). -1 = estimate it "
                                        "from the image and its depth; the estimate is least reliable on a generated "
                                        "image's fake bokeh, where a level read too high makes rings: set it if you "
                                        "can.")),
                io.Model.Input(id="flux_model", optional=True,
                               tooltip=("Optional: the FLUX MODEL your graph already loaded (Load Diffusion Model, "
                                        "fp8/GGUF/...): the refinement runs on it with the DiffCamera LoRA applied "
                                        "by ComfyUI, instead of the loader's own transformer.")),
                io.Conditioning.Input(id="conditioning", optional=True,
                                      tooltip=("Optional prompt (a FLUX CLIPTextEncode output). Without it the "
                                               "LoRA's stored training-prompt embedding is used: no text encoder "
                                               "needed.")),
            ],
            outputs=[io.Image.Output(display_name="image"), io.Image.Output(display_name="all_in_focus")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    @checked_inputs
    def execute(cls, diffcamera_model, image, depth, focus, bokeh_level=20.0, steps=28, seed=0, guidance=2.5,
                denoise=0.5, tiling="auto", tile_size=0, input_focus=None, input_level=-1.0, conditioning=None,
                flux_model=None):
        img = comfy_to_core(image)
        h, w = img.shape[-2:]
        pipe = rt.refocus_pipeline(diffcamera_model, flux_model)
        given = dict(input_focus_disparity=None if input_focus is None else input_focus.disparity,
                     input_K=None if input_level is None or input_level < 0 else level_to_K(input_level, h, w))
        K = level_to_K(bokeh_level, h, w)
        pipe.check(img, depth.disparity, focus, K, steps=steps, denoise=denoise, **given)
        require_memory(pipe.physics_bytes(img, K, given["input_K"]), pipe.physics_device,
                       f"DiffCameraRefocus (physics) on {img.shape[0]} image(s) of {w}×{h}",
                       "refocus a smaller image (downscale it first) or fewer images at once")
        tile = pipe.tile_size(h, w, tiling, tile_size)
        with node_progress(cls, 1, "refocus") as progress:
            out = pipe(img, depth.disparity, focus, K, steps=steps, seed=seed, guidance=guidance, denoise=denoise,
                       tile_size=tile, prompt=_prompt_from_conditioning(conditioning),
                       preview=progress.shows_previews, callback=progress, **given)
        return io.NodeOutput(core_to_comfy(out.image), core_to_comfy(out.all_in_focus),
                             ui=ui.PreviewText(value=f"DiffCameraRefocus: {out.describe()}"))


NODES = [ModelLoader, Refocus]
