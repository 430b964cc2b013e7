"""The DiT refocusing model (DiffCameraRefocus): FLUX-family transformer + LoRA, conditions, sampler, loading.

Modules
-------
``config``      :class:`~.config.RefocusModelConfig` — family, condition layout, LoRA, camera encoding (JSON).
``conditions``  :func:`~.conditions.build_camera_map` (per-pixel camera condition) and its token encoder.
``packing``     2×2 latent packing and RoPE ids (diffusers / ComfyUI order).
``model``       :class:`~.model.RefocusModel` (``velocity``, ``velocity_from_output``), builders, whole-model files.
``toy``         configs of the CPU-trainable toy (its one definition) and of real FLUX.1 bases.
``files``       the file format of LoRA and whole-model files (keys, extras, metadata, sidecar JSON).
``autoencoder`` pixel-shuffle (toy) and FLUX VAE wrappers (shift/scale, tiled VAE, cheap previews).
``lora``        peft LoRA inject / merge / save / load (diffusers- and ComfyUI-readable keys).
``flux_keys``   diffusers <-> BFL (ComfyUI single-file) FLUX weight names.
``loading``     ``load_refocus_model``: toy bundle, diffusers folders, ComfyUI single files, offline configs.
``memory``      dtype, fp8 weight storage, group offloading, out-of-memory advice.
``sampler``     ``refocus``: FLUX flow-match Euler sampling with denoise, padding, tiling, previews.
``tiling``      overlap-blended tiled velocities.
``external``    the same conditions on a FLUX transformer held by ComfyUI (its MODEL), as reference latents.

Design decisions (and deviations from the paper, on purpose)
------------------------------------------------------------
* Conditioning is Kontext-style on the **stock** diffusers forward: ``[noisy ; reference (; camera)]`` tokens with
  RoPE index 0 / 1 (/ 2) at the same (row, col). The paper's OminiControl-like branch (own timestep, LoRA only on
  condition tokens, masked attention) is not reproduced: the stock forward is faster, identical to what ComfyUI's
  FLUX runs for ``reference_latents`` (method ``"index"``) — so a user's already-loaded FLUX MODEL can run it
  (verified against ComfyUI v0.3.64: same velocity to 1e-6 with our LoRA loaded by its stock loader) — and a
  Kontext base already knows how to use a reference image.
* The camera condition is a **per-pixel map** (signed CoC ``K·(d − d_f)``, its magnitude, disparity, a focus-point
  mark, the strength, a depth-present flag), not the paper's global focus coordinate, which ties DiffCamera to
  512²/1024² and breaks tiling. Depth dropout blanks the depth-derived channels and keeps mark and strength.
* The map is encoded cheaply (area pooling to 4×4 cells per token + a small MLP into latent-token space, zero
  initialised) instead of a VAE pass: 0.17 GFLOP per 1024² image against 165 000 GFLOP for one FLUX step.
* Default layout ``"fused"`` (camera projection added to the reference latent): measured with exact FLOP counts
  of the full-size FLUX.1 config at 1024² (``benchmarks/bench_refocus_step.py``), a refocus step is 1.000× a
  Kontext step with the LoRA merged (how ``load_refocus_model`` runs inference) and 1.010× unmerged; the
  ``"separate"`` layout (one extra camera token per image token) is 1.69×, over the ≤ 1.25× budget. Both layouts
  stay available (``condition_layout``) and both run on ComfyUI's FLUX.
"""
