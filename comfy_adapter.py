"""The ComfyUI side of the host runtime: the one module of the pack that imports ComfyUI (``comfy``, ``comfy_api``,
``folder_paths``, ``server``).

:mod:`diffcamera.runtime` asks it, when ComfyUI is importable (:data:`HAS_COMFY`), for ComfyUI's devices, model
management (``ModelPatcher``, ``load_models_gpu``), progress bar, Cancel, model folders and the V3 node API;
:mod:`diffcamera.comfy_fallback` answers the same questions, under the same names, in plain Python. Nodes, the CLI
and training ask :mod:`diffcamera.runtime`, never this module.

Nothing here is slow at import time: ComfyUI's modules are imported when a function is called, except
``comfy_api.latest``, which node classes need to be defined.
"""
from __future__ import annotations

from typing import Iterable, List, Optional

import torch

try:  # the V3 node API; present in ComfyUI >= 0.3.4x
    from comfy_api.latest import ComfyExtension, io, ui  # type: ignore
    HAS_COMFY = True
except ImportError:  # plain Python: the runtime uses comfy_fallback instead of this module
    ComfyExtension = io = ui = None
    HAS_COMFY = False

#: Model folders the pack registers with ComfyUI (name -> subfolder of ComfyUI's models dir).
#: ``depth_anything``: Depth Anything V2 folders in transformers format (config.json + model.safetensors).
#: ``diffcamera``: our refocus LoRAs, their JSON configs and small models such as the toy refocus model.
OWN_MODEL_FOLDERS = ("depth_anything", "diffcamera")
MODEL_EXTENSIONS = {".safetensors", ".sft", ".json"}


# ------------------------------------------------------------------------------------------ devices
def compute_device() -> torch.device:
    import comfy.model_management as mm
    return mm.get_torch_device()


def intermediate_device() -> torch.device:
    import comfy.model_management as mm
    return mm.intermediate_device()


def offload_device() -> torch.device:
    import comfy.model_management as mm
    return mm.unet_offload_device()


def soft_empty_cache() -> None:
    import comfy.model_management as mm
    mm.soft_empty_cache()


# ------------------------------------------------------------------------------------------- models
def _make_device_settable(model: torch.nn.Module) -> None:
    """``ModelPatcher`` assigns ``model.device`` on load/offload; transformers/diffusers models expose a
    read-only ``device`` property (assignment raises ``AttributeError``). Give such a model a subclass
    whose ``device`` accepts the assignment while reading the parameters' real device."""
    cls = type(model)
    prop = getattr(cls, "device", None)
    if not isinstance(prop, property) or prop.fset is not None:
        return

    def _set(self, value):
        self.__dict__["_comfy_device"] = value

    settable = type(cls.__name__, (cls,), {"device": property(prop.fget, _set), "__module__": cls.__module__,
                                           "__qualname__": cls.__qualname__})
    model.__class__ = settable


def wrap_model(model: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
    """A ``comfy.model_patcher.ModelPatcher`` around ``model``, so that model management loads, offloads and
    accounts for it."""
    import comfy.model_patcher
    _make_device_settable(model)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def load_models(handles: Iterable, memory_required: int = 0) -> None:
    """``load_models_gpu``: frees other models first when memory is short."""
    import comfy.model_management as mm
    mm.load_models_gpu(list(handles), memory_required=memory_required)


def offload_models(handles: Iterable) -> None:
    """Nothing: ComfyUI offloads on demand, when another model needs the memory."""


def free_memory_for(handles: Iterable) -> None:
    """After an out-of-memory error: unload every model ComfyUI holds."""
    import comfy.model_management as mm
    mm.unload_all_models()


# ------------------------------------------------------------------------------- progress/interrupt
def check_interrupt() -> None:
    """Raise ComfyUI's ``InterruptProcessingException`` if the user pressed *Cancel*."""
    import comfy.model_management as mm
    mm.throw_exception_if_processing_interrupted()


def request_interrupt() -> None:
    """What *Cancel* does: the next :func:`check_interrupt` raises."""
    import comfy.model_management as mm
    mm.interrupt_current_processing(True)


class ProgressBar:
    """ComfyUI's ``comfy.utils.ProgressBar`` of node ``node_id``, set to absolute positions; core previews
    (``[B,3,h,w]`` sRGB 0..1) are shown as ComfyUI's progress previews (``("JPEG", PIL image, max size)``)."""

    shows_previews = True

    def __init__(self, total: int, desc: str = "", node_id: Optional[str] = None, enable: bool = True):
        import comfy.utils
        self._bar = comfy.utils.ProgressBar(int(total), node_id=node_id)

    def update(self, done: int, total: int, preview=None) -> None:
        self._bar.update_absolute(done, total, None if preview is None else self._preview(preview))

    @staticmethod
    def _preview(image: torch.Tensor):
        from PIL import Image
        arr = (image[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        img = Image.fromarray(arr)
        scale = max(1, 256 // max(img.size))
        if scale > 1:
            img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
        return ("JPEG", img, 512)

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------ model folders
def register_model_folders() -> None:
    """Register our own model folders with ``folder_paths`` (idempotent)."""
    import folder_paths
    import os
    for name in OWN_MODEL_FOLDERS:
        if name not in folder_paths.folder_names_and_paths:
            path = os.path.join(folder_paths.models_dir, name)
            folder_paths.folder_names_and_paths[name] = ([path], set(MODEL_EXTENSIONS))


def model_folder_paths(name: str) -> List[str]:
    import folder_paths
    register_model_folders()
    try:
        return list(folder_paths.get_folder_paths(name))
    except KeyError:
        return []


def list_model_files(name: str) -> List[str]:
    """ComfyUI's cached listing of model folder ``name``."""
    import folder_paths
    register_model_folders()
    try:
        return list(folder_paths.get_filename_list(name))
    except KeyError:
        return []


def input_directory() -> str:
    import folder_paths
    return folder_paths.get_input_directory()


def output_directory() -> str:
    import folder_paths
    return folder_paths.get_output_directory()


def device_free_memory(device: torch.device) -> Optional[int]:
    """``get_free_memory``: free VRAM plus torch's cached free blocks; the available RAM for the CPU."""
    import comfy.model_management as mm
    return int(mm.get_free_memory(device))


# ------------------------------------------------------------------------ stock FLUX MODEL (refocus)
def flux_velocity_fn(model_patcher, lora_tensors: Optional[dict] = None, strength: float = 1.0):
    """A ComfyUI FLUX ``MODEL`` as a refocus ``velocity_fn`` (see ``core/dit/external.py``).

    Our LoRA (``transformer.<diffusers module>.lora_A/B`` + ``alpha``) is applied with ComfyUI's own LoRA loader
    (``comfy.sd.load_lora_for_models`` on a clone: the user's MODEL is not changed). Returns ``(patcher, fn)``:
    load ``patcher`` with :func:`load_models` before calling ``fn``. ``fn`` calls ``model.apply_model`` with the
    conditions as ``ref_latents`` (method ``"index"``) and turns ComfyUI's denoised output back into the
    rectified-flow velocity ``v = (x − denoised) / σ``.
    """
    import comfy.sd
    patcher = model_patcher
    lora_tensors = {k: v for k, v in (lora_tensors or {}).items() if not k.startswith("diffcamera.")}
    if lora_tensors:  # our own extras (camera encoder, prompt embedding) are not transformer weights
        patcher, _ = comfy.sd.load_lora_for_models(model_patcher, None, lora_tensors, strength, 0.0)

    def fn(noisy, sigma, refs, txt, pooled, guidance):
        dev = patcher.load_device
        x = noisy.to(dev)
        s = sigma.to(dev).float()
        b = x.shape[0]
        options = patcher.model_options.get("transformer_options", {})
        denoised = patcher.model.apply_model(
            x, s, c_crossattn=txt.to(dev), y=pooled.to(dev), guidance=torch.full((b,), float(guidance), device=dev),
            ref_latents=[r.to(dev) for r in refs], ref_latents_method="index", transformer_options=options)
        return ((x.float() - denoised.float()) / s.view(-1, 1, 1, 1)).float()

    return patcher, fn


def is_comfy_flux_model(obj) -> bool:
    """Whether ``obj`` is a ComfyUI ``MODEL`` (ModelPatcher) around a FLUX-family model."""
    model = getattr(obj, "model", None)
    if model is None:
        return False
    try:
        import comfy.model_base
        return isinstance(model, comfy.model_base.Flux)
    except ImportError:
        return False
