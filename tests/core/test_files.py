"""``core.files.read_depth``: every array layout a depth file can hold becomes ``[1, 1, H, W]``, one-row and
one-pixel maps included (squeezing every axis of one once turned a 1×1 map into a scalar and refused it)."""
import numpy as np
import pytest
from PIL import Image

from diffcamera.core.files import read_depth


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (4, 6)])
def test_grey_pngs_of_any_size_read_as_one_map(tmp_path, shape):
    values = (np.arange(np.prod(shape)).reshape(shape) * 10 % 256).astype(np.uint8)
    Image.fromarray(values).save(tmp_path / "d.png")
    got = read_depth(str(tmp_path / "d.png"))
    assert tuple(got.shape) == (1, 1) + shape
    assert np.allclose(got[0, 0].numpy(), values / 255.0)


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (3, 4, 1), (3, 4, 3), (1, 3, 4)])
def test_npy_layouts(tmp_path, shape):
    arr = np.random.default_rng(0).random(shape).astype(np.float32)
    np.save(tmp_path / "d.npy", arr)
    got = read_depth(str(tmp_path / "d.npy"))
    assert tuple(got.shape) == (1, 1, 3, 4)
    first = arr.reshape(3, 4, -1)[..., 0] if arr.shape[-1] in (1, 3) and arr.ndim == 3 else arr.reshape(3, 4)
    assert np.allclose(got[0, 0].numpy(), first)


@pytest.mark.parametrize("shape", [(0, 4), (2, 3, 4, 5), (7,)])
def test_what_is_no_map_is_refused_naming_the_file(tmp_path, shape):
    np.save(tmp_path / "bad.npy", np.zeros(shape, np.float32))
    with pytest.raises(ValueError, match="bad.npy: a depth map must be a single-channel 2-D image"):
        read_depth(str(tmp_path / "bad.npy"))
