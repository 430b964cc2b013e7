"""Depth Anything V2 loading and inference on a tiny random model saved to disk (the real code path)."""
import json
import os

import pytest
import torch

from diffcamera.core import depth as D
from tiny_depth import save_tiny_depth_anything


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_depth_anything(tmp_path_factory.mktemp("da") / "Depth-Anything-V2-Tiny-hf")


@pytest.fixture(scope="module")
def model(tiny_dir):
    return D.load_depth_model(tiny_dir)


def _images(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, h // 4 + 1, w // 4 + 1, generator=g)
    return torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)


def test_load_reads_config_and_normalisation(tiny_dir, model):
    assert isinstance(model, torch.nn.Module) and not model.training
    info = model.diffcamera_info
    assert info["path"] == os.path.abspath(tiny_dir) and info["patch"] == 14 and info["depth_type"] == "relative"
    assert info["mean"] == D.IMAGENET_MEAN and info["std"] == D.IMAGENET_STD
    assert all(not p.requires_grad for p in model.parameters())


def test_processing_size_keeps_aspect_and_patch_multiple():
    assert D.processing_size(768, 1024, 518) == (518, 686)
    assert D.processing_size(1024, 768, 518) == (686, 518)
    assert D.processing_size(100, 50, 518) == (1036, 518)
    assert D.processing_size(45, 90, 70) == (70, 140)
    assert D.processing_size(64, 64, 500) == (504, 504)  # 500 rounds to the nearest multiple of 14
    for h, w in [(333, 777), (1080, 1920), (17, 500)]:
        ph, pw = D.processing_size(h, w, 518)
        assert ph % 14 == 0 and pw % 14 == 0 and min(ph, pw) == 518
        assert abs(ph / pw - h / w) < 14 / min(ph, pw)


def test_preprocess_normalises_with_imagenet_stats():
    img = torch.tensor(D.IMAGENET_MEAN).view(1, 3, 1, 1).expand(2, 3, 20, 30)
    x = D.preprocess(img, (28, 42))
    assert x.shape == (2, 3, 28, 42) and x.abs().max() < 1e-5
    one = D.preprocess(torch.ones(1, 3, 14, 14), (14, 14))
    assert torch.allclose(one[0, :, 0, 0], (1 - torch.tensor(D.IMAGENET_MEAN)) / torch.tensor(D.IMAGENET_STD))


def test_estimate_shapes_ranges_and_network_input_size(model):
    seen = []
    hook = model.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["pixel_values"].shape)),
                                           with_kwargs=True)
    try:
        img = _images(2, 45, 90)
        d = D.estimate_disparity(model, img, process_res=70)
        port = D.estimate_disparity(model, _images(1, 90, 45), process_res=70)
    finally:
        hook.remove()
    assert seen == [(2, 3, 70, 140), (1, 3, 140, 70)]
    assert d.shape == (2, 1, 45, 90) and port.shape == (1, 1, 90, 45)
    assert d.dtype == torch.float32 and d.device.type == "cpu"
    for i in range(2):  # normalised per image: the full 0..1 range, not a constant
        assert d[i].min().item() == pytest.approx(0.0, abs=1e-6) and d[i].max().item() == pytest.approx(1.0, abs=1e-6)
        assert d[i].std() > 0.05
    assert not torch.allclose(d[0], d[1], atol=1e-3)  # the output depends on the image


def test_result_is_the_model_output_resized_back(model):
    img = _images(1, 40, 60, seed=3)
    d = D.estimate_disparity(model, img, process_res=56)
    with torch.no_grad():
        raw = model(pixel_values=D.preprocess(img, D.processing_size(40, 60, 56))).predicted_depth
    ref = torch.nn.functional.interpolate(raw.unsqueeze(1), size=(40, 60), mode="bilinear", align_corners=False)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    assert torch.allclose(d, ref, atol=1e-5)


def test_batching_in_chunks_gives_the_same_result_and_reports_progress(model):
    img = _images(5, 28, 42, seed=1)
    calls = []
    chunked = D.estimate_disparity(model, img, process_res=28, batch_size=2, callback=lambda *a: calls.append(a[:2]))
    single = torch.cat([D.estimate_disparity(model, img[i:i + 1], process_res=28) for i in range(5)])
    assert torch.allclose(chunked, single, atol=1e-5)
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_callback_can_interrupt(model):
    class Stop(Exception):
        pass

    calls = []

    def cb(done, total, preview):
        calls.append(done)
        if done >= 1:
            raise Stop

    with pytest.raises(Stop):
        D.estimate_disparity(model, _images(4, 28, 28), process_res=28, batch_size=1, callback=cb)
    assert calls == [0, 1]


def test_half_precision_load_and_float32_output(tiny_dir):
    m = D.load_depth_model(tiny_dir, dtype=torch.bfloat16)
    assert next(m.parameters()).dtype == torch.bfloat16
    d = D.estimate_disparity(m, _images(1, 28, 28), process_res=28)
    assert d.dtype == torch.float32 and 0 <= d.min() and d.max() <= 1


def test_metric_output_is_inverted():
    z = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
    d = D.raw_to_disparity(z, "metric")
    assert d.view(-1).tolist() == pytest.approx([1.0, 1 / 3, 0.0])
    assert D.raw_to_disparity(z, "relative").view(-1).tolist() == pytest.approx([0.0, 1 / 3, 1.0])


# --------------------------------------------------------------------------------------- bad folders
def _msg(exc):
    return str(exc.value)


def test_missing_folder_says_what_to_download(tmp_path):
    with pytest.raises(D.DepthModelError) as err:
        D.load_depth_model(tmp_path / "nope")
    msg = _msg(err)
    assert "does not exist" in msg and "Depth-Anything-V2-Small-hf" in msg
    assert "Apache-2.0" in msg and "CC-BY-NC-4.0" in msg and "models/depth_anything" in msg
    assert isinstance(err.value, ValueError)


def test_wrong_folders_are_rejected_before_loading(tmp_path, tiny_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(D.DepthModelError, match="no config.json"):
        D.load_depth_model(empty)
    f = tmp_path / "file.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(D.DepthModelError, match="is a file"):
        D.load_depth_model(f)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(D.DepthModelError, match="not a depth model"):
        D.load_depth_model(other)
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text(open(os.path.join(tiny_dir, "config.json")).read())
    (pickle_only / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(D.DepthModelError, match="never loaded"):
        D.load_depth_model(pickle_only)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(open(os.path.join(tiny_dir, "config.json")).read())
    (broken / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(D.DepthModelError, match="could not load"):
        D.load_depth_model(broken)
    bad_json = tmp_path / "badjson"
    bad_json.mkdir()
    (bad_json / "config.json").write_text("{")
    with pytest.raises(D.DepthModelError, match="not valid JSON"):
        D.load_depth_model(bad_json)


# ------------------------------------------------------------------------- depth from elsewhere
def test_convert_conventions():
    v = torch.tensor([0.2, 0.5, 0.8]).view(1, 1, 1, 3)
    assert D.convert_depth_map(v, "disparity (near bright)").view(-1).tolist() == pytest.approx([0, 0.5, 1])
    assert D.convert_depth_map(v, "disparity (near bright)", normalise=False).view(-1).tolist() == pytest.approx(
        [0.2, 0.5, 0.8])
    assert D.convert_depth_map(v, "depth (near dark)").view(-1).tolist() == pytest.approx([1, 0.5, 0])
    z = torch.tensor([1.0, 2.0, float("inf")]).view(1, 1, 1, 3)
    assert D.convert_depth_map(z, "metric depth").view(-1).tolist() == pytest.approx([1, 0.5, 0], abs=1e-5)
    zz = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
    fixed = D.convert_depth_map(zz, "metric depth", near=0.5, far=8.0).view(-1)
    assert fixed.tolist() == pytest.approx([(1 - 1 / 8) / (2 - 1 / 8), (0.5 - 1 / 8) / (2 - 1 / 8),
                                            (0.25 - 1 / 8) / (2 - 1 / 8)])
    big = D.convert_depth_map(torch.rand(2, 1, 10, 20), size=(30, 40))
    assert big.shape == (2, 1, 30, 40)


def test_convert_errors_name_the_input():
    with pytest.raises(ValueError, match="^depth_map: .*NaN"):
        D.convert_depth_map(torch.tensor([float("nan"), 1.0]).view(1, 1, 1, 2), name="depth_map")
    with pytest.raises(ValueError, match="> 0"):
        D.convert_depth_map(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2), "metric depth")
    with pytest.raises(ValueError, match="infinite"):
        D.convert_depth_map(torch.tensor([float("inf"), 1.0]).view(1, 1, 1, 2))
    with pytest.raises(ValueError, match="near < far"):
        D.convert_depth_map(torch.ones(1, 1, 2, 2), "metric depth", near=2.0, far=1.0)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_a_16_bit_png_and_never_overwrites(tiny_dir, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from diffcamera.cli import main

    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((30, 44, 3)) * 255).astype(np.uint8)).save(src)
    out = tmp_path / "sub" / "depth.png"
    assert main(["depth", str(src), "--model", str(tiny_dir), "-o", str(out), "--process-res", "28"]) == 0
    with Image.open(out) as im:
        arr = np.asarray(im)
    assert arr.shape == (30, 44) and arr.dtype == np.uint16 and arr.min() == 0 and arr.max() == 65535
    assert main(["depth", str(src), "--model", str(tiny_dir), "-o", str(out)]) == 2   # exists: refused
    assert "--force" in capsys.readouterr().err
    assert main(["depth", str(src), "--model", str(tiny_dir), "-o", str(out), "--force", "--bits", "8",
                 "--process-res", "28"]) == 0
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (44, 30)
    assert main(["depth", str(src), "--model", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.png")]) == 2
    assert "Depth-Anything-V2-Small-hf" in capsys.readouterr().err


def test_depth_edges_find_soft_steps_only_when_asked_and_never_mark_planes():
    """A step spread over 6 px (a depth model's soft edge) has no one-pixel second difference above the threshold;
    with ``max_spacing=4`` it is found, while a steep plane (0.01 per px, a kink where it meets a flat one) is not."""
    x = torch.arange(64, dtype=torch.float32)
    soft = (0.24 * ((x - 29) / 6).clamp(0, 1)).view(1, 1, 1, 64).expand(1, 1, 8, 64)
    assert not D.depth_edges(soft, 0.05).any()
    found = D.depth_edges(soft, 0.05, max_spacing=4)[0, 0, 0]
    assert found[26:38].any() and not found[:20].any() and not found[45:].any()
    plane = (0.01 * (x - 32).clamp_min(0)).view(1, 1, 1, 64).expand(1, 1, 8, 64)
    assert not D.depth_edges(plane, 0.05, max_spacing=4).any()
    hard = (x >= 32).float().view(1, 1, 1, 64).expand(1, 1, 8, 64)
    assert torch.equal(D.depth_edges(hard, 0.05)[0, 0, 0].nonzero().flatten(), torch.tensor([31, 32]))
