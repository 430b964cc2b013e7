"""``diffcamera demo`` (the README's main command) runs the whole chain and never overwrites a file."""
import os

import pytest

from diffcamera.cli import main

TOY = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "assets", "toy_refocus", "model.safetensors")


@pytest.mark.skipif(not os.path.isfile(TOY), reason="the toy model is not shipped in this checkout")
def test_demo_writes_a_contact_sheet_and_keeps_existing_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "diffcamera_demo.png").write_bytes(b"user's file")
    assert main(["demo", "--steps", "4"]) == 0
    assert (tmp_path / "diffcamera_demo.png").read_bytes() == b"user's file"
    out = tmp_path / "diffcamera_demo_1.png"
    assert out.stat().st_size > 1000
    text = capsys.readouterr().out
    assert "copy the input (baseline)" in text and "physics (no model)" in text and "DiT refinement" in text
    assert main(["demo", "--steps", "2", "-o", "diffcamera_demo.png"]) == 2  # explicit name: refused, not replaced
    assert (tmp_path / "diffcamera_demo.png").read_bytes() == b"user's file"


def test_demo_physics_refocus_beats_its_baselines_on_the_default_scene():
    """The demo's own numbers (thin-lens photo, blur estimated from the image): physics beats copying and
    re-blurring the input, overall and where the request must become sharp, and stays below the oracle."""
    from diffcamera.evaluation.demo import PHYSICS, run_demo
    m = run_demo(model_path=PHYSICS).metrics
    phys, copy, reblur = m["physics (no model)"], m["copy the input (baseline)"], m["re-blur the input (baseline)"]
    assert phys["psnr"] > reblur["psnr"] + 0.5 and phys["psnr"] > copy["psnr"] + 0.5, m
    assert phys["sharp_psnr"] > copy["sharp_psnr"] + 0.5, m
    assert phys["psnr"] < m["oracle (true all-in-focus, re-rendered)"]["psnr"], m
