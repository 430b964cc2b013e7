"""The host runtime: what the pack asks of whoever runs it — ComfyUI, or plain Python (the CLI, tests, CI).

Nodes, the CLI and training ask this module, and only this module, for:

* **devices** — where models compute (:func:`compute_device`), where node outputs live
  (:func:`intermediate_device`), where idle models wait (:func:`offload_device`). Every device decision of the
  nodes and the CLI is made here (:func:`device_for`, :func:`load_depth_model`, :func:`load_refocus_model`) or in
  the refocus pipeline (:mod:`diffcamera.core.pipeline`);
* **model placement** — handles that model management loads and offloads (:func:`wrap_model`,
  :func:`load_models`, :func:`offload_models`, :func:`free_memory_for`) and the placements the core runs models
  under (:class:`ModelPlacement`, :class:`RefocusPlacement`: the ``Placement`` of :mod:`diffcamera.core.pipeline`),
  :func:`refocus_pipeline`;
* **progress and Cancel** — :class:`Progress`, :func:`check_interrupt`, :func:`request_interrupt`;
* **folders** — model folders by the pack's path policy (:func:`find_model`, :func:`list_model_files`,
  :func:`list_model_dirs`; the policy itself is :mod:`diffcamera.core.safe_paths`), ComfyUI's input and output
  folders;
* **memory** — :func:`free_memory` (capped by ``DIFFCAMERA_MEMORY_LIMIT_MB``), and :func:`gradients_enabled` inside
  ComfyUI's inference mode;
* the **V3 node API** — ``io``, ``ui``, ``ComfyExtension``.

Each answer comes from the host backend :data:`host`: :mod:`diffcamera.comfy_adapter` inside ComfyUI (the one
module that imports ComfyUI), :mod:`diffcamera.comfy_fallback` outside (plain torch devices, tqdm, folders under
``$DIFFCAMERA_MODELS``, the V3 API stand-in). Both offer the same names; this module adds what is the same for
both (the path policy, the memory cap, placements). Cheap to import: no ComfyUI module but ``comfy_api.latest``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, List, Optional, Sequence, Union

import torch

from . import comfy_adapter, comfy_fallback
from .comfy_fallback import Interrupted  # noqa: F401 - what check_interrupt raises outside ComfyUI
from .core import safe_paths

#: Whether the pack runs inside ComfyUI.
HAS_COMFY = comfy_adapter.HAS_COMFY
#: The host backend every function here asks (tests may set it to :mod:`diffcamera.comfy_fallback`).
host = comfy_adapter if HAS_COMFY else comfy_fallback
ComfyExtension, io, ui = host.ComfyExtension, host.io, host.ui

#: Environment setting: the most memory (MiB) the pack's up-front checks assume free; also used when the free
#: memory of a device cannot be read.
MEMORY_LIMIT = "DIFFCAMERA_MEMORY_LIMIT_MB"


# ------------------------------------------------------------------------------------------ devices
def compute_device() -> torch.device:
    """Where models run: ComfyUI's torch device; outside ComfyUI ``$DIFFCAMERA_DEVICE``, else CUDA, else the CPU."""
    return host.compute_device()


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, MASK) live: ComfyUI's intermediate device, else the CPU."""
    return host.intermediate_device()


def offload_device() -> torch.device:
    """Where idle models wait."""
    return host.offload_device()


def soft_empty_cache() -> None:
    """Return cached GPU memory to the driver."""
    host.soft_empty_cache()


def device_for(choice: str = "auto") -> torch.device:
    """A user's device choice: ``"auto"`` = :func:`compute_device`, else that torch device (``cpu``, ``cuda:1``)."""
    return compute_device() if choice == "auto" else torch.device(choice)


# ------------------------------------------------------------------------------------------- models
def wrap_model(model: torch.nn.Module, load_device: Optional[torch.device] = None,
               offload_device: Optional[torch.device] = None):
    """Wrap a torch module so that the host's model management can load, offload and account for it.

    A ``comfy.model_patcher.ModelPatcher`` inside ComfyUI, a :class:`~diffcamera.comfy_fallback.PlainModelHandle`
    outside; the module is ``handle.model``. Defaults: :func:`compute_device`, :func:`offload_device`.
    """
    return host.wrap_model(model, load_device or host.compute_device(), offload_device or host.offload_device())


def load_models(handles: Iterable, memory_required: int = 0) -> None:
    """Bring models to their load device; inside ComfyUI this frees other models first."""
    host.load_models(list(handles), memory_required)


def offload_models(handles: Iterable) -> None:
    """After use: outside ComfyUI the models go back to their offload device (ComfyUI offloads on demand)."""
    host.offload_models(list(handles))
    host.soft_empty_cache()


def free_memory_for(handles: Iterable) -> None:
    """After an out-of-memory error: unload everything ComfyUI holds (outside: offload ``handles``)."""
    host.free_memory_for(list(handles))
    host.soft_empty_cache()


class ModelPlacement:
    """Where a model runs for one piece of work (the ``Placement`` of :mod:`diffcamera.core.pipeline`).

    ``handles``: from :func:`wrap_model`; the last one is the pack's own model, the others are the host's (a
    ComfyUI FLUX ``MODEL``). ``load()`` asks model management to load them all (inside ComfyUI this frees other
    nodes' models first) and completes a partial (low-VRAM) load of the pack's model, which runs whole.
    ``release()`` frees memory after an out-of-memory error; ``unload()`` is called when the work is done;
    ``advice()`` names what to change when the work does not fit.
    """

    def __init__(self, handles: Sequence, advice: str = "use a smaller image or batch"):
        self.handles = list(handles)
        self._advice = advice

    @property
    def model(self) -> torch.nn.Module:
        """The pack's own model (``handles[-1].model``)."""
        return self.handles[-1].model

    def load(self) -> None:
        load_models(self.handles)
        self._run_whole(self.model)

    def _run_whole(self, module: torch.nn.Module) -> None:
        target = torch.device(self.handles[-1].load_device)
        if any(p.device != target for p in module.parameters()):
            module.to(target)

    def release(self) -> None:
        free_memory_for(self.handles)

    def unload(self) -> None:
        offload_models(self.handles)

    def advice(self) -> str:
        return self._advice


class RefocusPlacement(ModelPlacement):
    """Where a refocus denoiser runs: as :class:`ModelPlacement`, for a refocus model bundle (``handles[-1].model``)
    that may be under diffusers' group/leaf offloading, whose hooks keep its blocks where they put them while its
    small modules (camera encoder, autoencoder, prompt) go to the compute device. ``advice()`` names the loader
    setting to try next (weight storage, offload mode)."""

    def load(self) -> None:
        load_models(self.handles)
        b = self.model
        if b.offload_mode == "none":
            self._run_whole(b)
        elif b.onload_device is not None:
            for module in (b.camera_encoder, b.autoencoder):
                module.to(b.onload_device)
            b.prompt_embeds = b.prompt_embeds.to(b.onload_device)
            b.pooled_prompt_embeds = b.pooled_prompt_embeds.to(b.onload_device)

    def advice(self) -> str:
        from .core.dit.memory import next_memory_option
        return next_memory_option(self.model.storage, self.model.offload_mode)


def load_depth_model(folder: str, dtype: str = "auto", device: str = "auto"):
    """A Depth Anything V2 folder (:func:`diffcamera.core.depth.load_depth_model`) loaded for this host and wrapped
    for its model management (``handle.model``).

    ``device``: ``"auto"`` (the compute device; the model waits on the offload device), ``"cpu"`` (always on the
    CPU) or another torch device. ``dtype``: a name of :data:`diffcamera.core.depth.DTYPES` (``"auto"`` = float16 on
    CUDA, else float32, for the device it runs on).
    """
    from .core import depth as core_depth
    load = device_for(device)
    idle = torch.device("cpu") if load.type == "cpu" else offload_device()
    model = core_depth.load_depth_model(folder, dtype=core_depth.resolve_dtype(dtype, load))
    return wrap_model(model, load, idle)


def load_refocus_model(base: str, vae: Optional[str] = None, lora: Optional[str] = None, *,
                       family: Optional[str] = None, dtype: str = "auto", storage: str = "default",
                       offload: str = "none"):
    """The refocus model (:func:`diffcamera.core.dit.loading.load_refocus_model`) loaded for this host and wrapped
    for its model management (``handle.model``; run it with :func:`refocus_pipeline`).

    ``dtype="auto"`` is resolved for the compute device. With ``offload="none"`` the model is built on the offload
    device and model management moves it to the compute device when a refocus runs; with ``"group"``/``"leaf"``
    diffusers' hooks move blocks themselves, so it is built for the compute device and model management's load
    device is the offload device (it never moves the whole model).
    """
    from .core.dit.loading import load_refocus_model as load
    from .core.dit.memory import resolve_dtype
    compute, idle = compute_device(), offload_device()
    dtype_name = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}[resolve_dtype(dtype, compute)]
    whole = offload == "none"
    model = load(base, vae, lora, family=family, dtype=dtype_name, storage=storage, offload=offload,
                 device=idle if whole else compute)
    return wrap_model(model, compute if whole else idle, idle)


def refocus_pipeline(diffcamera_model, flux_model=None):
    """The :class:`~diffcamera.core.pipeline.RefocusPipeline` for a refocus model choice on this host.

    ``diffcamera_model``: :class:`~diffcamera.core.pipeline.PhysicsOnly` (the weight-free refocus, on the compute
    device) or a handle from :func:`load_refocus_model` / :func:`wrap_model` (its denoiser under a
    :class:`RefocusPlacement`, Cancel checked in every step). ``flux_model``: a ComfyUI FLUX ``MODEL`` the
    refinement runs on instead of the model's own transformer, with our conditions and LoRA (applied by ComfyUI's
    own LoRA loader, :func:`diffcamera.comfy_adapter.flux_velocity_fn`).
    """
    from .core.pipeline import PhysicsOnly, RefocusPipeline
    if isinstance(diffcamera_model, PhysicsOnly):
        if flux_model is not None:
            raise ValueError("flux_model: the physics refocus uses no model; pick a DiffCamera LoRA in the loader "
                             "to refine it with this FLUX, or disconnect flux_model")
        return RefocusPipeline(device=compute_device())
    bundle = model = diffcamera_model.model
    handles = [diffcamera_model]
    if flux_model is None and bundle.transformer is None:
        raise ValueError("flux_model: this DiffCamera model was loaded without a transformer; connect the FLUX "
                         "MODEL of your graph (Load Diffusion Model) to flux_model")
    if flux_model is not None:
        model, patcher = _on_comfy_flux(bundle, flux_model)
        handles = [patcher, diffcamera_model]
    return RefocusPipeline(model, RefocusPlacement(handles), interrupt=check_interrupt)


def _on_comfy_flux(bundle, flux_model):
    """``(ExternalRefocusModel, patcher)``: our conditions + LoRA on ComfyUI's FLUX MODEL."""
    from .core.dit.external import ExternalRefocusModel
    from .core.dit.lora import has_adapter, lora_state_dict
    if bundle.config.family == "toy":
        raise ValueError("flux_model: the toy model has no FLUX counterpart; disconnect flux_model or load a FLUX "
                         "DiffCamera LoRA")
    if not host.is_comfy_flux_model(flux_model):
        raise ValueError("flux_model: expected a FLUX.1 MODEL (Load Diffusion Model with a FLUX.1 Kontext [dev] / "
                         "[dev] file)")
    lora = getattr(bundle, "lora_tensors", None)
    if lora is None and bundle.transformer is not None and has_adapter(bundle):
        lora = lora_state_dict(bundle)
    patcher, fn = host.flux_velocity_fn(flux_model, lora)
    return ExternalRefocusModel(bundle, fn), patcher


# ------------------------------------------------------------------------------ progress/interrupt
def check_interrupt() -> None:
    """Raise if the user pressed *Cancel* in ComfyUI (outside: if :func:`request_interrupt` was called)."""
    host.check_interrupt()


def request_interrupt() -> None:
    """Make the next :func:`check_interrupt` raise (what *Cancel* does; tests, signal handlers)."""
    host.request_interrupt()


class Progress:
    """A progress bar: ComfyUI's ``ProgressBar`` of the node inside ComfyUI, tqdm outside.

    Use as a step callback: ``progress(done, total, preview=None)`` sets the absolute position and checks for
    Cancel, so one object serves every long loop of the core; ``preview`` (a core image ``[B,3,h,w]``) is shown
    where the host shows previews (:attr:`shows_previews`). A context manager: ``with Progress(...) as p:`` closes
    the bar at the end.
    """

    def __init__(self, total: int, desc: str = "", node_id: Optional[str] = None, enable_tqdm: bool = True):
        self.total = int(total)
        self._bar = host.ProgressBar(self.total, desc, node_id, enable_tqdm)

    @property
    def shows_previews(self) -> bool:
        return self._bar.shows_previews

    def __call__(self, done: int, total: int = None, preview=None) -> None:
        check_interrupt()
        if total is not None:
            self.total = int(total)
        self._bar.update(done, self.total, preview)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------ model folders
def register_model_folders() -> None:
    """Register the pack's own model folders with ComfyUI (idempotent; nothing to do outside)."""
    host.register_model_folders()


def model_folder_paths(name: str) -> List[str]:
    """Search paths of model folder ``name`` (e.g. ``"depth_anything"``, ``"loras"``)."""
    return host.model_folder_paths(name)


def list_model_files(name: str) -> List[str]:
    """Files (relative names) in model folder ``name``; ComfyUI's cached listing inside ComfyUI."""
    return host.list_model_files(name)


def list_model_dirs(name: str, marker: str = "config.json") -> List[str]:
    """Sub-folders (relative names) of model folder ``name`` that contain ``marker``: HF-format models."""
    out = set()
    for root in model_folder_paths(name):
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            if marker in files and dirpath != root:
                out.add(os.path.relpath(dirpath, root))
    return sorted(out)


def _model_hint(names: Sequence[str]) -> str:
    where = " or ".join(f"models/{n}" for n in names)
    return (f"put it in ComfyUI's {where} folder (extra_model_paths.yaml can add folders), or set "
            f"{safe_paths.ALLOW_EXTERNAL_MODELS}=1 in ComfyUI's environment to allow files anywhere")


def find_model(name: Union[str, Sequence[str]], relative: str, what: str, kind: str = "any") -> str:
    """Real path of ``relative`` (a file or folder, ``kind`` ``"file"``/``"dir"``/``"any"``) inside model folder
    ``name`` (or any of several names), by the pack's path policy (:mod:`diffcamera.core.safe_paths`): no
    absolute path outside the folders, no ``..``, no link leaving them — unless
    ``DIFFCAMERA_ALLOW_EXTERNAL_MODELS=1``. A folder is also checked for links inside it. Raises
    :class:`~diffcamera.core.safe_paths.PathRefused` naming ``what``."""
    names = (name,) if isinstance(name, str) else tuple(name)
    roots = [r for n in names for r in model_folder_paths(n)]
    external = safe_paths.opted_in(safe_paths.ALLOW_EXTERNAL_MODELS)
    hint = _model_hint(names)
    path = safe_paths.resolve_in_roots(roots, relative, what, kind=kind, allow_external=external, hint=hint)
    if os.path.isdir(path) and not external:
        safe_paths.check_tree_inside(path, roots, what, hint=hint)
    return path


def input_directory() -> str:
    """ComfyUI's ``input/`` folder (images the user uploaded); ``./input`` outside ComfyUI."""
    return host.input_directory()


def output_directory() -> str:
    """Where results the user keeps (trained LoRAs, loss curves, datasets) go; ``./output`` outside ComfyUI."""
    return host.output_directory()


#: Hint of refusals of image folders outside ComfyUI's input folder.
IMAGE_FOLDER_HINT = ("put the photos (with NAME_depth.png beside them) in a folder inside ComfyUI's input folder "
                     "and give its name, or set " + safe_paths.ALLOW_EXTERNAL_IMAGE_FOLDERS + "=1 in ComfyUI's "
                     "environment to read folders anywhere")


def input_folder(name: str, what: str):
    """``(real path, root)`` of folder ``name`` inside :func:`input_directory`, by the pack's path policy (a name,
    or a path staying inside; no link leaving it); ``root`` is what files read from it must stay inside (``None``
    with ``DIFFCAMERA_ALLOW_EXTERNAL_IMAGE_FOLDERS=1``, which allows folders anywhere). Refusals name ``what``."""
    external = safe_paths.opted_in(safe_paths.ALLOW_EXTERNAL_IMAGE_FOLDERS)
    root = input_directory()
    folder = safe_paths.resolve_in_roots([root], name, what, kind="dir", allow_external=external,
                                         hint=IMAGE_FOLDER_HINT)
    return folder, None if external else root


def output_folder(parts: Sequence[str], what: str) -> str:
    """The folder ``output/<parts...>`` (created; never outside :func:`output_directory`; refusals name ``what``)."""
    return safe_paths.make_dirs_inside(output_directory(), list(parts), what)


def publish_model(path: str, name: str) -> str:
    """Copy a trained model file (+ its ``.json``) into the ``diffcamera`` model folder under a new name (``name``,
    else ``name_2``...), so the refocus model loader lists it; an existing file is never replaced
    (:func:`diffcamera.core.safe_paths.copy_new`). Returns the new path (``path`` when there is no such folder)."""
    folders = model_folder_paths("diffcamera")
    if not folders:
        return path
    os.makedirs(folders[0], exist_ok=True)
    suffixes = [".safetensors"] + ([".json"] if os.path.isfile(os.path.splitext(path)[0] + ".json") else [])
    return safe_paths.copy_new(path, folders[0], name, suffixes) + ".safetensors"


# ------------------------------------------------------------------------------------------ memory
def training_device() -> torch.device:
    """Where the trainer runs (accelerate's default: CUDA when available, else the CPU), for checks before it
    starts."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def free_memory(device=None) -> Optional[int]:
    """Bytes free for new work on ``device`` (default: :func:`compute_device`), or ``None`` when unknown.

    Inside ComfyUI: ``comfy.model_management.get_free_memory`` (free VRAM plus torch's cached free blocks; the
    available RAM for the CPU). Outside: ``torch.cuda.mem_get_info`` plus torch's cached free blocks on CUDA,
    ``MemAvailable`` of ``/proc/meminfo`` for the CPU on Linux, unknown elsewhere. ``DIFFCAMERA_MEMORY_LIMIT_MB``
    caps the answer (and is the answer when the device cannot be asked).
    """
    device = torch.device(device) if device is not None else compute_device()
    free = host.device_free_memory(device)
    limit = os.environ.get(MEMORY_LIMIT, "").strip()
    if limit:
        try:
            cap = int(float(limit) * 1024 * 1024)
        except ValueError:
            raise ValueError(f"{MEMORY_LIMIT}={limit!r}: give a number of MiB") from None
        free = cap if free is None else min(free, cap)
    return free


@contextlib.contextmanager
def gradients_enabled():
    """ComfyUI runs nodes under ``torch.inference_mode()``; training needs it off and grads on."""
    with torch.inference_mode(False), torch.enable_grad():
        yield
