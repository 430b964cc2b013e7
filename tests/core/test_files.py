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


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation      # Orientation
    return exif


@pytest.mark.parametrize("mode", ["RGB", "L", "I;16"])
def test_images_and_depth_maps_are_read_upright_by_their_exif_orientation(tmp_path, mode):
    """A phone's portrait photo is stored sideways with an Orientation tag (6: rotate 90° clockwise to view); it is
    read as shown, as ComfyUI's LoadImage reads it, and a depth map carrying the same tag stays aligned."""
    from diffcamera.core.files import read_image
    stored = np.zeros((2, 4), np.uint16 if mode == "I;16" else np.uint8)
    stored[0, 0] = 65535 if mode == "I;16" else 255          # the stored top-left pixel
    im = Image.fromarray(stored) if mode != "RGB" else Image.fromarray(np.repeat(stored[..., None], 3, 2))
    im.save(tmp_path / "p.png", exif=_exif(6))
    # shown rotated 90° clockwise: 4 rows × 2 columns, the stored top-left pixel now at the top-right
    want = np.zeros((4, 2))
    want[0, 1] = 1.0
    img = read_image(str(tmp_path / "p.png"))
    assert tuple(img.shape) == (1, 3, 4, 2)
    assert np.allclose(img[0, 0].numpy(), want)
    if mode != "RGB":
        depth = read_depth(str(tmp_path / "p.png"))
        assert tuple(depth.shape) == (1, 1, 4, 2)
        assert np.allclose(depth[0, 0].numpy(), want)


def test_an_image_without_orientation_is_read_as_stored(tmp_path):
    from diffcamera.core.files import read_image
    stored = np.zeros((2, 4, 3), np.uint8)
    stored[0, 0] = 255
    Image.fromarray(stored).save(tmp_path / "p.jpg", quality=100, exif=_exif(1))
    img = read_image(str(tmp_path / "p.jpg"))
    assert tuple(img.shape) == (1, 3, 2, 4)
    assert float(img[0, :, 0, 0].min()) > 0.8 and float(img[0, :, 1, 3].max()) < 0.2
