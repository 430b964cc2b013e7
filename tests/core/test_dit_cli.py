"""``diffcamera refocus`` on files (tier a: no ComfyUI; runs in-process through the CLI entry point)."""
import numpy as np
import pytest
from PIL import Image

from diffcamera.cli import main
from tiny_dit import save_toy_model


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 56, 3)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    disp = np.tile(np.linspace(0, 65535, 56), (40, 1)).astype(np.uint16)
    Image.fromarray(disp).save(tmp_path / "depth.png")
    model, _ = save_toy_model(str(tmp_path / "toy"))
    return tmp_path, model


def test_refocus_writes_an_image(files, capsys):
    d, model = files
    out = d / "out.png"
    rc = main(["refocus", str(d / "img.png"), "--depth", str(d / "depth.png"), "--focus", "0.5,0.5", "--level",
               "20", "--model", str(d / "toy"), "--steps", "2", "-o", str(out)])
    assert rc == 0 and Image.open(out).size == (56, 40)
    assert "focus disparity 0.5" in capsys.readouterr().out
    # never overwrite without --force
    assert main(["refocus", str(d / "img.png"), "--depth", str(d / "depth.png"), "--focus", "0.5,0.5",
                 "--model", str(d / "toy"), "-o", str(out)]) == 2


def test_refocus_bad_inputs(files, capsys):
    d, _ = files
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(d / "small_depth.png")
    base = ["refocus", str(d / "img.png"), "--model", str(d / "toy"), "-o", str(d / "o.png")]
    assert main(base + ["--depth", str(d / "small_depth.png"), "--focus", "0.5,0.5"]) == 2
    assert "--depth is 20×20" in capsys.readouterr().err
    assert main(base + ["--depth", str(d / "depth.png"), "--focus", "a,b"]) == 2
    assert main(base[:3] + [str(d / "nothing"), "--depth", str(d / "depth.png"), "--focus", ".5,.5", "-o",
                            str(d / "o.png")]) == 2
    assert "'nothing' not found in" in capsys.readouterr().err


def test_refocus_refuses_what_it_cannot_do_before_any_work(files, capsys):
    """A blur larger than the frame (it once ran for minutes), one file for both outputs (one would be lost) and a
    model file that is not safetensors each end with exit code 2 and a message naming the input."""
    d, _ = files
    base = ["refocus", str(d / "img.png"), "--depth", str(d / "depth.png"), "--focus", "0.5,0.5", "-o", str(d / "o.png")]
    assert main(base + ["--level", "1e5"]) == 2
    assert "--level: 5468.75 px per unit disparity (bokeh level 100000) is more than this 56×40 image" in \
        capsys.readouterr().err
    assert main(base + ["--input-level", "1e9"]) == 2
    assert "--input-level: " in capsys.readouterr().err
    assert main(base + ["--all-in-focus", str(d / "o.png")]) == 2
    assert "--all-in-focus and --out are the same file" in capsys.readouterr().err
    (d / "fake.safetensors").write_bytes(b"this is not a safetensors file at all")
    assert main(base + ["--model", str(d / "fake.safetensors")]) == 2
    assert "fake.safetensors is not a readable .safetensors file" in capsys.readouterr().err
    assert not (d / "o.png").exists()
