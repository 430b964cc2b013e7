"""A tiny, randomly initialised Depth Anything V2 model in transformers format, for tests.

``save_tiny_depth_anything(folder)`` writes ``config.json`` + ``model.safetensors`` (+ the
``preprocessor_config.json`` that real Depth Anything V2 folders carry) into ``folder`` and returns it.
The architecture is the real one (``DepthAnythingForDepthEstimation`` over a Dinov2 backbone, patch 14),
only very small (~120 k parameters, a forward at 70×98 takes milliseconds on a CPU), so every test
exercises the same ``AutoModelForDepthEstimation.from_pretrained`` and inference code path as the
released checkpoints. The neck/head weights are re-drawn with He-normal init and the last bias set to 1
so that the (ReLU-terminated) relative-depth output is positive and varies over the image instead of
being ~1e-8 as with transformers' default ``initializer_range=0.02``.
"""
from __future__ import annotations

import json
import os

import torch

PREPROCESSOR_CONFIG = {
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "ensure_multiple_of": 14,
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "DPTImageProcessor",
    "keep_aspect_ratio": True,
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"height": 518, "width": 518},
}


def tiny_depth_anything_config():
    """The tiny ``DepthAnythingConfig`` (Dinov2 backbone: hidden 32, 4 layers, 2 heads, patch 14)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, mlp_ratio=2, image_size=70,
                            patch_size=14, out_indices=[1, 2, 3, 4],
                            out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                               fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
                               depth_estimation_type="relative")


def build_tiny_depth_anything(seed: int = 0) -> torch.nn.Module:
    """The tiny model in memory (eval mode, float32, CPU), deterministic for a given ``seed``."""
    from transformers import AutoModelForDepthEstimation

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForDepthEstimation.from_config(tiny_depth_anything_config())
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.startswith("backbone"):
                continue
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                w = module.weight
                fan_in = w[0].numel()
                w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
        model.head.conv3.bias.fill_(1.0)
    return model.eval()


def save_tiny_depth_anything(folder, seed: int = 0) -> str:
    """Write the tiny model to ``folder`` (created if needed): config.json, model.safetensors,
    preprocessor_config.json. Returns ``folder`` as a string."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    model = build_tiny_depth_anything(seed)
    model.save_pretrained(folder, safe_serialization=True)
    with open(os.path.join(folder, "preprocessor_config.json"), "w", encoding="utf-8") as f:
        json.dump(PREPROCESSOR_CONFIG, f, indent=2)
    return folder
