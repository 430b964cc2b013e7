"""Weight-free refocusing: the layered bokeh renderer inverted (no learned weights, any photo, any size).

``blur_estimate``  the input's current focus disparity and blur strength, from the image and its depth.
``deconvolve``     its all-in-focus image (and the colour behind foreground rims): the layered renderer inverted.
``refocus``        ``refocus_physics``: estimate (or take) the input's blur, deconvolve, render the request.
"""
from .blur_estimate import BlurEstimate, estimate_input_blur
from .deconvolve import Deconvolution, SolverSettings, deconvolve
from .refocus import (PhysicsResult, check_physics_inputs, describe_input_blur, estimate_physics_bytes,
                      refocus_physics)

__all__ = ["BlurEstimate", "estimate_input_blur", "Deconvolution", "SolverSettings", "deconvolve",
           "PhysicsResult", "check_physics_inputs", "describe_input_blur", "estimate_physics_bytes",
           "refocus_physics"]
