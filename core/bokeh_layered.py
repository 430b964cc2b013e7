"""Occlusion-aware layered lens blur (work in progress)."""
