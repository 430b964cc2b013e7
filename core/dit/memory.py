"""Precision, weight storage and offloading of the refocus model; out-of-memory advice; the training memory plan.

* **dtype** (compute): ``"auto"`` = bf16 on CUDA (fp16 where bf16 is unsupported), fp32 on the CPU; or
  ``"bf16" | "fp16" | "fp32"``. The VAE never runs in fp16 (FLUX's VAE overflows): it uses bf16/fp32.
* **storage** ``"fp8_e4m3fn"`` / ``"fp8_e5m2"``: transformer weights kept in 8 bits and up-cast per layer at
  forward time with diffusers' layerwise casting (``enable_layerwise_casting``; norms, the AdaLN modulation
  linears (their names contain ``norm``), RoPE and LoRA matrices stay in the compute dtype:
  :data:`FP8_SKIP_PATTERNS`). FLUX.1 (11.9 B parameters): 22.2 GiB in bf16 -> 14.1 GiB (8.65 B parameters in
  fp8, 3.25 B — norms and AdaLN modulation — in bf16; counted exactly by :func:`count_parameters`).
* **offload**: ``"none"`` (everything on the GPU; ComfyUI's model management loads it fully and frees other models
  first), ``"group"`` (diffusers block-level group offloading: one transformer block on the GPU at a time, weights on
  the CPU, CUDA-stream prefetch) or ``"leaf"`` (leaf-level: lowest memory, slowest).

When CUDA runs out of memory, :func:`oom_message` names the next mode to try (fp8 storage, then group, then leaf
offloading, then a smaller tile size); the node frees what we loaded before raising it.

Training (:func:`prepare_training`, :func:`estimate_training_bytes`): LoRA weights are fp32 master weights under
autocast (AdamW on bf16 weights loses small updates); the frozen base may be stored in fp8 — which saves memory
**only with gradient checkpointing**: autograd keeps the up-cast (compute-dtype) copy of every linear weight it needs
for the backward pass until that pass, so without checkpointing all of them stay alive at once (measured with
``saved_tensors`` on the CPU, see ``tests/core/test_memory_plan.py``); with checkpointing only the block being
recomputed holds them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable, Dict, Optional

import torch

DTYPES = ("auto", "bf16", "fp16", "fp32")
STORAGES = ("default", "fp8_e4m3fn", "fp8_e5m2")
OFFLOAD_MODES = ("none", "group", "leaf")
_TORCH = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
#: Module-name patterns that fp8 storage leaves in the compute dtype (regular expressions searched in the names, as
#: diffusers' layerwise casting does): positional embedding, every norm and AdaLN modulation linear, LoRA matrices.
FP8_SKIP_PATTERNS = ("pos_embed", "norm", "lora_")
GiB = 2 ** 30


class InsufficientMemoryError(ValueError):
    """The chosen settings cannot fit the device's free memory (raised before any heavy work; names the fix)."""


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """Compute dtype for ``name`` on ``device`` (``"auto"``: bf16/fp16 on CUDA, fp32 elsewhere)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    if name != "auto":
        return _TORCH[name]
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def apply_memory_options(model, dtype: torch.dtype, storage: str = "default", offload: str = "none",
                         device: Optional[torch.device] = None) -> None:
    """Cast and place ``model`` (a RefocusModel) for inference on ``device``.

    Order matters: cast to the compute dtype, then fp8 storage (layerwise casting hooks), then offloading hooks.
    """
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    if offload not in OFFLOAD_MODES:
        raise ValueError(f"offload must be one of {OFFLOAD_MODES}, got {offload!r}")
    device = torch.device(device or "cpu")
    t = model.transformer
    _cast(t, dtype)
    model.camera_encoder.to(dtype=torch.float32)
    ae = model.autoencoder
    if hasattr(ae, "vae"):
        _cast(ae.vae, torch.float32 if dtype == torch.float32 else torch.bfloat16)
    model.compute_dtype = dtype
    apply_weight_storage(t, storage, dtype)
    if offload == "none":
        model.to(device)
        model.onload_device = None
    else:
        kind = "block_level" if offload == "group" else "leaf_level"
        kw = dict(onload_device=device, offload_device=torch.device("cpu"), offload_type=kind,
                  use_stream=device.type == "cuda")
        if kind == "block_level":
            kw["num_blocks_per_group"] = 1
        t.enable_group_offload(**kw)
        model.camera_encoder.to(device)
        model.autoencoder.to(device)
        model.onload_device = device
    model.storage, model.offload_mode = storage, offload


def storage_dtype(storage: str) -> Optional[torch.dtype]:
    """The torch dtype of a weight storage mode (``None`` for ``"default"``: the compute dtype)."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, got {storage!r}")
    return None if storage == "default" else getattr(torch, "float8_" + storage.split("_", 1)[1])


def apply_weight_storage(transformer, storage: str, compute_dtype: torch.dtype) -> None:
    """Keep ``transformer``'s weights in ``storage`` (fp8) and up-cast them layer by layer to ``compute_dtype``
    (diffusers layerwise casting; :data:`FP8_SKIP_PATTERNS` stay as they are). ``"default"``: nothing to do.

    Add LoRA layers *before* calling this: peft gives new adapters the dtype of their base layer (fp8 here).
    Works on a meta-device model too (the GPU check and :func:`count_parameters` use that)."""
    sd = storage_dtype(storage)
    if sd is not None:
        transformer.enable_layerwise_casting(storage_dtype=sd, compute_dtype=compute_dtype,
                                             skip_modules_pattern=FP8_SKIP_PATTERNS)


def prepare_training(model, *, storage: str = "default", gradient_checkpointing: bool = False,
                     mixed_precision: bool = False) -> None:
    """Set a :class:`~diffcamera.core.dit.model.RefocusModel` up for training steps (what the trainer and the GPU
    check do). ``model.trainable_parameters()`` (the LoRA, or the whole toy transformer, and the camera encoder) train;

    * everything else is frozen (``requires_grad=False``); the model is put in train mode;
    * under ``mixed_precision`` (autocast) the trainable parameters become fp32 master weights, and peft's casting of
      a LoRA layer's input to its weight dtype is switched off, so a LoRA keeps the compute-dtype activation it reads
      for its backward (not an fp32 copy per adapted layer); autocast runs the LoRA matmuls in bf16;
    * ``storage`` (fp8) stores the frozen base in 8 bits (:func:`apply_weight_storage`), after the LoRA exists;
    * ``gradient_checkpointing`` recomputes each transformer block in the backward pass.
    """
    trainable = list(model.trainable_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trainable:
        if mixed_precision and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()
        p.requires_grad_(True)
    if storage != "default":
        if not model.has_lora:
            raise ValueError("fp8 base storage needs a LoRA: the base must be frozen (model_kind 'flux')")
        apply_weight_storage(model.transformer, storage, model.compute_dtype)
    if mixed_precision:
        from .lora import lora_layers
        for layer in lora_layers(model):
            layer.cast_input_dtype_enabled = False
    if gradient_checkpointing and hasattr(model.transformer, "enable_gradient_checkpointing"):
        model.transformer.enable_gradient_checkpointing()
    model.train()


def _cast(module, dtype) -> None:
    if any(p.is_floating_point() and p.dtype != dtype for p in module.parameters()):
        module.to(dtype=dtype)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA) out-of-memory error."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def next_memory_option(storage: str, offload: str) -> str:
    """Advice: which setting to try after an out-of-memory error."""
    if storage == "default":
        return "set the loader's weight storage to fp8_e4m3fn (halves the transformer's memory)"
    if offload == "none":
        return "set the loader's offload mode to 'group' (one transformer block on the GPU at a time)"
    if offload == "group":
        return "set the loader's offload mode to 'leaf' (lowest memory, slowest)"
    return "enable tiling with a smaller tile size, or use a smaller image"


def oom_message(storage: str, offload: str, where: str = "refocus") -> str:
    return (f"out of GPU memory during {where} (weight storage {storage!r}, offload {offload!r}); the models were "
            f"unloaded. To fit, {next_memory_option(storage, offload)}.")


# ------------------------------------------------------------------------------------------ training memory plan
def _nbytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def shipped_config(name: str) -> dict:
    """A config shipped in ``assets/configs`` (``"flux1-kontext-dev/transformer"``, ``"flux1-vae/vae"``), without the
    ``_``-prefixed bookkeeping keys."""
    from .files import CONFIGS
    with open(os.path.join(CONFIGS, name, "config.json"), encoding="utf-8") as fh:
        return {k: v for k, v in json.load(fh).items() if not k.startswith("_")}


def default_configs(config) -> tuple:
    """``(transformer kwargs, VAE kwargs or None)`` of a :class:`RefocusModelConfig`: its own (toy / tiny families) or
    the shipped FLUX.1 configs. ``None`` VAE: the toy's parameter-free pixel-shuffle autoencoder."""
    tcfg = config.transformer
    if tcfg is None:
        tcfg = shipped_config(f"{config.family if config.family == 'flux1-dev' else 'flux1-kontext-dev'}/transformer")
    vcfg = dict(config.autoencoder) if config.autoencoder else None
    if vcfg is None and config.family in ("flux1-kontext-dev", "flux1-dev"):
        vcfg = shipped_config("flux1-vae/vae")
    if vcfg is not None and vcfg.get("kind", "autoencoder_kl") != "autoencoder_kl":
        vcfg = None
    if vcfg is not None:
        vcfg.pop("kind", None)
    return dict(tcfg), vcfg


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    """Exact parameter counts of a refocus model (built on the meta device).

    Attributes:
        base: frozen transformer parameters; ``base_bytes`` their bytes as stored (fp8 storage: the fp8 part + the
            :data:`FP8_SKIP_PATTERNS` part in the weight dtype).
        trainable: LoRA (or the whole toy transformer) + camera encoder parameters.
        lora: of which LoRA matrices.
        block_upcast_bytes: the largest transformer block's fp8-stored weights in the compute dtype (what one block
            holds while it is recomputed under fp8 storage); ``all_upcast_bytes``: the same over the whole model (an
            upper bound of what training without checkpointing keeps: the timestep/text embedders' copies are not
            kept, 0.4 % of FLUX.1's).
        vae: autoencoder parameters (0 for the toy's pixel shuffle).
    """

    base: int
    base_bytes: int
    trainable: int
    lora: int
    block_upcast_bytes: int
    all_upcast_bytes: int
    vae: int


def _meta_model(config, transformer_config: dict, weight_dtype: torch.dtype, storage: str):
    from diffusers import FluxTransformer2DModel
    from .autoencoder import PixelShuffleAutoencoder
    from .model import RefocusModel
    prev = torch.get_default_dtype()
    torch.set_default_dtype(weight_dtype)
    try:
        with torch.device("meta"):
            transformer = FluxTransformer2DModel(**transformer_config)
    finally:
        torch.set_default_dtype(prev)
    model = RefocusModel(config.replace(lora_rank=0, transformer=None, autoencoder=None), transformer,
                         PixelShuffleAutoencoder(config.vae_scale_factor))
    if config.lora_rank > 0:
        from .lora import add_lora
        add_lora(model, config.lora_rank, config.lora_alpha, config.lora_targets)
    apply_weight_storage(transformer, storage, weight_dtype)
    return model


@functools.lru_cache(maxsize=16)
def _counts(key: str) -> ParameterCounts:
    from .config import RefocusModelConfig
    d = json.loads(key)
    config = RefocusModelConfig.from_dict(d["config"])
    wdt = getattr(torch, d["weight_dtype"])
    model = _meta_model(config, d["transformer"], wdt, d["storage"])
    trainable = {id(p) for p in model.trainable_parameters()}
    base = [p for p in model.transformer.parameters() if id(p) not in trainable]
    sd = storage_dtype(d["storage"])
    cbytes = _nbytes(wdt)

    def upcast(module):
        return sum(p.numel() for p in module.parameters() if sd is not None and p.dtype == sd) * cbytes

    t = model.transformer
    blocks = list(t.transformer_blocks) + list(t.single_transformer_blocks)
    vae = 0
    if d["vae"] is not None:
        from diffusers import AutoencoderKL
        with torch.device("meta"):
            vae = sum(p.numel() for p in AutoencoderKL(**d["vae"]).parameters())
    return ParameterCounts(
        base=sum(p.numel() for p in base), base_bytes=sum(p.numel() * p.element_size() for p in base),
        trainable=sum(p.numel() for p in model.trainable_parameters()),
        lora=sum(p.numel() for n, p in t.named_parameters() if "lora_" in n),
        block_upcast_bytes=max((upcast(b) for b in blocks), default=0), all_upcast_bytes=upcast(t), vae=vae)


def count_parameters(config, transformer_config: Optional[dict] = None, vae_config: Optional[dict] = None, *,
                     weight_dtype: torch.dtype = torch.bfloat16, storage: str = "default") -> ParameterCounts:
    """Exact :class:`ParameterCounts` of ``config`` (a :class:`RefocusModelConfig`): the transformer (from
    ``transformer_config``, default :func:`default_configs`) with the config's LoRA, built on the meta device (no
    memory, ~5 s for full FLUX.1, cached), ``storage`` applied the way the model applies it."""
    dt, dv = default_configs(config)
    key = json.dumps({"config": config.to_dict(), "transformer": transformer_config or dt,
                      "vae": vae_config if vae_config is not None else dv,
                      "weight_dtype": str(weight_dtype).replace("torch.", ""), "storage": storage}, sort_keys=True)
    return _counts(key)


@dataclasses.dataclass
class TrainingMemory:
    """Estimated bytes of one training step (see :func:`estimate_training_bytes`); ``parts`` for tables/messages."""

    base_weights: int
    trainable_weights: int
    gradients: int
    optimizer_states: int
    autoencoder: int
    activations: int
    backward_transient: int
    vae_encode: int
    reserve: int
    counts: ParameterCounts

    @property
    def persistent(self) -> int:
        """Alive for the whole run: weights, gradients, optimiser states."""
        return (self.base_weights + self.trainable_weights + self.gradients + self.optimizer_states
                + self.autoencoder)

    @property
    def step_peak(self) -> int:
        """The peak of a step above :attr:`persistent`: the backward pass, or the (no-grad) VAE encode before it."""
        return max(self.activations + self.backward_transient, self.vae_encode)

    @property
    def total(self) -> int:
        return self.persistent + self.step_peak + self.reserve

    def parts(self) -> Dict[str, int]:
        return {"base weights": self.base_weights, "trainable weights (fp32)": self.trainable_weights,
                "gradients": self.gradients, "optimiser states": self.optimizer_states,
                "autoencoder": self.autoencoder, "activations kept for backward": self.activations,
                "backward working set": self.backward_transient, "VAE encode (no grad, before the step)":
                self.vae_encode, "allocator/workspace reserve": self.reserve}

    def describe(self) -> str:
        p = self.parts()
        keep = ("base weights", "activations kept for backward", "backward working set")
        rest = sum(v for k, v in p.items() if k not in keep and not k.startswith("VAE encode"))
        return (f"base weights {p['base weights'] / GiB:.1f} GiB, LoRA/optimiser/VAE/reserve {rest / GiB:.1f} GiB, "
                f"activations {(self.activations + self.backward_transient) / GiB:.1f} GiB")


def _matches(name: str, targets) -> bool:
    """peft's suffix rule for ``target_modules`` lists (``name == t`` or ``name`` ends with ``"." + t``)."""
    return any(name == t or name.endswith("." + t) for t in targets)


def activation_bytes(transformer_config: dict, *, image_tokens: int, text_tokens: int, samples: int,
                     lora_rank: int = 0, lora_targets=(), act_bytes: int = 2, fp32_layernorm: bool = False,
                     gradient_checkpointing: bool = False, in_channels: Optional[int] = None,
                     noisy_tokens: int = 0, camera_values: int = 0, camera_hidden: int = 0) -> Dict[str, int]:
    """Bytes autograd keeps for the backward pass of one diffusers ``FluxTransformer2DModel`` forward with a frozen base
    and a LoRA (``lora_rank > 0``; ``0`` = the whole transformer trains, approximated), written out from the architecture (diffusers 0.35–0.42 FLUX blocks), per token and
    block. A frozen linear keeps only its weight (its input is needed for a weight gradient only), so an input is kept
    where a LoRA reads it (``lora_A`` needs it for its own gradient) or where an op needs it for the input gradient:

    * AdaLN (LayerNorm + modulation): the LayerNorm input (fp32 under CUDA autocast, ``fp32_layernorm``: ``layer_norm``
      is on autocast's fp32 list) + mean/rstd; the modulated output where a LoRA reads it — once, or, when it is fp32,
      once per adapted consumer (autocast casts it to bf16 for every linear separately);
    * RMSNorm of q and k: the fp32 input of ``pow`` (a copy when activations are bf16) + ``rsqrt`` per head;
    * attention: RoPE-rotated q, k, the value and the output over ``[text ; image]`` tokens + log-sum-exp per head;
    * double blocks, image and text stream: the ``to_out`` input where adapted (a copy for a batch > 1: ``split``
      then ``contiguous``), GELU's input (``M = 4·D``) and, where ``ff.net.2`` is adapted, its output; the text
      stream of the first block keeps less (its input needs no gradient);
    * single blocks: the ``cat`` LayerNorm input, GELU's input, the ``proj_out`` input ``[attention ; MLP]``;
    * LoRA: ``rank`` values per token for each adapted layer (``lora_A``'s output);
    * outside the blocks: ``x_embedder`` input, ``norm_out`` + ``proj_out`` inputs, RoPE cos/sin (shared by the
      samples), the camera encoder (``noisy_tokens`` tokens of ``camera_values`` → ``camera_hidden``), the loss.

    With ``gradient_checkpointing`` only each block's input (``[text ; image]`` tokens × D) stays; one block is then
    recomputed at a time in the backward pass (``recompute_block``). Checked against autograd's saved tensors on tiny
    configs in ``tests/core/test_memory_plan.py``.

    Returns bytes: ``{"kept", "recompute_block", "grads_in_flight", "per_block_double", "per_block_single"}``
    (``samples`` = the DiT batch).
    """
    c = transformer_config
    H, hd = int(c["num_attention_heads"]), int(c["attention_head_dim"])
    D, M = H * hd, 4 * H * hd
    Ld, Ls = int(c["num_layers"]), int(c["num_single_layers"])
    C_in = int(in_channels or c["in_channels"])
    I, T = int(image_tokens), int(text_tokens)
    S, e, r = I + T, int(act_bytes), int(lora_rank)
    full = r <= 0  # the whole transformer trains (toy): every linear keeps its input, modulation/gates/norms more
    ln_in = 4 if fp32_layernorm else e

    def ad(name):  # reads its input for a weight gradient: adapted by the LoRA (peft's suffix rule), or full training
        return 1 if full or _matches(name, lora_targets) else 0

    def ln(tokens, consumers, full_tokens=None):  # AdaLN: input + mean/rstd + the modulated output where read
        inp = (full_tokens if (full_tokens and not fp32_layernorm) else tokens) * D * ln_in
        n = sum(ad(x) for x in consumers)
        return inp + tokens * 8 + (n if fp32_layernorm else min(n, 1)) * tokens * D * e

    def rms(tokens):
        return tokens * (D * 4 + H * 4)

    def lora_out(tokens, layers):
        return sum(ad(x) for x in layers) * tokens * r * e if not full else 0

    # full training only: AdaLN outputs (for the scale's gradient), gate operands and RMSNorm outputs (trained weight)
    trained_norms = (lambda tokens, n_ln, n_gate: tokens * D * e * (n_ln + n_gate + 2)) if full else \
        (lambda tokens, n_ln, n_gate: 0)

    def stream(tokens, layers, first=False):
        q, k, v, out, ff0, ff2 = layers
        kept = (0 if first else ln(tokens, (q, k, v)) + 2 * rms(tokens))
        kept += ad(out) * (tokens * D * e if samples > 1 else 0)
        kept += ln(tokens, (ff0,)) + tokens * M * e + ad(ff2) * tokens * M * e
        return kept + lora_out(tokens, layers) + trained_norms(tokens, 2, 2)

    b0 = "transformer_blocks.0."
    img = [b0 + x for x in ("attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0", "ff.net.0.proj", "ff.net.2")]
    txt = [b0 + x for x in ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj", "attn.to_add_out",
                            "ff_context.net.0.proj", "ff_context.net.2")]
    joint = S * (4 * D * e + H * 4)
    double = stream(I, img) + stream(T, txt) + joint
    double_first = stream(I, img) + stream(T, txt, first=True) + joint
    s0 = "single_transformer_blocks.0."
    sl = [s0 + x for x in ("proj_mlp", "attn.to_q", "attn.to_k", "attn.to_v", "proj_out")]
    single = (ln(S, sl[:4]) + S * M * e + 2 * rms(S) + joint + ad(sl[4]) * S * (D + M) * e + lora_out(S, sl)
              + trained_norms(S, 1, 1))
    outside = (ad("x_embedder") * I * C_in * e + lora_out(I, ["x_embedder"])
               + ln(I, ["proj_out"], full_tokens=S) + lora_out(I, ["proj_out"])       # norm_out, proj_out
               + 3 * noisy_tokens * C_in * 4                                          # velocity, x0, loss (fp32)
               + noisy_tokens * (camera_values + 2 * camera_hidden) * 4)             # camera encoder
    shared = 2 * S * hd * 4                                                           # RoPE cos / sin
    blocks = (double_first + (Ld - 1) * double if Ld else 0) + Ls * single
    boundaries = (Ld + Ls) * S * D * e
    kept = samples * (outside + (boundaries if gradient_checkpointing else blocks)) + shared
    return {"kept": kept, "recompute_block": samples * max(double, single) if gradient_checkpointing else 0,
            "grads_in_flight": samples * S * (4 * D + M) * e, "per_block_double": double,
            "per_block_single": single}


def estimate_training_bytes(config, size: int, batch: int, *, transformer_config: Optional[dict] = None,
                            vae_config: Optional[dict] = None, weight_dtype: torch.dtype = torch.bfloat16,
                            mixed_precision: bool = True, device_type: str = "cuda", storage: str = "default",
                            gradient_checkpointing: bool = True, text_tokens: Optional[int] = None,
                            optimizer_state_bytes: int = 8, processes: int = 1) -> TrainingMemory:
    """Estimated memory of one training step of the trainer (:mod:`diffcamera.training.trainer`) on one device.

    Args:
        config: the model's :class:`~diffcamera.core.dit.config.RefocusModelConfig` (family, LoRA rank/targets,
            layout). ``transformer_config`` / ``vae_config``: diffusers kwargs (default :func:`default_configs`).
        size: training resolution (px, square). batch: scene groups per micro-batch (the DiT sees ``2·batch``
            samples: both focus planes).
        weight_dtype: the frozen base's dtype (bf16 on CUDA, fp32 on the CPU); ``storage``: fp8 base storage.
        mixed_precision: autocast (bf16) on; ``device_type == "cuda"`` adds CUDA autocast's fp32 ``layer_norm``.
        text_tokens: length of the stored prompt embedding (default: 512 for FLUX, the toy's 4).
        optimizer_state_bytes: per trainable parameter (AdamW fp32: 8; an 8-bit AdamW: 2).
        processes: > 1 adds DDP's gradient buckets.

    What it counts: base weights as stored + trainable fp32 master weights, their gradients and AdamW states (exact
    counts, :func:`count_parameters`); the autoencoder's weights; :func:`activation_bytes` for the ``[noisy ;
    reference (; camera)]`` sequence and, under autocast, its cached bf16 copies of the fp32 trainable weights; the
    backward working set (one recomputed block under checkpointing, the
    gradients in flight, under fp8 the up-cast copies: one block's with checkpointing, all without); the no-grad VAE
    encode of ``batch`` images (its own phase, before the step: full-resolution 128-channel convolutions and the
    mid-block attention computed without a fused kernel); a reserve of 256 MiB + 5 % for cuBLAS/attention workspaces
    and allocator rounding. The text embedding is stored, so no text encoder is loaded. An estimate, not a
    measurement: ``benchmarks/gpu_check.py`` prints it next to ``torch.cuda.max_memory_allocated``.
    """
    from .config import FLUX1_INNER_DIM
    from .model import TOY_TEXT_TOKENS
    tcfg, vcfg = default_configs(config)
    tcfg = transformer_config or tcfg
    vcfg = vae_config if vae_config is not None else vcfg
    counts = count_parameters(config, tcfg, vcfg, weight_dtype=weight_dtype, storage=storage)
    wbytes = _nbytes(weight_dtype)
    e = 2 if mixed_precision else wbytes
    f, p = config.vae_scale_factor, config.token_pixels
    n_img = (size // p) ** 2
    image_tokens = n_img * (3 if config.condition_layout == "separate" else 2)
    if text_tokens is None:
        inner = int(tcfg["num_attention_heads"]) * int(tcfg["attention_head_dim"])
        text_tokens = TOY_TEXT_TOKENS if config.family == "toy" or inner != FLUX1_INNER_DIM else 512
    samples = 2 * batch
    act = activation_bytes(tcfg, image_tokens=image_tokens, text_tokens=text_tokens, samples=samples,
                           lora_rank=config.lora_rank, lora_targets=config.lora_targets, act_bytes=e,
                           fp32_layernorm=mixed_precision and device_type == "cuda",
                           gradient_checkpointing=gradient_checkpointing, in_channels=config.token_dim,
                           noisy_tokens=n_img, camera_values=config.camera_channels * config.camera_subgrid ** 2,
                           camera_hidden=config.camera_hidden)
    upcast = 0
    if storage != "default":
        upcast = counts.block_upcast_bytes if gradient_checkpointing else counts.all_upcast_bytes
    vae_w = vae_enc = 0
    if vcfg is not None:
        vb = 4 if weight_dtype == torch.float32 else 2
        vae_w = counts.vae * vb
        c0 = int(vcfg.get("block_out_channels", [128])[0])
        lat = (size // f) ** 2
        vae_enc = batch * (3 * size * size * c0 * vb + 2 * lat * lat * vb)
    trainable = counts.trainable * 4 if (mixed_precision or weight_dtype == torch.float32) else counts.trainable * wbytes
    grads = trainable * (2 if processes > 1 else 1)
    opt = counts.trainable * optimizer_state_bytes
    transient = act["recompute_block"] + act["grads_in_flight"] + upcast
    # autocast caches one bf16 copy of every fp32 trainable weight it feeds to a matmul, until the region ends
    # (the trainer's autocast region holds forward and backward)
    kept = act["kept"] + (counts.trainable * 2 if mixed_precision else 0)
    dynamic = kept + transient
    return TrainingMemory(base_weights=counts.base_bytes, trainable_weights=trainable, gradients=grads,
                          optimizer_states=opt, autoencoder=vae_w, activations=kept,
                          backward_transient=transient, vae_encode=vae_enc,
                          reserve=256 * 2 ** 20 + int(0.05 * max(dynamic, vae_enc)), counts=counts)


def saved_storages(fn: Callable[[], torch.Tensor], exclude=()) -> Dict[int, int]:
    """Run ``fn`` (a forward pass) and return ``{storage id: bytes}`` of the distinct storages autograd saved for its
    backward, parameters/buffers of the modules in ``exclude`` left out (without gradient checkpointing, whose
    recomputed blocks hide their saved tensors from these hooks)."""
    # hold the excluded and the seen storages, so no address is reused for another storage during the run (fp8
    # storage swaps parameter data at every forward: the old storage would be freed and its address taken again)
    held = [t.untyped_storage() for m in exclude for t in list(m.parameters()) + list(m.buffers())]
    skip = {s._cdata for s in held}
    seen: Dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in skip and s._cdata not in seen:
            seen[s._cdata] = s.nbytes()
            held.append(s)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return seen


def saved_activation_bytes(fn: Callable[[], torch.Tensor], exclude=()) -> int:
    """Bytes of what autograd saved for the backward of ``fn`` (:func:`saved_storages`): what
    :func:`activation_bytes` estimates."""
    return sum(saved_storages(fn, exclude).values())
