"""Training configuration: one flat dataclass, read from and written to JSON.

Unknown keys are refused, naming them (a typo must not silently train with a default). The ``model``
entry is a dict of :class:`diffcamera.core.dit.config.RefocusModelConfig` fields (LoRA rank/alpha/targets,
condition layout, prompt, ...) and is checked against that dataclass's fields when it is built.

:func:`TrainConfig.fingerprint` hashes every field that changes what a training step computes; a
checkpoint records it and :mod:`diffcamera.training.trainer` refuses to resume from a checkpoint whose
fingerprint differs (bookkeeping fields such as ``output_dir`` or ``log_every`` are excluded).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..core.conventions import MAX_LEVEL

#: Where the bundled configs live (``training/configs/*.json``).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")

MODEL_KINDS = ("toy", "flux")
TIMESTEP_SAMPLING = ("logit_normal", "uniform")
#: What the noisy training sample is built from (:func:`diffcamera.training.losses.refocus_loss`).
NOISE_FROM = ("target", "reference")
LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


def check_noise_from(value: str) -> str:
    """``value`` is one of :data:`NOISE_FROM`, else ``ValueError`` naming ``noise_from`` (the config and the loss)."""
    if value not in NOISE_FROM:
        raise ValueError(f"noise_from must be one of {NOISE_FROM}, got {value!r}")
    return value


@dataclass
class TrainConfig:
    """Everything one training run needs.

    Model:
        model_kind: ``"toy"`` (tiny FLUX-architecture DiT + invertible pixel autoencoder, trained fully from
            scratch; :func:`diffcamera.core.dit.toy.toy_config` is its one definition) or ``"flux"`` (a FLUX.1 base
            from ``base_path``/``vae_path`` with a LoRA; without ``base_path``, a random-init FLUX-architecture model
            from the ``transformer`` / ``autoencoder`` configs in ``model``: the tests' tiny FLUX).
        model: fields of ``RefocusModelConfig`` (``lora_rank``, ``lora_alpha``, ``lora_targets``, ...) over the
            defaults of ``model_kind``.
        base_path, vae_path: local FLUX transformer / VAE (folder or single file), only for ``"flux"``.
        init_lora: optional LoRA (``.safetensors``) to start from.
        base_storage: ``"default"`` (the frozen base in the compute dtype) or ``"fp8_e4m3fn"`` / ``"fp8_e5m2"``
            (8-bit base weights up-cast layer by layer, as inference's weight storage; LoRA families only, needs
            ``gradient_checkpointing``: see :mod:`diffcamera.core.dit.memory`).
    Data:
        dataset: a folder written by ``diffcamera simulate`` (with ``manifest.json``), or ``"procedural"``
            to simulate ``procedural_scenes`` scenes in memory at start (same code as ``simulate``).
        size: training resolution in pixels (square), a multiple of 16.
        procedural_*: scene count, kinds and variants per scene when ``dataset == "procedural"``.
        reference_renderer: ``"same"`` (the reference input rendered like the targets) or ``"thin_lens"`` (procedural
            data only: the input blurred by the thin-lens reference renderer, as a real lens does, so the physics
            estimate carries the errors of a blur that is not the renderer it inverts); see
            :mod:`diffcamera.training.simulate`.
        level_range: artist bokeh levels (px per 1024 px of long side) sampled uniformly.
    Optimisation:
        steps: optimiser steps; batch_size: scene groups per micro-batch (each group gives two focus planes,
        so the DiT sees ``2·batch_size`` targets); grad_accum: micro-batches per optimiser step.
        lr, weight_decay, betas, eps: AdamW; warmup_steps, lr_schedule: linear warm-up then constant/cosine.
        max_grad_norm: gradient clipping (0 = off).
    Loss (see :mod:`diffcamera.training.losses` for the exact formula):
        lambda_stack: weight of the stacking constraint (0 = vanilla loss).
        depth_dropout: probability that a group's depth-derived condition channels are blanked.
        timestep_sampling: ``"logit_normal"`` (``t = sigmoid(N(mean, std))``, ``logit_normal_mean/std``) or
            ``"uniform"`` (``t ~ U(0, 1)``); ``t`` is then scaled into ``(0, denoise_max]`` and, with
            ``resolution_shift``, mapped to ``σ`` by FLUX's resolution-dependent shift for the tokens of one
            model call at ``size`` — exactly the map the sampler applies to its step grid, so training sees the
            noise levels that refining at ``denoise ≤ denoise_max`` visits
            (:func:`diffcamera.training.losses.training_sigmas`).
        noise_from: ``"target"`` (plain rectified flow from the noised target: a generative model; the FLUX
            configs) or ``"reference"`` (the noisy sample is the physics reference noised to ``σ``, the state the
            sampler refines from: a deterministic correction of the estimate; the toy); see
            :mod:`diffcamera.training.losses`.
    Runtime:
        mixed_precision: ``"auto"`` = bf16 on CUDA, none on CPU. gradient_checkpointing: on the DiT blocks.
        num_threads: torch CPU threads (0 = leave torch's default).
        memory_check: refuse up front when the memory estimate of the settings exceeds the device's free memory
            (:mod:`diffcamera.training.memory`); ``false`` tries anyway.
        checkpoint_every / keep_checkpoints / log_every / sample_every: in optimiser steps.
        output_dir: run folder (checkpoints/, loss.jsonl, samples/, the final LoRA).
        seed: every random choice (data order, noise, timesteps, dropout) derives from it and the step.
    """

    # model
    model_kind: str = "toy"
    model: Dict[str, Any] = field(default_factory=dict)
    base_path: Optional[str] = None
    vae_path: Optional[str] = None
    init_lora: Optional[str] = None
    base_storage: str = "default"
    # data
    dataset: str = "procedural"
    size: int = 64
    procedural_scenes: int = 256
    procedural_kinds: List[str] = field(default_factory=lambda: ["layers", "slanted", "ground", "mixed"])
    procedural_variants: int = 4
    procedural_seed: int = 1000
    reference_renderer: str = "same"
    level_range: List[float] = field(default_factory=lambda: [8.0, 96.0])
    # optimisation
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 50
    lr_schedule: str = "constant"
    max_grad_norm: float = 1.0
    # loss
    lambda_stack: float = 1.0
    depth_dropout: float = 0.0
    timestep_sampling: str = "logit_normal"
    logit_normal_mean: float = 0.0
    logit_normal_std: float = 1.0
    denoise_max: float = 1.0
    resolution_shift: bool = True
    noise_from: str = "target"
    # runtime
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    num_threads: int = 0
    memory_check: bool = True
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 1
    sample_every: int = 0
    output_dir: str = "output/diffcamera_train"
    seed: int = 0
    notes: str = ""

    #: fields that do not change the computation (excluded from :meth:`fingerprint`)
    BOOKKEEPING = ("output_dir", "checkpoint_every", "keep_checkpoints", "log_every", "sample_every",
                   "num_threads", "notes", "memory_check")
    #: fields added after the first release, hashed by :meth:`fingerprint` only when they differ from these values
    #: (so a checkpoint written before they existed still resumes)
    ADDED_LATER = {"base_storage": "default", "timestep_sampling": "logit_normal", "denoise_max": 1.0,
                   "resolution_shift": False, "reference_renderer": "same", "noise_from": "target"}

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix for any value out of range."""
        if self.model_kind not in MODEL_KINDS:
            raise ValueError(f"model_kind must be one of {MODEL_KINDS}, got {self.model_kind!r}")
        if self.size < 16 or self.size % 16:
            raise ValueError(f"size must be a multiple of 16 and >= 16, got {self.size}")
        for name in ("steps", "batch_size", "grad_accum"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.depth_dropout <= 1.0:
            raise ValueError(f"depth_dropout is a probability in 0..1, got {self.depth_dropout}")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"timestep_sampling must be one of {TIMESTEP_SAMPLING}, got {self.timestep_sampling!r}")
        check_noise_from(self.noise_from)
        if not 0.0 < self.denoise_max <= 1.0:
            raise ValueError(f"denoise_max must be in (0, 1], got {self.denoise_max}")
        if self.lambda_stack < 0:
            raise ValueError(f"lambda_stack must be >= 0, got {self.lambda_stack}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if len(self.level_range) != 2 or not 0 <= self.level_range[0] <= self.level_range[1] <= MAX_LEVEL:
            raise ValueError(f"level_range must be [low, high] with 0 <= low <= high <= {MAX_LEVEL:g}, "
                             f"got {self.level_range}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas}")
        if self.checkpoint_every < 0 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every must be >= 0 and keep_checkpoints >= 1")
        if self.procedural_scenes < 1 or self.procedural_variants < 1:
            raise ValueError("procedural_scenes and procedural_variants must be >= 1")
        from ..core.dit.memory import STORAGES
        if self.base_storage not in STORAGES:
            raise ValueError(f"base_storage must be one of {STORAGES}, got {self.base_storage!r}")
        if self.base_storage != "default":
            if self.model_kind == "toy":
                raise ValueError("base_storage fp8 needs a frozen base with a LoRA; the toy trains its whole "
                                 "transformer: use model_kind 'flux', or base_storage 'default'")
            if not self.gradient_checkpointing:
                raise ValueError(f"base_storage {self.base_storage!r} saves memory only with gradient checkpointing "
                                 "(without it autograd keeps an up-cast copy of every weight until the backward pass); "
                                 "set \"gradient_checkpointing\": true")

    # ------------------------------------------------------------------------------------ JSON
    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a dict; unknown keys raise ``ValueError`` naming them and listing the known ones."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: a training config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys are allowed
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"known keys are {', '.join(sorted(known))}")
        return cls(**data)

    @classmethod
    def load(cls, path: str, overrides: Optional[Dict[str, Any]] = None) -> "TrainConfig":
        """Read a JSON config (a path, or the name of a bundled config such as ``"toy"``)."""
        path = resolve_config_path(path)
        with open(path, "r", encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON ({exc})") from exc
        if overrides:
            data.update(overrides)
        return cls.from_dict(data, source=path)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str) -> None:
        """Write the config as JSON, atomically (:func:`diffcamera.core.safe_paths.write_json_atomic`)."""
        from ..core.safe_paths import write_json_atomic
        write_json_atomic(self.to_dict(), path, indent=2, sort_keys=True)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with some fields changed (validated; unknown names refused)."""
        data = self.to_dict()
        data.update(changes)
        return TrainConfig.from_dict(data, source="override")

    def fingerprint(self) -> str:
        """Hash of the fields that change what training computes (hex, 16 chars)."""
        data = {k: v for k, v in self.to_dict().items() if k not in self.BOOKKEEPING
                and not (k in self.ADDED_LATER and v == self.ADDED_LATER[k])}
        if self.lr_schedule == "constant":
            data.pop("steps")  # extending a constant-LR run is a legitimate resume
        blob = json.dumps(data, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def diff(self, other: Dict[str, Any]) -> List[str]:
        """Names of computation-relevant fields whose values differ from the dict ``other``."""
        mine = self.to_dict()
        return sorted(k for k in mine if k not in self.BOOKKEEPING and k in other and mine[k] != other[k]
                      and not (k == "steps" and self.lr_schedule == "constant"))

    def refocus_config(self, family: Optional[str] = None):
        """The :class:`~diffcamera.core.dit.config.RefocusModelConfig` this run builds: the ``model`` entries over the
        defaults of ``model_kind`` (``trained_size`` defaults to ``size``; a FLUX family is ``family``, else
        ``model["family"]``, else guessed from ``base_path``). Unknown ``model`` keys are refused, naming them."""
        from ..core.dit import toy as toy_cfgs
        from ..core.dit.config import RefocusModelConfig
        known = {f.name for f in dataclasses.fields(RefocusModelConfig)}
        unknown = sorted(set(self.model) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in 'model': {', '.join(map(repr, unknown))}; "
                             f"known keys are {', '.join(sorted(known))}")
        changes = dict(self.model)
        changes.setdefault("trained_size", self.size)
        if self.model_kind == "toy":
            return toy_cfgs.toy_config(**changes)
        fam = changes.pop("family", None)
        if family is None and fam is None:
            from ..core.dit.loading import guess_family
            fam = guess_family(self.base_path) if self.base_path else "flux1-kontext-dev"
        cfg = toy_cfgs.flux_config(family or fam, **changes)
        if cfg.prediction == "residual":
            raise ValueError("model.prediction 'residual' needs an output layer trained from zero (the toy); a FLUX "
                             "base with a LoRA keeps its pretrained velocity output: use prediction 'velocity'")
        return cfg

    @property
    def resolved_mixed_precision(self) -> str:
        if self.mixed_precision != "auto":
            return self.mixed_precision
        import torch
        return "bf16" if torch.cuda.is_available() else "no"


def resolve_config_path(path: str) -> str:
    """A file path, or a bundled config name (``"toy"`` -> ``training/configs/toy.json``)."""
    if os.path.isfile(path):
        return path
    bundled = os.path.join(CONFIG_DIR, path if path.endswith(".json") else f"{path}.json")
    if os.path.isfile(bundled):
        return bundled
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".json")) if os.path.isdir(CONFIG_DIR) else []
    raise FileNotFoundError(f"training config {path!r} not found; give a JSON file or one of the bundled "
                            f"configs: {', '.join(names)}")
