"""ComfyUI's own FLUX (built from ``comfy.supported_models.Flux`` with tiny sizes) against our diffusers path.

Usage: ``python flux_parity.py WORK_DIR``. Reports (as JSON):
* ``parity``: ``tests/tiny_dit.run_comfy_parity``: max |velocity| differences, base and with our LoRA applied
  through ``comfy.sd.load_lora_for_models`` (``comfy_adapter.flux_velocity_fn``), for both condition layouts,
  plus ``effect`` (how much the LoRA changes the output, so a LoRA that silently did not load is visible);
* ``stock_loader``: our LoRA file loaded by ComfyUI's stock ``LoraLoaderModelOnly`` node from ``models/loras``:
  the LoRA keys ComfyUI reported "not loaded", how many weight patches it made, and the velocity error of the
  patched MODEL against our model with the LoRA.
"""
import logging
import os
import sys

from bootstrap import bootstrap, emit

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main(work):
    bootstrap(work, load_nodes=False)
    import server  # noqa: F401  (before nodes, see bootstrap)
    import nodes
    import torch

    sys.path.insert(0, TESTS)
    import tiny_dit
    import diffcamera.comfy_adapter as ca

    torch.set_num_threads(2)
    result = {"parity": tiny_dit.run_comfy_parity(os.path.join(work, "parity"))}

    # the stock node, reading the file from models/loras as a user's graph does
    case = tiny_dit.comfy_parity_case(os.path.join(work, "models"), "fused")
    mp = tiny_dit.comfy_flux_patcher(case)
    lora_name = os.path.relpath(case["lora_path"], os.path.join(work, "models", "loras"))
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    (patched,) = nodes.LoraLoaderModelOnly().load_lora_model_only(mp, lora_name, 1.0)
    logging.getLogger().removeHandler(collect)
    not_loaded = [line.split("lora key not loaded: ", 1)[1] for line in collect.lines if "lora key not loaded" in line]
    patcher, fn = ca.flux_velocity_fn(patched, None)
    ca.load_models([patcher])
    with torch.no_grad():
        v = fn(**case["inputs"])
    result["stock_loader"] = {"lora_name": lora_name, "not_loaded": not_loaded, "patches": len(patched.patches),
                              "error": float((v - case["expected"]).abs().max()),
                              "transformer_keys": sum(1 for k in __import__("safetensors.torch", fromlist=["x"])
                                                      .load_file(case["lora_path"]) if k.startswith("transformer."))}
    emit(result)


if __name__ == "__main__":
    main(sys.argv[1])
