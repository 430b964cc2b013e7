import json
import math
import os

import pytest
import torch

from diffcamera.evaluation import scoring as B
from diffcamera.evaluation.scenes import Layer, depth_for_disparity, scene_from_layers
from diffcamera.evaluation.thin_lens import render_thin_lens


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFCAMERA_CACHE", str(tmp_path / "cache"))


def test_cases_are_fixed_and_focus_points_sit_on_their_disparity():
    a = B.scoring_cases(64, 3)
    b = B.scoring_cases(64, 3)
    assert [(c.name, c.d1, c.d2, c.point1) for c in a] == [(c.name, c.d1, c.d2, c.point1) for c in b]
    for c in a:
        assert abs(c.d1 - c.d2) > 0.2
        f = c.focus(2)
        r, col = int(f.y * 64), int(f.x * 64)
        assert float(c.scene.disparity[0, 0, r, col]) == pytest.approx(c.d2, abs=1e-6)
    assert a[0].K == pytest.approx(48 * 64 / 1024)


def test_ground_truth_is_cached(tmp_path):
    c = B.scoring_cases(48, 1)[0]
    g1 = B.ground_truth(c, c.d1, c.K)
    assert len(os.listdir(tmp_path / "cache")) == 1
    assert torch.equal(B.ground_truth(c, c.d1, c.K), g1)
    assert torch.equal(B.ground_truth(c, c.d1, 0.0), c.scene.image)


def test_gather_and_mix_is_the_naive_baseline():
    n, r = 64, 12.0
    y, x = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
    dist = torch.sqrt((x - 32) ** 2 + (y - 32) ** 2)
    alpha = torch.clamp(r - dist + 0.5, 0, 1)[None]
    back = Layer(torch.tensor([0.1, 0.6, 0.1]).view(3, 1, 1).expand(3, n, n).clone(), torch.ones(1, n, n),
                 torch.full((1, n, n), float(depth_for_disparity(0.0))))
    front = Layer(torch.tensor([0.9, 0.1, 0.1]).view(3, 1, 1).expand(3, n, n).clone(), alpha,
                  torch.full((1, n, n), float(depth_for_disparity(1.0))))
    s = scene_from_layers([back, front])
    assert torch.equal(B.gather_and_mix(s.image, s.disparity, 0.5, 0.0), s.image)
    out = B.gather_and_mix(s.image, s.disparity, 1.0, 8.0)  # sharp foreground, blurred background
    ring = (dist > r + 1) & (dist < r + 3)
    assert out[0, 0][ring].mean() > 0.2  # the sharp red disc halos into the background ...
    truth = render_thin_lens(s, 1.0, 8.0)
    assert truth[0, 0][ring].mean() < 0.15  # ... which a real lens does not do
    assert (B.gather_and_mix(s.image.expand(2, -1, -1, -1), s.disparity, torch.tensor([1.0, 0.0]),
                             torch.tensor([8.0, 4.0]))[0] - out[0]).abs().max() < 1e-5


@pytest.mark.parametrize("how", B.CORRUPTIONS)
def test_corrupt_depth(how):
    d = B.scoring_cases(64, 1)[0].scene.disparity
    bad = B.corrupt_depth(d, how)
    assert bad.shape == d.shape and bad.min() >= 0 and bad.max() <= 1
    assert (bad - d).abs().mean() > 1e-3


def test_bokeh_suite_runs_small_and_writes_results(tmp_path):
    lines = []
    res = B.run_suite("bokeh", 48, cases=2, out_dir=str(tmp_path / "out"), log=lines.append)
    names = [r["renderer"] for r in res["rows"]]
    assert names[:2] == ["thin-lens (truth)", "gather-mix"]
    assert res["rows"][0]["lvcorr"] > 0.8
    for r in res["rows"][1:]:
        for k in ("psnr", "ssim", "edge_psnr", "mae255", "lvcorr", "time_s"):
            assert math.isfinite(r[k]), (r["renderer"], k)
        assert r["lvcorr"] > 0.5 and r["psnr"] > 20
    for col in ("PSNR", "SSIM", "edge PSNR", "MAE/255", "LVCorr", "time"):
        assert col in res["table"]
    with open(res["json"]) as f:
        data = json.load(f)
    assert data["suite"] == "bokeh" and len(data["cases"]) == 2 and len(data["per_case"]) == 2 * (len(names) - 1)
    assert os.path.getsize(res["png"]) > 1000
    again = B.run_suite("bokeh", 48, cases=1, out_dir=str(tmp_path / "out"), renderers=["gather-mix"], log=print)
    assert again["json"] != res["json"]  # earlier results are not overwritten


def test_refocus_suite_scores_models(tmp_path):
    def perfect():  # re-renders the scene through the thin lens: knows the truth
        cases = {c.name: c for c in B.scoring_cases(96, 2)}

        def fn(image, disparity, focus, K, aif=None):
            c = next(c for c in cases.values() if torch.equal(c.scene.image, aif))
            return render_thin_lens(c.scene, float(focus.disparity[0]), float(K))
        fn.needs_aif = True
        return fn
    B.register_refocus_model("test-perfect", perfect)
    try:
        res = B.run_suite("refocus", 96, cases=2, models=["copy-input", "test-perfect"], log=print)
    finally:
        B._REFOCUS.pop("test-perfect")
    rows = {(r["model"], r["task"]): r for r in res["rows"]}
    assert set(t for _, t in rows) == {"bokeh", "refocus", "deblur"}
    assert rows[("thin-lens (truth)", "refocus")]["fpe"] < 0.05  # the measure's own floor
    assert rows[("copy-input", "refocus")]["fpe"] > 0.2  # stays focused at d1
    assert rows[("test-perfect", "refocus")]["fpe"] < 0.1
    assert rows[("test-perfect", "refocus")]["lvcorr"] > 0.8
    assert math.isinf(rows[("test-perfect", "deblur")]["psnr"]) or rows[("test-perfect", "deblur")]["psnr"] > 60
    assert rows[("copy-input", "refocus")]["psnr"] < rows[("test-perfect", "refocus")]["psnr"]
    bad = {(r["model"], r["depth"]) for r in res["corrupted_depth"]}
    assert ("copy-input", "noisy") in bad and ("test-perfect", "shifted") in bad


def test_unknown_suite_and_entry():
    with pytest.raises(ValueError):
        B.run_suite("nope", 32)
    with pytest.raises(ValueError):
        B.run_suite("bokeh", 32, cases=1, renderers=["nope"])


def test_cli_bench_tiny(tmp_path, capsys):
    from diffcamera.cli import main
    rc = main(["bench", "--suite", "bokeh", "--size", "40", "--cases", "1", "--only", "gather-mix",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| gather-mix |" in out and "LVCorr" in out
    assert main(["bench", "--suite", "bokeh", "--size", "8"]) == 2


def test_refocus_suite_loads_a_diffcamera_checkpoint(tmp_path):
    dit = pytest.importorskip("diffcamera.core.dit.model")
    from diffcamera.core.dit.model import save_refocus_model
    path = save_refocus_model(dit.build_toy_model(), str(tmp_path / "toy.safetensors"))
    res = B.run_suite("refocus", 64, cases=1, models=[], model_paths=[path], steps=1, log=print)
    rows = [r for r in res["rows"] if r["model"] == "dit:toy.safetensors"]
    assert {r["task"] for r in rows} == {"bokeh", "refocus", "deblur"}
    assert all(math.isfinite(r["psnr"]) and r["time_s"] > 0 for r in rows)


def test_refocus_suite_has_the_weight_free_physics_and_it_beats_reblurring():
    res = B.run_suite("refocus", 64, cases=2, models=["reblur-input", "physics"], log=lambda *_: None)
    rows = {(r["model"], r["task"]): r for r in res["rows"]}
    assert rows[("physics", "refocus")]["psnr"] > rows[("reblur-input", "refocus")]["psnr"], rows
