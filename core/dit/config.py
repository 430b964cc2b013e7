"""The refocus model's configuration: one JSON-serialisable dataclass shared by model, LoRA files and loaders.

A :class:`RefocusModelConfig` travels with every saved LoRA / toy bundle (safetensors metadata and a sidecar
``.json``) so a file states what base it was trained for (``family``) and how conditions are laid out
(``condition_layout``); :func:`diffcamera.core.dit.lora.load_refocus_lora` refuses a mismatch, naming both.

Families
--------
``"toy"``
    Tiny FLUX-architecture DiT (diffusers ``FluxTransformer2DModel``, random init, fully trained) on top of an
    exactly invertible pixel-space "autoencoder" (pixel-unshuffle by 4; latents ``[B, 48, H/4, W/4]``).
``"flux1-kontext-dev"`` / ``"flux1-dev"``
    FLUX.1 Kontext [dev] / FLUX.1 [dev] (12 B transformer, 16-channel VAE, ×8). A FLUX-architecture model of
    another size built from explicit ``transformer`` / ``autoencoder`` configs (the tests' tiny random FLUX,
    ``tests/tiny_dit.py``) carries the family whose architecture it copies.

Predictions (``prediction``: what the transformer's output means, :func:`~diffcamera.core.dit.model.velocity_from_output`)
-----------------------------------------------------------------------------------------------------------------
``"velocity"``
    The rectified-flow velocity ``v ≈ noise − x0`` (what FLUX bases are pretrained to predict; LoRA families).
``"residual"``
    A latent residual over the reference: ``x̂0 = reference + output``, ``v = (x_σ − x̂0)/σ``. With a
    zero-initialised output layer the model returns its reference exactly (whatever the steps and denoise) until
    training teaches it a correction: the toy refines the physics estimate this way (fully trained, no LoRA).

Condition layouts (see :mod:`diffcamera.core.dit.model`)
-----------------------------------------------------
``"fused"`` (default)
    The projected camera map is ADDED to the reference latent; the sequence is ``[noisy ; reference]``
    (RoPE index 0 / 1), exactly FLUX Kontext with one reference image: zero extra tokens.
``"separate"``
    Camera tokens are appended as a third block ``[noisy ; reference ; camera]`` with RoPE index 2
    (one extra token per noisy token, as the paper's "reference, depth, noisy latent in one sequence").
The default is ``"fused"`` because it costs (measured, ``benchmarks/bench_refocus_step.py``) ~1.0× a Kontext
step, while ``"separate"`` grows the image sequence by 50 % and attention by ~2.2× at 1024² — over the
≤ 1.25× budget.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import List, Optional

FAMILIES = ("toy", "flux1-kontext-dev", "flux1-dev")
LAYOUTS = ("fused", "separate")
PREDICTIONS = ("velocity", "residual")
#: Inner width (heads × head dim) of the FLUX.1 transformer; narrower FLUX-architecture models are test models.
FLUX1_INNER_DIM = 3072

#: LoRA targets (suffixes of diffusers ``FluxTransformer2DModel`` module names), all mapped by ComfyUI's
#: ``comfy.utils.flux_to_diffusers``: attention q/k/v/out of both block kinds, image MLPs, the single-block MLP
#: in/out projections, the patch embedder (which also embeds the reference/camera tokens) and the final
#: projection (suffix ``proj_out`` matches both the single-block and the final one).
DEFAULT_LORA_TARGETS = ["x_embedder", "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
                        "ff.net.0.proj", "ff.net.2", "proj_mlp", "proj_out"]


@dataclass
class RefocusModelConfig:
    """Everything needed to rebuild (or check compatibility with) a refocus model.

    Attributes:
        family: base model family, one of :data:`FAMILIES`.
        condition_layout: ``"fused"`` or ``"separate"`` (:data:`LAYOUTS`).
        latent_channels: ``C`` of the autoencoder latents (16 for FLUX, 48 for the toy).
        vae_scale_factor: pixels per latent pixel (8 for FLUX, 4 for the toy). Tokens pack 2×2 latent pixels,
            so one token covers ``2·vae_scale_factor`` pixels.
        camera_channels: channels of :func:`~diffcamera.core.dit.conditions.build_camera_map` (6).
        camera_subgrid: the camera map is area-downsampled to ``camera_subgrid × camera_subgrid`` cells per token
            and each token's cells are flattened (``camera_channels · camera_subgrid²`` values) before the
            projection.
        camera_hidden: width of the camera projection MLP.
        coc_scale: pixels of circle of confusion that map to 1.0 in the camera map (8 for the toy: one token;
            32 for FLUX).
        prediction: what the transformer outputs, one of :data:`PREDICTIONS` (module docstring).
        lora_rank: LoRA rank; ``0`` = no LoRA, the whole transformer is trainable (toy family).
        lora_alpha: LoRA alpha (scale = alpha / rank); default = rank (scale 1, read alike everywhere).
        lora_targets: module-name suffixes that get a LoRA.
        prompt: the training prompt (text); its embedding travels in the LoRA file.
        trained_size: the long side (px) the model was trained at; above it the sampler tiles.
        transformer: kwargs of ``FluxTransformer2DModel`` for toy / tiny families (``None`` for real FLUX,
            whose config comes from the checkpoint or ``assets/configs``).
        autoencoder: kwargs of the toy autoencoder or tiny ``AutoencoderKL`` (``None`` for real FLUX).
        scaling_factor / shift_factor: FLUX latent normalisation ``z' = (z − shift)·scale``.
        version: file-format version.
    """

    family: str = "toy"
    condition_layout: str = "fused"
    latent_channels: int = 48
    vae_scale_factor: int = 4
    camera_channels: int = 6
    camera_subgrid: int = 4
    camera_hidden: int = 128
    coc_scale: float = 32.0
    prediction: str = "velocity"
    lora_rank: int = 0
    lora_alpha: Optional[float] = None
    lora_targets: List[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    prompt: str = ""
    trained_size: int = 64
    transformer: Optional[dict] = None
    autoencoder: Optional[dict] = None
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    version: int = 1

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; expected one of {FAMILIES}")
        if self.condition_layout not in LAYOUTS:
            raise ValueError(f"unknown condition_layout {self.condition_layout!r}; expected one of {LAYOUTS}")
        if self.prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {self.prediction!r}; expected one of {PREDICTIONS}")
        if self.lora_alpha is None:
            self.lora_alpha = float(self.lora_rank) if self.lora_rank else None

    # ------------------------------------------------------------------------------------ derived
    @property
    def token_pixels(self) -> int:
        """Pixels per token side (``2 · vae_scale_factor``)."""
        return 2 * self.vae_scale_factor

    @property
    def token_dim(self) -> int:
        """Values per packed token (``4 · latent_channels``) = the transformer's ``in_channels``."""
        return 4 * self.latent_channels

    @property
    def pixel_multiple(self) -> int:
        """Inputs are padded to a multiple of this many pixels (16 for every family)."""
        return max(16, self.token_pixels)

    # ------------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, source: str = "refocus model config") -> "RefocusModelConfig":
        """Build from a dict; unknown keys raise ``ValueError`` naming them (as the training config does)."""
        if not isinstance(data, dict):
            raise ValueError(f"{source}: must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known keys are "
                             f"{', '.join(sorted(known))} (a file written by a newer DiffCamera? update the pack)")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "RefocusModelConfig":
        return cls.from_dict(json.loads(text))

    def replace(self, **changes) -> "RefocusModelConfig":
        return dataclasses.replace(self, **changes)


def family_compatible(base_family: str, lora_family: str) -> bool:
    """Whether a LoRA trained on ``lora_family`` may be applied to a ``base_family`` model (exact match)."""
    return base_family == lora_family
