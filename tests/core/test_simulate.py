"""Simulated refocus pairs: determinism, resume, the composite/mask maths, bad input."""
import json
import os

import pytest
import torch
from PIL import Image

from diffcamera.core.bokeh_classical import render_classical
from diffcamera.training.dataset import PairDataset, sample_indices
from diffcamera.training.simulate import (SimulateOptions, composite_disparity, plane_mask, simulate_dataset,
                                          simulate_group)


def _opts(**kw):
    base = dict(size=32, variants=2, level_range=(32.0, 256.0), num_scenes=3, scene_seed=5, shard_size=2, seed=7)
    base.update(kw)
    return SimulateOptions(**base)


def _quiet(_):
    pass


def _load_all(folder):
    from safetensors.torch import load_file
    out = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            out[f] = load_file(os.path.join(folder, f))
    return out


def test_same_seed_same_data_and_other_seed_differs(tmp_path):
    m1 = simulate_dataset(str(tmp_path / "a"), _opts(), log=_quiet)
    simulate_dataset(str(tmp_path / "b"), _opts(), log=_quiet)
    simulate_dataset(str(tmp_path / "c"), _opts(seed=8), log=_quiet)
    a, b, c = (_load_all(str(tmp_path / x)) for x in "abc")
    assert m1["groups"] == 6 and len(m1["shards"]) == 3
    assert a.keys() == b.keys()
    for k in a:
        for t in a[k]:
            assert torch.equal(a[k][t], b[k][t])
    assert not torch.equal(a["shard_00000.safetensors"]["target1"], c["shard_00000.safetensors"]["target1"])


def test_interrupted_run_resumes_to_identical_data(tmp_path):
    calls = []

    def boom(done, total, preview):
        calls.append(done)
        if done >= 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(str(tmp_path / "r"), _opts(), callback=boom, log=_quiet)
    assert not os.path.exists(tmp_path / "r" / "manifest.json")
    logs = []
    simulate_dataset(str(tmp_path / "r"), _opts(), log=logs.append)
    assert any("resuming" in s for s in logs)
    simulate_dataset(str(tmp_path / "ref"), _opts(), log=_quiet)
    r, ref = _load_all(str(tmp_path / "r")), _load_all(str(tmp_path / "ref"))
    for k in ref:
        for t in ref[k]:
            assert torch.equal(r[k][t], ref[k][t])
    with pytest.raises(ValueError, match="other arguments.*seed"):
        simulate_dataset(str(tmp_path / "r"), _opts(seed=99), log=_quiet)


def test_cancel_inside_a_shard_then_resume_gives_identical_data(tmp_path):
    """``interrupt`` is checked inside a shard (per group and inside renders): raising there leaves no half shard,
    and the resumed run writes the same data as an uninterrupted one."""
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 7:  # inside the first shard's second group
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        simulate_dataset(str(tmp_path / "r"), _opts(), log=_quiet, interrupt=interrupt)
    assert not [f for f in os.listdir(tmp_path / "r") if f.startswith("shard")]
    simulate_dataset(str(tmp_path / "r"), _opts(), log=_quiet)
    simulate_dataset(str(tmp_path / "ref"), _opts(), log=_quiet)
    r, ref = _load_all(str(tmp_path / "r")), _load_all(str(tmp_path / "ref"))
    assert r.keys() == ref.keys() and all(torch.equal(r[k][t], ref[k][t]) for k in ref for t in ref[k])


def test_a_folder_of_other_files_is_never_written_into(tmp_path):
    out = tmp_path / "photos_of_mine"
    out.mkdir()
    (out / "manifest.json").write_text("mine")
    with pytest.raises(ValueError, match="not a dataset made by the simulator; nothing was overwritten"):
        simulate_dataset(str(out), _opts(), log=_quiet)
    assert os.listdir(out) == ["manifest.json"] and (out / "manifest.json").read_text() == "mine"
    (out / "simulate_config.json").write_text("[" * 5000 + "]" * 5000)  # not ours either, and no RecursionError
    with pytest.raises(ValueError, match="not a dataset made by the simulator"):
        simulate_dataset(str(out), _opts(), log=_quiet)


def test_composite_is_the_two_plane_rendering_and_mask_marks_the_sharper_plane():
    from diffcamera.evaluation.scenes import make_scene
    scene = make_scene(3, size=32, kind="layers")
    img, disp = scene.image.float(), scene.disparity.float()

    def render(i, d, fd, K):
        return render_classical(i, (K * (d - fd)).abs())

    tensors, meta = simulate_group(img, disp, 11, _opts(min_plane_separation=0.2, renderer="classical"), render)
    d1, d2, K = meta["focus_disparity1"], meta["focus_disparity2"], meta["K"]
    # focus disparities are disparities of the image itself
    assert (disp - d1).abs().min() < 1e-6 and (disp - d2).abs().min() < 1e-6
    radius = K * torch.minimum((disp - d1).abs(), (disp - d2).abs())
    expected = (render_classical(img, radius)[0].clamp(0, 1) * 255).round().to(torch.uint8)
    assert (tensors["composite"].int() - expected.int()).abs().max() <= 1
    mask = plane_mask(disp, d1, d2)
    assert torch.equal(tensors["mask"], mask[0].to(torch.uint8))
    near1 = (disp - d1).abs() < (disp - d2).abs()
    assert bool((mask[near1] == 1).all()) and bool((mask[~near1 & ((disp - d1).abs() > (disp - d2).abs())] == 0).all())
    # the remap gives exactly the two-plane radius
    assert torch.allclose(2 * K * (composite_disparity(disp, d1, d2) - 0.5).abs(), radius, atol=1e-5)
    # target 1 is sharp where its plane is: it equals the AIF there (radius < 0.5 px)
    sharp1 = (K * (disp - d1).abs() < 0.25)[0, 0]
    if sharp1.sum() > 10:
        err = (tensors["target1"].float() - tensors["aif"].float()).abs().mean(0)[sharp1].mean()
        assert err < 8


def test_layered_groups_composite_by_mask_and_carry_the_physics_of_the_reference():
    """Default renderer: targets are layered renders; the composite takes every pixel from the target in which it is
    sharper (the mask blend); physics1/2 are the physics refocus of the stored 8-bit reference to each plane with the
    reference's own (known) blur."""
    from diffcamera.core.bokeh import render_bokeh
    from diffcamera.core.physics import refocus_physics
    from diffcamera.evaluation.scenes import make_scene
    scene = make_scene(4, size=32, kind="layers")
    img, disp = scene.image.float(), scene.disparity.float()
    opts = _opts(min_plane_separation=0.2, p_aif=0.0)
    assert opts.renderer == "layered"
    tensors, meta = simulate_group(img, disp, 12, opts)
    d1, d2, K = meta["focus_disparity1"], meta["focus_disparity2"], meta["K"]

    def u8(t):
        return (t[0].clamp(0, 1) * 255).round().to(torch.uint8)
    t1 = render_bokeh(img, disp, d1, K, mode="layered")
    assert torch.equal(tensors["target1"], u8(t1))
    m = tensors["mask"].bool()
    assert torch.equal(tensors["composite"], torch.where(m, tensors["target1"], tensors["target2"]))
    assert not torch.equal(tensors["composite"], tensors["target1"]) and 0 < int(m.sum()) < m.numel()
    ref = tensors["reference"].float().unsqueeze(0) / 255
    for i, d in ((1, d1), (2, d2)):
        want = refocus_physics(ref, disp, d, K, input_focus_disparity=meta["ref_focus_disparity"],
                               input_K=meta["ref_K"], settings=opts.physics_settings()).image
        assert torch.equal(tensors[f"physics{i}"], u8(want))
    # the physics estimate is nearer the target than the reference (it refocuses)
    err = {k: (tensors[k].float() - tensors["target1"].float()).abs().mean() for k in ("reference", "physics1")}
    assert err["physics1"] < err["reference"]


def test_an_all_in_focus_reference_gives_the_layered_target_as_its_physics():
    from diffcamera.evaluation.scenes import make_scene
    scene = make_scene(5, size=32, kind="mixed")
    tensors, meta = simulate_group(scene.image.float(), scene.disparity.float(), 3, _opts(p_aif=1.0))
    assert meta["reference"] == "aif" and meta["ref_K"] == 0.0
    assert torch.equal(tensors["reference"], tensors["aif"])
    # no deblurring to do: physics is the layered render of the (8-bit) AIF, the target within a rounding level
    # except at blurred foreground rims, where physics shows the image itself as the hidden background (the
    # renderer extends the background layer instead)
    from diffcamera.core.depth import depth_edges
    diff = (tensors["physics1"].int() - tensors["target1"].int()).abs().amax(0)
    rims = torch.nn.functional.max_pool2d(depth_edges(scene.disparity.float(), 0.03).float(), 2 * int(meta["K"]) + 3,
                                          1, int(meta["K"]) + 1)[0, 0].bool()
    assert int(diff[~rims].max()) <= 1 and float(diff.float().mean()) < 2


def test_renderer_option_is_checked():
    with pytest.raises(ValueError, match="renderer must be one of"):
        SimulateOptions(renderer="thin")


def test_dataset_batches_and_order(tmp_path):
    simulate_dataset(str(tmp_path / "d"), _opts(), log=_quiet)
    ds = PairDataset(folder=str(tmp_path / "d"))
    assert len(ds) == 6 and ds.size == 32
    b = ds.batch([0, 5])
    assert b["target1"].shape == (2, 3, 32, 32) and 0 <= float(b["target1"].min()) and float(b["target1"].max()) <= 1
    assert b["physics1"].shape == (2, 3, 32, 32) and b["physics2"].shape == (2, 3, 32, 32)
    assert b["focus_xy1"].shape == (2, 2) and b["K"].shape == (2,)
    order = sample_indices(0, 12, 6, seed=1)
    assert sorted(order[:6]) == list(range(6)) and sorted(order[6:]) == list(range(6))
    assert sample_indices(3, 4, 6, seed=1) == order[3:7]


def _png(path, size=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    arr = (torch.rand(size, size, 3, generator=g) * 255).byte().numpy()
    Image.fromarray(arr).save(path)


def test_a_dataset_of_the_old_format_is_refused_with_the_fix(tmp_path):
    simulate_dataset(str(tmp_path / "d"), _opts(num_scenes=1, variants=1), log=_quiet)
    manifest = tmp_path / "d" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["format"] = "diffcamera-pairs-v1"
    manifest.write_text(json.dumps(m))
    with pytest.raises(ValueError, match="diffcamera-pairs-v1 dataset.*simulate it again"):
        PairDataset(folder=str(tmp_path / "d"))


def test_image_folder_with_depth_bad_files_listed_and_skipped(tmp_path):
    src = tmp_path / "imgs"
    src.mkdir()
    _png(src / "a.png")
    dep = (torch.linspace(0, 255, 40).view(1, 40).expand(40, 40)).byte().numpy()
    Image.fromarray(dep).save(src / "a_depth.png")
    _png(src / "b.png", seed=1)
    Image.fromarray(dep).save(src / "b_depth.png")
    (src / "broken.png").write_bytes(b"not a png at all")
    (src / "broken_depth.png").write_bytes(b"nope")
    (src / "empty.jpg").write_bytes(b"")
    logs = []
    m = simulate_dataset(str(tmp_path / "out"), _opts(num_scenes=0, shard_size=1), image_folder=str(src), log=logs.append)
    bad = {os.path.basename(p) for p, _ in m["bad_files"]}
    assert {"broken.png", "empty.jpg"} <= bad
    assert m["groups"] == 4  # a and b, 2 variants each
    assert any("broken.png" in s for s in logs)


def test_sharpness_filter_drops_and_reports(tmp_path):
    pytest.importorskip("diffcamera.evaluation.metrics")
    src = tmp_path / "imgs"
    src.mkdir()
    _png(src / "sharp.png")
    Image.fromarray(torch.full((40, 40, 3), 128, dtype=torch.uint8).numpy()).save(src / "flat.png")
    for n in ("sharp", "flat"):
        Image.fromarray(torch.full((40, 40), 100, dtype=torch.uint8).numpy()).save(src / f"{n}_depth.png")
    m = simulate_dataset(str(tmp_path / "out"), _opts(num_scenes=0, min_sharpness=1e-4), image_folder=str(src), log=_quiet)
    assert [os.path.basename(n) for n, _ in m["dropped_unsharp"]] == ["flat.png"]
    assert m["groups"] == 2


def test_empty_folder_and_missing_depth_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no usable image"):
        simulate_dataset(str(tmp_path / "o1"), _opts(num_scenes=0), image_folder=str(empty), log=_quiet)
    nodepth = tmp_path / "nodepth"
    nodepth.mkdir()
    _png(nodepth / "x.png")
    with pytest.raises(ValueError, match=r"no depth map.*x\.png.*depth model"):
        simulate_dataset(str(tmp_path / "o2"), _opts(num_scenes=0), image_folder=str(nodepth), log=_quiet)
    with pytest.raises(FileNotFoundError):
        simulate_dataset(str(tmp_path / "o3"), _opts(num_scenes=0), image_folder=str(tmp_path / "missing"), log=_quiet)
    # with a depth estimator the same folder works
    m = simulate_dataset(str(tmp_path / "o4"), _opts(num_scenes=0), image_folder=str(nodepth), log=_quiet,
                         depth_estimator=lambda img: img.mean(1, keepdim=True))
    assert m["groups"] == 2


@pytest.mark.slow
def test_several_processes_give_the_same_data(tmp_path):
    simulate_dataset(str(tmp_path / "one"), _opts(), log=_quiet, workers=1)
    simulate_dataset(str(tmp_path / "two"), _opts(), log=_quiet, workers=2)
    a, b = _load_all(str(tmp_path / "one")), _load_all(str(tmp_path / "two"))
    for k in a:
        for t in a[k]:
            assert torch.equal(a[k][t], b[k][t])
    with open(tmp_path / "two" / "manifest.json") as fh:
        assert json.load(fh)["groups"] == 6
