"""The one module that touches ComfyUI (``comfy``, ``comfy_api``, ``folder_paths``, ``server``).

Everything else in the pack asks this module for devices, model loading/offloading, progress,
interruption, model folders and the V3 node API. When ComfyUI is not importable (plain Python, the CLI,
CI) every call falls back to plain torch device choice, tqdm progress, a no-op interrupt, folders under
``$DIFFCAMERA_MODELS`` (default ``~/.cache/diffcamera/models``) and :mod:`comfy_fallback`'s node API.

Nothing here is slow at import time: ComfyUI modules are imported lazily, except ``comfy_api.latest``
which node classes need to be defined.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterable, List, Optional, Sequence, Union

import torch

from .core import safe_paths

try:  # the V3 node API; present in ComfyUI >= 0.3.4x
    from comfy_api.latest import ComfyExtension, io, ui  # type: ignore
    HAS_COMFY = True
except ImportError:  # plain Python: our stand-in with the same names
    from .comfy_fallback import ComfyExtension, io, ui  # noqa: F401
    HAS_COMFY = False

#: Model folders the pack registers (name -> subfolder of ComfyUI's models dir).
#: ``depth_anything``: Depth Anything V2 folders in transformers format (config.json + model.safetensors).
#: ``diffcamera``: our refocus LoRAs, their JSON configs and small models such as the toy refocus model.
OWN_MODEL_FOLDERS = ("depth_anything", "diffcamera")
#: Stock ComfyUI folders we read from (never register).
STOCK_MODEL_FOLDERS = ("diffusion_models", "vae", "loras")
MODEL_EXTENSIONS = {".safetensors", ".sft", ".json"}


class Interrupted(Exception):
    """Raised by :func:`check_interrupt` outside ComfyUI when :func:`request_interrupt` was called."""


_interrupt_flag = False


# ------------------------------------------------------------------------------------------ devices
def compute_device() -> torch.device:
    """Where models run: ComfyUI's torch device, else CUDA if available, else CPU."""
    if HAS_COMFY:
        import comfy.model_management as mm
        return mm.get_torch_device()
    if os.environ.get("DIFFCAMERA_DEVICE"):
        return torch.device(os.environ["DIFFCAMERA_DEVICE"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    """Where node outputs (IMAGE, MASK) live: ComfyUI's intermediate device, else the CPU."""
    if HAS_COMFY:
        import comfy.model_management as mm
        return mm.intermediate_device()
    return torch.device("cpu")


def offload_device() -> torch.device:
    """Where idle models wait."""
    if HAS_COMFY:
        import comfy.model_management as mm
        return mm.unet_offload_device()
    return torch.device("cpu")


def soft_empty_cache() -> None:
    """Return cached GPU memory to the driver (ComfyUI's helper, else ``torch.cuda.empty_cache``)."""
    if HAS_COMFY:
        import comfy.model_management as mm
        mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------ models
class PlainModelHandle:
    """Outside ComfyUI: the same surface as the parts of ``ModelPatcher`` we use."""

    def __init__(self, model: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device

    def load(self) -> None:
        self.model.to(self.load_device)

    def offload(self) -> None:
        self.model.to(self.offload_device)


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


def wrap_model(model: torch.nn.Module, load_device: torch.device = None, offload_device_: torch.device = None):
    """Wrap a torch module so that ComfyUI's model management can load, offload and account for it.

    Returns a ``comfy.model_patcher.ModelPatcher`` inside ComfyUI, a :class:`PlainModelHandle` outside.
    The module itself is ``handle.model``.
    """
    load_device = load_device or compute_device()
    offload_device_ = offload_device_ or offload_device()
    if HAS_COMFY:
        import comfy.model_patcher
        _make_device_settable(model)
        return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device_)
    return PlainModelHandle(model, load_device, offload_device_)


def load_models(handles: Iterable, memory_required: int = 0) -> None:
    """Bring models to their compute device; inside ComfyUI this frees other models first."""
    handles = list(handles)
    if HAS_COMFY:
        import comfy.model_management as mm
        mm.load_models_gpu(handles, memory_required=memory_required)
    else:
        for h in handles:
            h.load()


def offload_models(handles: Iterable) -> None:
    """Send models back to the offload device (outside ComfyUI; ComfyUI offloads on demand)."""
    if not HAS_COMFY:
        for h in handles:
            h.offload()
    soft_empty_cache()


def free_memory_for(handles: Iterable) -> None:
    """After an out-of-memory error: unload everything ComfyUI holds and empty the cache."""
    if HAS_COMFY:
        import comfy.model_management as mm
        mm.unload_all_models()
    else:
        offload_models(handles)
    soft_empty_cache()


class RefocusPlacement:
    """Where a refocus denoiser runs (the :class:`diffcamera.core.pipeline.Placement` of this host).

    ``load()`` asks model management to load ``handles`` (inside ComfyUI this frees other nodes' models first);
    a model under diffusers' group/leaf offloading keeps its blocks where the hooks put them while its small
    modules (camera encoder, autoencoder, prompt) go to the compute device; a partial (low-VRAM) load is
    completed, since the refocus model runs whole. ``release()`` unloads after an out-of-memory error;
    ``advice()`` names the loader setting to try next.
    """

    def __init__(self, handles: Sequence, bundle):
        self.handles = list(handles)
        self.bundle = bundle

    def load(self) -> None:
        load_models(self.handles)
        b = self.bundle
        target = torch.device(self.handles[-1].load_device)
        if b.offload_mode == "none":
            if any(p.device != target for p in b.parameters()):
                b.to(target)
        elif b.onload_device is not None:
            for module in (b.camera_encoder, b.autoencoder):
                module.to(b.onload_device)
            b.prompt_embeds = b.prompt_embeds.to(b.onload_device)
            b.pooled_prompt_embeds = b.pooled_prompt_embeds.to(b.onload_device)

    def release(self) -> None:
        free_memory_for(self.handles)

    def advice(self) -> str:
        from .core.dit.memory import next_memory_option
        return next_memory_option(self.bundle.storage, self.bundle.offload_mode)


# ------------------------------------------------------------------------------ progress/interrupt
def check_interrupt() -> None:
    """Raise if the user pressed *Cancel* in ComfyUI (or :func:`request_interrupt` was called)."""
    global _interrupt_flag
    if HAS_COMFY:
        import comfy.model_management as mm
        mm.throw_exception_if_processing_interrupted()
    elif _interrupt_flag:
        _interrupt_flag = False
        raise Interrupted("interrupted")


def request_interrupt() -> None:
    """Outside ComfyUI: make the next :func:`check_interrupt` raise (tests, signal handlers)."""
    global _interrupt_flag
    _interrupt_flag = True


class Progress:
    """A progress bar: ComfyUI's ``ProgressBar`` inside ComfyUI, tqdm outside.

    Use as a step callback: ``progress(done, total, preview=None)`` sets the absolute position and
    checks for interruption, so one object serves every long loop of the core.
    """

    def __init__(self, total: int, desc: str = "", node_id: Optional[str] = None, enable_tqdm: bool = True):
        self.total = int(total)
        if HAS_COMFY:
            import comfy.utils
            self._bar = comfy.utils.ProgressBar(self.total, node_id=node_id)
            self._tqdm = None
        else:
            self._bar = None
            from tqdm.auto import tqdm
            self._tqdm = tqdm(total=self.total, desc=desc, disable=not enable_tqdm, leave=False)

    def __call__(self, done: int, total: int = None, preview=None) -> None:
        check_interrupt()
        if total is not None:
            self.total = int(total)
        if self._bar is not None:
            self._bar.update_absolute(done, self.total, preview)
        else:
            self._tqdm.total = self.total
            self._tqdm.n = int(done)
            self._tqdm.refresh()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()


# ------------------------------------------------------------------------------------ model folders
def _fallback_models_dir() -> str:
    return os.environ.get("DIFFCAMERA_MODELS", os.path.join(os.path.expanduser("~"), ".cache", "diffcamera", "models"))


def register_model_folders() -> None:
    """Register our own model folders with ComfyUI's ``folder_paths`` (idempotent; no-op outside)."""
    if not HAS_COMFY:
        return
    import folder_paths
    for name in OWN_MODEL_FOLDERS:
        if name not in folder_paths.folder_names_and_paths:
            path = os.path.join(folder_paths.models_dir, name)
            folder_paths.folder_names_and_paths[name] = ([path], set(MODEL_EXTENSIONS))


def model_folder_paths(name: str) -> List[str]:
    """Search paths of model folder ``name`` (e.g. ``"depth_anything"``, ``"loras"``)."""
    if HAS_COMFY:
        import folder_paths
        register_model_folders()
        try:
            return list(folder_paths.get_folder_paths(name))
        except KeyError:
            return []
    return [os.path.join(_fallback_models_dir(), name)]


def list_model_files(name: str) -> List[str]:
    """Files (relative names) in model folder ``name``; ComfyUI's cached listing when inside ComfyUI."""
    if HAS_COMFY:
        import folder_paths
        register_model_folders()
        try:
            return list(folder_paths.get_filename_list(name))
        except KeyError:
            return []
    out = []
    for root in model_folder_paths(name):
        if os.path.isdir(root):
            for dirpath, _, files in os.walk(root):
                out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


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
    if HAS_COMFY:
        import folder_paths
        return folder_paths.get_input_directory()
    return os.path.abspath("input")


def output_directory() -> str:
    """Where results the user keeps (trained LoRAs, loss curves) go."""
    if HAS_COMFY:
        import folder_paths
        return folder_paths.get_output_directory()
    return os.path.abspath("output")


# ------------------------------------------------------------------------------------------ memory
#: Environment setting: the most memory (MiB) the pack's up-front checks assume free; also used when the free
#: memory of a device cannot be read.
MEMORY_LIMIT = "DIFFCAMERA_MEMORY_LIMIT_MB"


def _meminfo_available() -> Optional[int]:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes (Linux), else ``None``."""
    try:
        with open("/proc/meminfo", "r", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def free_memory(device=None) -> Optional[int]:
    """Bytes free for new work on ``device`` (default: :func:`compute_device`), or ``None`` when unknown.

    Inside ComfyUI: ``comfy.model_management.get_free_memory`` (free VRAM plus torch's cached free blocks; the
    available RAM for the CPU). Outside: ``torch.cuda.mem_get_info`` plus torch's cached free blocks on CUDA,
    ``MemAvailable`` of ``/proc/meminfo`` for the CPU on Linux, unknown elsewhere. ``DIFFCAMERA_MEMORY_LIMIT_MB``
    caps the answer (and is the answer when the device cannot be asked).
    """
    device = torch.device(device) if device is not None else compute_device()
    free: Optional[int] = None
    if HAS_COMFY:
        import comfy.model_management as mm
        free = int(mm.get_free_memory(device))
    elif device.type == "cuda" and torch.cuda.is_available():
        free_driver, _ = torch.cuda.mem_get_info(device)
        free = int(free_driver + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    elif device.type == "cpu":
        free = _meminfo_available()
    limit = os.environ.get(MEMORY_LIMIT, "").strip()
    if limit:
        try:
            cap = int(float(limit) * 1024 * 1024)
        except ValueError:
            raise ValueError(f"{MEMORY_LIMIT}={limit!r}: give a number of MiB") from None
        free = cap if free is None else min(free, cap)
    return free


# ------------------------------------------------------------------------------------------- misc
@contextlib.contextmanager
def gradients_enabled():
    """ComfyUI runs nodes under ``torch.inference_mode()``; training needs it off and grads on."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def combine_ui(*parts) -> dict:
    """Merge several ``ui.*`` outputs (e.g. a preview image and a text) into one ``ui`` dict."""
    merged: dict = {}
    for p in parts:
        if p is None:
            continue
        d = p.as_dict() if hasattr(p, "as_dict") else dict(p)
        merged.update(d)
    return merged



# ------------------------------------------------------------------------ stock FLUX MODEL (refocus)
def flux_velocity_fn(model_patcher, lora_tensors: Optional[dict] = None, strength: float = 1.0):
    """A ComfyUI FLUX ``MODEL`` as a refocus ``velocity_fn`` (see ``core/dit/external.py``).

    Our LoRA (``transformer.<diffusers module>.lora_A/B`` + ``alpha``) is applied with ComfyUI's own LoRA loader
    (``comfy.sd.load_lora_for_models`` on a clone: the user's MODEL is not changed). Returns ``(patcher, fn)``:
    load ``patcher`` with :func:`load_models` before calling ``fn``. ``fn`` calls ``model.apply_model`` with the
    conditions as ``ref_latents`` (method ``"index"``) and turns ComfyUI's denoised output back into the
    rectified-flow velocity ``v = (x − denoised) / σ``.
    """
    if not HAS_COMFY:
        raise RuntimeError("a ComfyUI MODEL can only be used inside ComfyUI")
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
    if model is None or not HAS_COMFY:
        return False
    try:
        import comfy.model_base
        return isinstance(model, comfy.model_base.Flux)
    except ImportError:
        return False
