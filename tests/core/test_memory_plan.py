"""The training memory plan (issue 11.5): exact parameter counts, the activation estimate against what autograd really
keeps (tiny configs on the CPU), fp8 base weights in training, and the trainer's up-front refusal."""
import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from diffcamera.core.dit.memory import (GiB, InsufficientMemoryError, activation_bytes, apply_weight_storage,
                                        count_parameters, estimate_training_bytes, prepare_training,
                                        saved_activation_bytes, saved_storages)
from diffcamera.core.dit.model import build_from_config as build_tiny_flux_model, build_toy_model
from diffcamera.core.dit.toy import TOY_TRANSFORMER, flux_config, toy_config
from tiny_dit import TINY_FLUX_TRANSFORMER, tiny_flux_config, tiny_flux_model_entry
from diffcamera.training.config import TrainConfig
from diffcamera.training.dataset import synthetic_batch
from diffcamera.training.losses import refocus_loss

#: a second tiny shape (more blocks, 3 heads of 32, LoRA rank 8) so the estimate is not fitted to one config
WIDER = dict(TINY_FLUX_TRANSFORMER, num_layers=2, num_single_layers=3, attention_head_dim=32, num_attention_heads=3,
             axes_dims_rope=[8, 12, 12])


class CudaAutocastLayerNorm(TorchFunctionMode):
    """CUDA autocast's policy for ``layer_norm`` (on its fp32 list: inputs up-cast, fp32 output), on the CPU, whose
    autocast leaves layer_norm alone. Lets the CPU exercise the estimate's CUDA branch."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is F.layer_norm:
            args = (args[0].float(),) + tuple(args[1:])
        return func(*args, **(kwargs or {}))


def _model(mode, tcfg=None, rank=4):
    cfg = tiny_flux_config(lora_rank=rank, **({"transformer": tcfg} if tcfg else {}))
    m = build_tiny_flux_model(cfg)
    mixed = mode != "fp32"
    if mixed:
        m.transformer.to(torch.bfloat16)
        m.compute_dtype = torch.bfloat16
    prepare_training(m, mixed_precision=mixed)
    return m, mixed


def _loss_fn(model, mode, px, batch, mixed):
    b = synthetic_batch(batch, px, torch.Generator().manual_seed(0))

    def fn():
        ac = torch.autocast("cpu", dtype=torch.bfloat16) if mixed else contextlib.nullcontext()
        ln = CudaAutocastLayerNorm() if mode == "bf16-cuda-layernorm" else contextlib.nullcontext()
        with ac, ln:
            return refocus_loss(model, b, torch.Generator().manual_seed(1))["loss"]
    return fn


def _estimate(model, mode, px, batch, mixed, checkpointing=False):
    return estimate_training_bytes(model.config, px, batch, weight_dtype=torch.bfloat16 if mixed else torch.float32,
                                   mixed_precision=mixed, device_type="cuda" if mode == "bf16-cuda-layernorm" else "cpu",
                                   gradient_checkpointing=checkpointing)


# ------------------------------------------------------------------------------------------ parameter counts
@pytest.mark.parametrize("storage", ["default", "fp8_e4m3fn"])
def test_parameter_counts_are_exact(storage):
    cfg = tiny_flux_config(lora_rank=4)
    counts = count_parameters(cfg, weight_dtype=torch.float32, storage=storage)
    m = build_tiny_flux_model(cfg)
    apply_weight_storage(m.transformer, storage, torch.float32)
    trainable = {id(p) for p in m.trainable_parameters()}
    base = [p for p in m.transformer.parameters() if id(p) not in trainable]
    assert counts.base == sum(p.numel() for p in base)
    assert counts.base_bytes == sum(p.numel() * p.element_size() for p in base)
    assert counts.trainable == sum(p.numel() for p in m.trainable_parameters())
    assert counts.vae == sum(p.numel() for p in m.autoencoder.parameters())
    if storage == "default":
        assert counts.block_upcast_bytes == counts.all_upcast_bytes == 0
    else:  # some weights really are 8-bit, norms/modulation/LoRA are not
        assert 0 < counts.block_upcast_bytes < counts.all_upcast_bytes
        assert {p.dtype for p in base} == {torch.float8_e4m3fn, torch.float32}


def test_full_flux_plan_and_the_bundled_configs():
    """Full FLUX.1 Kontext [dev] counted on the meta device; the 24 GB config fits 22.5 GiB free, the bf16 one
    does not (it needs a 48 GB card), and neither fits without gradient checkpointing."""
    cfg = flux_config("flux1-kontext-dev", lora_rank=32, lora_alpha=32.0)
    c = count_parameters(cfg, storage="fp8_e4m3fn")
    assert c.base + c.lora == 11_901_408_320 + c.lora  # FLUX.1's 11.9 B transformer parameters
    assert 90e6 < c.lora < 100e6 and c.base_bytes < 15.5 * GiB
    need = {n: TrainConfig.load(n).refocus_config() for n in ("flux_kontext_lora", "flux_kontext_lora_24gb")}
    fp8 = estimate_training_bytes(need["flux_kontext_lora_24gb"], 512, 1, storage="fp8_e4m3fn")
    bf16 = estimate_training_bytes(need["flux_kontext_lora"], 512, 1)
    assert fp8.total < 22.5 * GiB < bf16.total < 44 * GiB
    assert estimate_training_bytes(need["flux_kontext_lora"], 512, 1, gradient_checkpointing=False).total > 48 * GiB
    # LoRA master weights + gradients + AdamW states: ~1.5 GiB, small next to the base
    assert (bf16.trainable_weights + bf16.gradients + bf16.optimizer_states) < 1.6 * GiB


# ------------------------------------------------------------------------------------------ activations
@pytest.mark.parametrize("mode", ["fp32", "bf16", "bf16-cuda-layernorm"])
@pytest.mark.parametrize("px,batch,tcfg,rank", [(256, 1, None, 4), (128, 2, None, 4), (256, 1, WIDER, 8)])
def test_activation_estimate_matches_autograd(mode, px, batch, tcfg, rank):
    torch.manual_seed(0)
    m, mixed = _model(mode, tcfg, rank)
    measured = saved_activation_bytes(_loss_fn(m, mode, px, batch, mixed), exclude=[m])
    est = _estimate(m, mode, px, batch, mixed).activations
    assert abs(est / measured - 1) < 0.06, (est, measured)


def test_activation_estimate_of_the_fully_trained_toy():
    m = build_toy_model(toy_config(transformer=dict(TOY_TRANSFORMER, num_layers=1, num_single_layers=2)))
    prepare_training(m)
    measured = saved_activation_bytes(_loss_fn(m, "fp32", 64, 2, False), exclude=[m])
    est = _estimate(m, "fp32", 64, 2, False).activations
    assert abs(est / measured - 1) < 0.10, (est, measured)


@pytest.mark.parametrize("mode", ["fp32", "bf16-cuda-layernorm"])
def test_checkpointed_activations_are_the_block_inputs(mode):
    """With gradient checkpointing autograd keeps what the hooks see outside the blocks plus every block's inputs
    (and autocast's cache of bf16 LoRA weight copies, which the recomputed blocks save out of the hooks' sight: the
    test without checkpointing sees them)."""
    m, mixed = _model(mode, WIDER, 8)
    m.transformer.enable_gradient_checkpointing()
    t = m.transformer
    kept = {}

    def grab(_mod, args, kwargs):
        for x in list(args) + list(kwargs.values()):
            for y in (x if isinstance(x, (tuple, list)) else (x,)):  # the RoPE (cos, sin) pair is kept too
                if torch.is_tensor(y):
                    kept.setdefault(y.untyped_storage()._cdata, y.untyped_storage().nbytes())
    handles = [b.register_forward_pre_hook(grab, with_kwargs=True)
               for b in list(t.transformer_blocks) + list(t.single_transformer_blocks)]
    seen = saved_storages(_loss_fn(m, mode, 256, 1, mixed), exclude=[m])
    for h in handles:
        h.remove()
    measured = sum({**kept, **seen}.values())
    plan = _estimate(m, mode, 256, 1, mixed, checkpointing=True)
    est = plan.activations - (plan.counts.trainable * 2 if mixed else 0)
    assert abs(est / measured - 1) < 0.06, (est, measured)


def test_activation_bytes_grow_linearly_with_tokens_and_checkpointing_saves():
    kw = dict(text_tokens=512, samples=2, lora_rank=32, lora_targets=flux_config().lora_targets)
    full = {"num_attention_heads": 24, "attention_head_dim": 128, "num_layers": 19, "num_single_layers": 38,
            "in_channels": 64}
    a = activation_bytes(full, image_tokens=2048, **kw)["kept"]
    b = activation_bytes(full, image_tokens=8192, **kw)["kept"]
    assert 3.0 < b / a < 4.0  # the text tokens do not grow
    c = activation_bytes(full, image_tokens=2048, gradient_checkpointing=True, **kw)
    assert c["kept"] + c["recompute_block"] < a / 8


# ------------------------------------------------------------------------------------------ fp8 base weights
@pytest.mark.parametrize("checkpointing", [False, True])
def test_fp8_base_training_step_gives_the_lora_its_gradients(checkpointing):
    """Layerwise casting (diffusers) in a training step: every LoRA/camera gradient equals the one of a plain model
    whose base weights were rounded to fp8, so gradients flow through the 8-bit base unchanged."""
    torch.manual_seed(0)
    m = build_tiny_flux_model(tiny_flux_config(lora_rank=4))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n or "camera_encoder" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    ref = build_tiny_flux_model(tiny_flux_config(lora_rank=4))
    ref.load_state_dict(m.state_dict())
    prepare_training(m, storage="fp8_e4m3fn", gradient_checkpointing=checkpointing)
    fp8 = {n for n, p in m.transformer.named_parameters() if p.dtype == torch.float8_e4m3fn}
    assert fp8 and not any("lora_" in n for n in fp8)
    with torch.no_grad():
        for n, p in ref.transformer.named_parameters():
            if n in fp8:
                p.copy_(p.to(torch.float8_e4m3fn).float())
    prepare_training(ref, gradient_checkpointing=checkpointing)
    batch = synthetic_batch(1, 64, torch.Generator().manual_seed(0))
    grads = []
    for model in (m, ref):
        refocus_loss(model, batch, torch.Generator().manual_seed(1))["loss"].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for n in grads[1]:
        assert grads[0][n] is not None and grads[0][n].abs().sum() > 0, n
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-7)


def test_fp8_without_checkpointing_keeps_upcast_copies():
    """Why fp8 base storage requires gradient checkpointing: without it autograd keeps the up-cast weight copies."""
    def saved(storage):
        torch.manual_seed(0)
        m = build_tiny_flux_model(tiny_flux_config(lora_rank=4))
        prepare_training(m, storage=storage)
        return m, saved_activation_bytes(_loss_fn(m, "fp32", 64, 1, False), exclude=[m])
    _, plain = saved("default")
    m, fp8 = saved("fp8_e4m3fn")
    # exactly the 8-bit weight matrices whose layer input needs a gradient are kept up-cast: not the timestep/text
    # embedders, nor the first block's text q/k/v projections (their input is the frozen text embedding)
    t = m.transformer
    mods = list(t.transformer_blocks) + list(t.single_transformer_blocks) + [t.x_embedder, t.proj_out]
    first = t.transformer_blocks[0].attn
    no_grad_input = {id(x.base_layer.weight if hasattr(x, "base_layer") else x.weight)
                     for x in (first.add_q_proj, first.add_k_proj, first.add_v_proj)}
    upcast = sum(p.numel() * 4 for mod in mods for p in mod.parameters()
                 if p.dtype == torch.float8_e4m3fn and p.dim() == 2 and id(p) not in no_grad_input)
    assert fp8 - plain == upcast
    counts = count_parameters(m.config, weight_dtype=torch.float32, storage="fp8_e4m3fn")
    assert upcast <= counts.all_upcast_bytes  # what the estimate charges: an upper bound
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        TrainConfig(model_kind="flux", base_storage="fp8_e4m3fn")
    with pytest.raises(ValueError, match="toy"):
        TrainConfig(base_storage="fp8_e4m3fn", gradient_checkpointing=True)


def test_new_fields_keep_old_fingerprints():
    """Checkpoints written before base_storage / memory_check / the timestep fields / noise_from existed still resume (same
    fingerprint) when the new fields keep the old behaviour; the shifted timesteps of the new recipe do not."""
    import hashlib
    import json
    cfg = TrainConfig.load("flux_kontext_lora").replace(timestep_sampling="logit_normal", denoise_max=1.0,
                                                        resolution_shift=False, noise_from="target")
    old = {k: v for k, v in cfg.to_dict().items()
           if k not in TrainConfig.BOOKKEEPING and k not in TrainConfig.ADDED_LATER and k != "steps"}
    assert cfg.fingerprint() == hashlib.sha256(json.dumps(old, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfg.replace(resolution_shift=True).fingerprint() != cfg.fingerprint()
    assert cfg.replace(noise_from="reference").fingerprint() != cfg.fingerprint()
    assert cfg.replace(base_storage="fp8_e4m3fn").fingerprint() != cfg.fingerprint()
    assert cfg.replace(memory_check=False).fingerprint() == cfg.fingerprint()


# ------------------------------------------------------------------------------------------ the trainer's refusal
def _tiny_flux_run(tmp_path, **kw):
    base = dict(model_kind="flux", model=tiny_flux_model_entry(), size=32, procedural_scenes=2, procedural_variants=1,
                steps=2, batch_size=2,
                lr=1e-3, warmup_steps=1, checkpoint_every=0, output_dir=str(tmp_path / "run"), seed=0)
    base.update(kw)
    return TrainConfig(**base)


def test_trainer_refuses_up_front_naming_the_setting(tmp_path, monkeypatch):
    from diffcamera.training import memory, trainer
    cfg = _tiny_flux_run(tmp_path)
    need = memory.plan(cfg, "cpu").total
    ckpt = memory.plan(cfg.replace(gradient_checkpointing=True), "cpu").total
    assert ckpt < need
    monkeypatch.setattr(memory, "free_bytes", lambda device: (need + ckpt) // 2)

    def no_heavy_work(*a, **k):
        raise AssertionError("the refusal must come before the dataset and the model")
    monkeypatch.setattr(trainer, "build_dataset", no_heavy_work)
    monkeypatch.setattr(trainer, "build_model", no_heavy_work)
    with pytest.raises(InsufficientMemoryError, match=r'"gradient_checkpointing": true.*memory_check') as exc:
        trainer.train(cfg, log=lambda s: None)
    assert "GiB" in str(exc.value) and "estimate" in str(exc.value)
    # nothing fits: says so, still names what was considered
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1)
    with pytest.raises(InsufficientMemoryError, match="would not fit"):
        trainer.train(cfg, log=lambda s: None)
    # memory_check false: no refusal (the heavy work starts)
    with pytest.raises(AssertionError, match="before the dataset"):
        trainer.train(cfg.replace(memory_check=False), log=lambda s: None)
    # the CLI prints it as an error (exit code 2), not a traceback
    from diffcamera.cli import main
    monkeypatch.setattr(memory, "free_bytes", lambda device: 1)
    assert main(["train", "toy", "--set", f"output_dir={tmp_path / 'cli'}"]) == 2


def test_free_memory_query_on_this_machine():
    from diffcamera.training.memory import free_bytes
    free = free_bytes("cpu")
    assert free is None or free > 2 ** 20


def test_tiny_flux_trains_with_an_fp8_base(tmp_path):
    from diffcamera.training.trainer import train
    cfg = _tiny_flux_run(tmp_path, base_storage="fp8_e4m3fn", gradient_checkpointing=True)
    res = train(cfg, log=lambda s: None)
    assert res.steps_done == 2 and res.lora_path and all(torch.isfinite(torch.tensor(r["loss"])) for r in res.losses)


def test_flux_kind_trains_from_local_files_with_an_fp8_base(tmp_path):
    """model_kind 'flux' (the path of the bundled FLUX configs) on a tiny FLUX saved as diffusers folders: the memory
    plan reads the base's own config, the LoRA is added in the compute dtype before the base goes to 8 bits."""
    from tiny_dit import save_tiny_flux_bundle
    from diffcamera.training import memory
    from diffcamera.training.trainer import build_model, train
    paths, _ = save_tiny_flux_bundle(str(tmp_path / "models"))
    cfg = _tiny_flux_run(tmp_path, model_kind="flux", base_path=paths["transformer"], vae_path=paths["vae"],
                         model={"lora_rank": 4}, base_storage="fp8_e4m3fn", gradient_checkpointing=True)
    assert memory.plan(cfg, "cpu").counts.base == sum(p.numel() for p in build_model(cfg).transformer.parameters()
                                                      if not p.requires_grad)
    res = train(cfg, log=lambda s: None)
    assert res.steps_done == 2 and res.lora_path
