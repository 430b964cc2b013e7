"""The pure-torch core: conventions, scenes, bokeh rendering, depth, focus, the DiT sampler.

No module under ``core`` imports ComfyUI. Long loops take a ``callback(done, total, preview=None)``
that reports progress and may raise to interrupt; the node layer passes ComfyUI's, the CLI tqdm's.
"""
