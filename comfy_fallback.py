"""The plain-Python side of the host runtime: what :mod:`diffcamera.runtime` answers when ComfyUI is not importable
(the pack installed as a plain Python package, the CLI, CI). :mod:`diffcamera.comfy_adapter` answers the same
questions inside ComfyUI, with the same function names.

* **Runtime**: devices (``$DIFFCAMERA_DEVICE``, else CUDA if available, else the CPU), :class:`PlainModelHandle`
  (the parts of ComfyUI's ``ModelPatcher`` we use: ``model``, ``load_device``, ``offload_device``), a tqdm
  progress bar, a Cancel flag (:func:`request_interrupt` makes the next :func:`check_interrupt` raise
  :class:`Interrupted`), model folders under ``$DIFFCAMERA_MODELS`` (default ``~/.cache/diffcamera/models``),
  ``./input`` and ``./output``, and free memory from ``torch.cuda.mem_get_info`` or ``/proc/meminfo``.
* **V3 node API**: a minimal stand-in for the part of ComfyUI's ``comfy_api.latest`` this pack uses. It mirrors the
  real names and behaviour that matter to us: ``io.ComfyNode`` subclasses with ``define_schema``/``execute``/
  ``validate_inputs``, typed ``Input``/``Output`` factories with the same keyword arguments, ``io.Schema``,
  ``io.NodeOutput``, ``io.Custom``, ``ui.PreviewImage``/``PreviewText``, and the V1 view (``INPUT_TYPES()``,
  ``RETURN_TYPES``, ...) that ComfyUI's validator reads. Nothing here saves files or talks to a server. Written
  from the public API description, not copied. It offers only names that ComfyUI exports publicly (``__all__`` of
  ``comfy_api.latest``, ``io`` and ``ui``; checked against the 0.38 lists in ``tests/data/comfy_api_public.json``).

Nothing here imports ComfyUI.
"""
from __future__ import annotations

import os
import sys
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, List, Optional

import torch


def _prune(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class _classproperty:
    def __init__(self, fget):
        self.fget = fget

    def __get__(self, obj, owner):
        return self.fget(owner)


# --------------------------------------------------------------------------------------------- io
class _Input:
    io_type = "*"

    def __init__(self, id: str, display_name: str = None, optional: bool = False, tooltip: str = None,
                 lazy: bool = None, **widget: Any):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.widget = widget

    def as_dict(self) -> dict:
        extra = dict(self.widget)
        if self.io_type == "STRING":  # real String.Input always reports multiline (default False)
            extra.setdefault("multiline", False)
        if "display_mode" in extra:
            mode = extra.pop("display_mode")
            extra["display"] = getattr(mode, "value", mode)
        if "force_input" in extra:
            extra["forceInput"] = extra.pop("force_input")
        return _prune({"display_name": self.display_name, "optional": self.optional or None,
                       "tooltip": self.tooltip, "lazy": self.lazy, **extra})


class _Output:
    io_type = "*"

    def __init__(self, id: str = None, display_name: str = None, tooltip: str = None, is_output_list: bool = False):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list


def _comfytype(io_type: str):
    """A namespace with ``Input``/``Output`` classes bound to ``io_type`` (like ``io.Image``)."""
    return types.SimpleNamespace(
        io_type=io_type,
        Input=type(f"{io_type}Input", (_Input,), {"io_type": io_type}),
        Output=type(f"{io_type}Output", (_Output,), {"io_type": io_type}),
    )


class _ComboInput(_Input):
    io_type = "COMBO"

    def __init__(self, id: str, options: list = None, display_name: str = None, optional: bool = False,
                 tooltip: str = None, lazy: bool = None, default: Any = None, **widget: Any):
        super().__init__(id, display_name, optional, tooltip, lazy, default=default, options=list(options or []),
                         **widget)
        self.widget.setdefault("multiselect", False)  # real Combo.Input reports it


class _Io:
    """Namespace imitating ``comfy_api.latest.io``."""

    Image = _comfytype("IMAGE")
    Mask = _comfytype("MASK")
    Latent = _comfytype("LATENT")
    Model = _comfytype("MODEL")
    Vae = _comfytype("VAE")
    Clip = _comfytype("CLIP")
    Conditioning = _comfytype("CONDITIONING")
    Int = _comfytype("INT")
    Float = _comfytype("FLOAT")
    String = _comfytype("STRING")
    Boolean = _comfytype("BOOLEAN")
    Combo = types.SimpleNamespace(io_type="COMBO", Input=_ComboInput,
                                  Output=type("COMBOOutput", (_Output,), {"io_type": "COMBO"}))
    NumberDisplay = types.SimpleNamespace(number="number", slider="slider")

    @staticmethod
    def Custom(io_type: str):
        return _comfytype(io_type)

    class Hidden:
        unique_id = "UNIQUE_ID"
        prompt = "PROMPT"
        extra_pnginfo = "EXTRA_PNGINFO"

    @dataclass(kw_only=True)  # keyword-only, as the pack builds it: newer ComfyUI inserts fields mid-way
    class Schema:
        node_id: str
        display_name: str = None
        category: str = "sd"
        inputs: List[_Input] = field(default_factory=list)
        outputs: List[_Output] = field(default_factory=list)
        hidden: list = field(default_factory=list)
        description: str = ""
        is_output_node: bool = False
        is_experimental: bool = False
        is_deprecated: bool = False
        not_idempotent: bool = False

        def get_v1_info(self) -> dict:
            required, optional = {}, {}
            for i in self.inputs or []:
                info = i.as_dict()
                info.pop("optional", None)  # as real add_to_dict_v1: the section says it
                (optional if i.optional else required)[i.id] = (i.io_type, info)
            spec = {"required": required}
            if optional:
                spec["optional"] = optional
            hidden = list(self.hidden or [])
            if self.is_output_node:  # as real Schema.finalize(): output nodes get prompt + extra_pnginfo
                hidden += [h for h in (_Io.Hidden.prompt, _Io.Hidden.extra_pnginfo) if h not in hidden]
            if hidden:
                spec["hidden"] = {h.lower(): (h,) for h in hidden}  # real: {Hidden.name: (Hidden.value,)}
            return spec

    class NodeOutput:
        def __init__(self, *args: Any, ui: Any = None, expand: dict = None, block_execution: str = None):
            self.args = args
            self.ui = ui
            self.expand = expand
            self.block_execution = block_execution

        @property
        def result(self):
            return self.args if self.args else None

        def __getitem__(self, index):
            return self.args[index]

    class ComfyNode:
        """Base class of a V3 node: override ``define_schema`` and ``execute`` (classmethods)."""

        hidden = types.SimpleNamespace(unique_id=None, prompt=None, extra_pnginfo=None)

        @classmethod
        def define_schema(cls):
            raise NotImplementedError

        @classmethod
        def execute(cls, **kwargs):
            raise NotImplementedError

        @classmethod
        def validate_inputs(cls, **kwargs):
            return True

        @classmethod
        def fingerprint_inputs(cls, **kwargs):
            return None

        @classmethod
        def INPUT_TYPES(cls):
            return cls.define_schema().get_v1_info()

        @_classproperty
        def RETURN_TYPES(cls):
            return tuple(o.io_type for o in cls.define_schema().outputs or [])

        @_classproperty
        def RETURN_NAMES(cls):
            return tuple(o.display_name or o.io_type for o in cls.define_schema().outputs or [])

        @_classproperty
        def CATEGORY(cls):
            return cls.define_schema().category

        @_classproperty
        def DESCRIPTION(cls):
            return cls.define_schema().description

        @_classproperty
        def OUTPUT_NODE(cls):
            return cls.define_schema().is_output_node

        @_classproperty
        def FUNCTION(cls):  # as real ComfyUI: the executor calls EXECUTE_NORMALIZED, which calls execute
            import inspect
            return "EXECUTE_NORMALIZED_ASYNC" if inspect.iscoroutinefunction(cls.execute) else "EXECUTE_NORMALIZED"

        @classmethod
        def EXECUTE_NORMALIZED(cls, *args, **kwargs):
            """``execute`` with its result normalised to a ``NodeOutput`` (None, tuple or NodeOutput)."""
            out = cls.execute(*args, **kwargs)
            if out is None:
                return _Io.NodeOutput()
            if isinstance(out, tuple):
                return _Io.NodeOutput(*out)
            if isinstance(out, _Io.NodeOutput):
                return out
            raise Exception(f"Invalid return type from node: {type(out)}")


io = _Io


# --------------------------------------------------------------------------------------------- ui
class _UIOutput:
    def as_dict(self) -> dict:
        raise NotImplementedError


class _PreviewImage(_UIOutput):
    """Holds the preview tensor (``[B,H,W,C]`` 0..1); ComfyUI would save it to its temp folder."""

    def __init__(self, image, animated: bool = False, cls: Any = None, **kwargs: Any):
        self.image = image
        self.animated = animated

    def as_dict(self) -> dict:
        return {"images": [{"shape": list(self.image.shape), "type": "temp"}], "animated": (self.animated,)}


class _PreviewMask(_PreviewImage):
    def __init__(self, mask, animated: bool = False, cls: Any = None, **kwargs: Any):
        image = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).movedim(1, -1).expand(-1, -1, -1, 3)
        super().__init__(image, animated, cls)


class _PreviewText(_UIOutput):
    def __init__(self, value: str, **kwargs: Any):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": (self.value,)}


ui = types.SimpleNamespace(PreviewImage=_PreviewImage, PreviewMask=_PreviewMask, PreviewText=_PreviewText)


class ComfyExtension:
    """Imitates ``comfy_api.latest.ComfyExtension``."""

    async def on_load(self) -> None:
        return None

    async def get_node_list(self) -> list:
        raise NotImplementedError



# ============================================================================================ runtime
class Interrupted(Exception):
    """Raised by :func:`check_interrupt` when :func:`request_interrupt` was called."""


_interrupt_flag = False


def compute_device() -> torch.device:
    """``$DIFFCAMERA_DEVICE``, else CUDA if available, else the CPU."""
    if os.environ.get("DIFFCAMERA_DEVICE"):
        return torch.device(os.environ["DIFFCAMERA_DEVICE"])
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def offload_device() -> torch.device:
    return torch.device("cpu")


def soft_empty_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class PlainModelHandle:
    """The same surface as the parts of ComfyUI's ``ModelPatcher`` we use."""

    def __init__(self, model: torch.nn.Module, load_device: torch.device, offload_device: torch.device):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device

    def load(self) -> None:
        self.model.to(self.load_device)

    def offload(self) -> None:
        self.model.to(self.offload_device)


def wrap_model(model: torch.nn.Module, load_device: torch.device, offload_device: torch.device) -> PlainModelHandle:
    return PlainModelHandle(model, load_device, offload_device)


def load_models(handles: Iterable, memory_required: int = 0) -> None:
    for h in handles:
        h.load()


def offload_models(handles: Iterable) -> None:
    for h in handles:
        h.offload()


def free_memory_for(handles: Iterable) -> None:
    offload_models(handles)


def check_interrupt() -> None:
    global _interrupt_flag
    if _interrupt_flag:
        _interrupt_flag = False
        raise Interrupted("interrupted")


def request_interrupt() -> None:
    global _interrupt_flag
    _interrupt_flag = True


#: Seconds between progress lines when stderr is not a terminal (a log file, CI): each redraw is a new line there.
LOG_PROGRESS_INTERVAL = 15.0


class ProgressBar:
    """A tqdm bar set to absolute positions; previews are not shown. On a terminal it redraws at most ten times a
    second; written to a log (stderr not a terminal) at most every :data:`LOG_PROGRESS_INTERVAL` seconds."""

    shows_previews = False

    def __init__(self, total: int, desc: str = "", node_id: Optional[str] = None, enable: bool = True):
        from tqdm.auto import tqdm
        interval = 0.1 if sys.stderr.isatty() else LOG_PROGRESS_INTERVAL
        self._tqdm = tqdm(total=int(total), desc=desc, disable=not enable, leave=False, mininterval=interval,
                          maxinterval=max(10.0, interval))

    def update(self, done: int, total: int, preview=None) -> None:
        self._tqdm.total = int(total)
        self._tqdm.update(int(done) - self._tqdm.n)   # redraws only when mininterval has passed

    def close(self) -> None:
        self._tqdm.close()


def _models_dir() -> str:
    return os.environ.get("DIFFCAMERA_MODELS", os.path.join(os.path.expanduser("~"), ".cache", "diffcamera", "models"))


def register_model_folders() -> None:
    """Nothing to register outside ComfyUI."""


def model_folder_paths(name: str) -> List[str]:
    return [os.path.join(_models_dir(), name)]


def list_model_files(name: str) -> List[str]:
    out = []
    for root in model_folder_paths(name):
        if os.path.isdir(root):
            for dirpath, _, files in os.walk(root):
                out += [os.path.relpath(os.path.join(dirpath, f), root) for f in files]
    return sorted(out)


def input_directory() -> str:
    return os.path.abspath("input")


def output_directory() -> str:
    return os.path.abspath("output")


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


def device_free_memory(device: torch.device) -> Optional[int]:
    """``torch.cuda.mem_get_info`` plus torch's cached free blocks on CUDA, ``MemAvailable`` for the CPU on Linux,
    ``None`` elsewhere."""
    if device.type == "cuda" and torch.cuda.is_available():
        free_driver, _ = torch.cuda.mem_get_info(device)
        return int(free_driver + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        return _meminfo_available()
    return None


def is_comfy_flux_model(obj) -> bool:
    return False


def flux_velocity_fn(model_patcher, lora_tensors: Optional[dict] = None, strength: float = 1.0):
    raise RuntimeError("a ComfyUI MODEL can only be used inside ComfyUI")
