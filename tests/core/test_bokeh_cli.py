"""``diffcamera bokeh`` end to end on tiny PNGs."""
import numpy as np
import pytest
from PIL import Image

from diffcamera.cli import main


def _write(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    depth = np.zeros((12, 16), dtype=np.uint16)
    depth[:, 8:] = 65535                         # near right half, half resolution (resized)
    Image.fromarray(img).save(tmp_path / "a.png")
    Image.fromarray(img[::-1].copy()).save(tmp_path / "b.png")
    Image.fromarray(depth).save(tmp_path / "d.png")
    return img


def test_cli_single_and_batch(tmp_path, capsys):
    img = _write(tmp_path)
    out = tmp_path / "o.png"
    assert main(["bokeh", str(tmp_path / "a.png"), "--depth", str(tmp_path / "d.png"), "--focus", "0.1,0.5",
                 "--level", "300", "-o", str(out), "--coc", str(tmp_path / "c.png")]) == 0
    res = np.asarray(Image.open(out)).astype(int)
    assert res.shape == img.shape
    assert np.abs(res[:, :4] - img[:, :4]).max() <= 1           # focused (far) half stays sharp
    assert np.abs(res[:, 24:] - img[:, 24:]).mean() > 10        # near half blurred
    coc = np.asarray(Image.open(tmp_path / "c.png"))
    assert coc[:, :4].max() in (127, 128) and coc[:, 24:].min() == 255
    # refuses to overwrite
    assert main(["bokeh", str(tmp_path / "a.png"), "--depth", str(tmp_path / "d.png"), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    # a batch into a folder, one depth for both, a focus disparity
    assert main(["bokeh", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--depth", str(tmp_path / "d.png"),
                 "--focus-disparity", "1.0", "--mode", "classical", "-o", str(tmp_path / "outdir")]) == 0
    assert (tmp_path / "outdir" / "a_bokeh.png").exists() and (tmp_path / "outdir" / "b_bokeh.png").exists()


@pytest.mark.parametrize("extra,needle", [(["--focus", "2,0.5"], "--focus"), (["--blades", "2"], "blades"),
                                          (["--level", "-1"], "--level")])
def test_cli_bad_input(tmp_path, capsys, extra, needle):
    _write(tmp_path)
    code = main(["bokeh", str(tmp_path / "a.png"), "--depth", str(tmp_path / "d.png"), "-o",
                 str(tmp_path / "x.png")] + extra)
    assert code == 2 and needle in capsys.readouterr().err
