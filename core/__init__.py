"""The pure-torch core (the product): conventions, checks, files, bokeh rendering, depth, focus, video, the refocus
pipeline, physics and the DiT. Evaluation (scenes, thin lens, metrics, scoring) is :mod:`diffcamera.evaluation`.

No module under ``core`` imports anything of the pack outside ``core`` (ComfyUI included). Long loops take a
``callback(done, total, preview=None)`` that reports progress and may raise to interrupt (the host runtime's
``Progress``: ComfyUI's bar, or tqdm).
"""
