"""Fake ``comfy_api`` package (tests only)."""
