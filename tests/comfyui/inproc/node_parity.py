"""DiffCameraRefocus on ComfyUI's own FLUX MODEL (``flux_model`` input) against the same node on its own
diffusers transformer, for the same tiny weights, LoRA, image, depth, focus and seed (real ComfyUI in-process).

Usage: ``python node_parity.py WORK_DIR``. Emits ``{"diff": max |a - b|, "effect": max |a - image|, "shape": ...}``.
"""
import os
import sys

from bootstrap import bootstrap, emit

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(work):
    bootstrap(work)
    import torch

    sys.path.insert(0, TESTS)
    import tiny_dit
    from diffcamera.core.values import DepthMap, Focus
    from diffcamera.nodes.refocus import EXTERNAL, ModelLoader, Refocus

    torch.set_num_threads(2)
    case = tiny_dit.comfy_parity_case(os.path.join(work, "models"), "fused")
    flux = tiny_dit.comfy_flux_patcher(case)

    g = torch.Generator().manual_seed(5)
    image = torch.rand(1, 64, 48, 3, generator=g)
    depth = DepthMap(torch.rand(1, 1, 64, 48, generator=g), "test")
    focus = Focus.from_disparity(0.4)
    files = dict(vae="vae/tiny-flux-vae", lora="loras/tiny_refocus.safetensors", family="auto", dtype="fp32",
                 weight_storage="default", offload="none")
    own = ModelLoader.execute(base="diffusion_models/tiny-flux", **files).args[0]
    ext = ModelLoader.execute(base=EXTERNAL, **files).args[0]
    run = dict(image=image, depth=depth, focus=focus, bokeh_level=20.0, steps=2, seed=3, guidance=3.5, denoise=1.0,
               tiling="off", tile_size=0)
    with torch.inference_mode():
        a = Refocus.execute(own, **run).args[0]
        b = Refocus.execute(ext, flux_model=flux, **run).args[0]
    emit({"diff": float((a - b).abs().max()), "effect": float((a - image).abs().max()), "shape": list(a.shape)})


if __name__ == "__main__":
    main(sys.argv[1])
