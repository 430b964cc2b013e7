"""Evaluation, apart from the product: what measures the pack, never what a user's graph runs.

* :mod:`~diffcamera.evaluation.scenes` — procedural ground-truth scenes with exact metric depth;
* :mod:`~diffcamera.evaluation.thin_lens` — the thin-lens reference renderer (physically exact defocus of a scene);
* :mod:`~diffcamera.evaluation.metrics` — image metrics (PSNR, SSIM, edge-band PSNR, LVCorr, focus-plane error);
* :mod:`~diffcamera.evaluation.scoring` — the scoring suites of ``diffcamera bench --suite bokeh|refocus``
  (renderers and refocus models scored against thin-lens ground truth);
* :mod:`~diffcamera.evaluation.demo` — ``diffcamera demo``: the whole chain on a built-in scene.

The product (``core``, ``nodes``) never imports this package; user-facing commands that need it do
(``diffcamera bench`` and ``demo``; the simulator's procedural source and the trainer's preview use the scenes).
Performance benchmarks (speed, memory, GPU) are the scripts in ``benchmarks/``.
"""
