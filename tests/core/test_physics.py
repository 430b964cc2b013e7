"""The weight-free physics refocus (core/physics): it deblurs what the request makes sharp, keeps its inputs'
contracts (batches, per-image focus, determinism, Cancel) and beats the re-blur baseline on exact scenes."""
import pytest
import torch

from diffcamera.core.bokeh_layered import LayeredOperator
from diffcamera.core.conventions import linear_to_srgb, srgb_to_linear
from diffcamera.evaluation.metrics import psnr
from diffcamera.core.physics import SolverSettings, deconvolve, estimate_input_blur, refocus_physics

FAST = SolverSettings(coarse=(4, 8), fine=(2, 5))


def _two_planes(h=48, w=48, seed=0):
    """A textured far plane (d = 0) and a textured near square (d = 0.9) with exact disparity."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    far = 0.3 + 0.4 * (((yy // 4 + xx // 4) % 2).float())
    near = 0.2 + 0.6 * ((xx // 3) % 2).float()
    d = torch.zeros(1, 1, h, w)
    d[..., 14:34, 14:34] = 0.9
    img = torch.where(d[0, 0] > 0.5, near, far)
    img = torch.stack([img, 0.8 * img, 0.5 + 0.3 * torch.rand(h, w, generator=g) * 0.1], 0)[None]
    return img.clamp(0, 1), d


def _blur(img, d, d_f, K):
    coc = K * (d - d_f)
    return linear_to_srgb(LayeredOperator(coc)(srgb_to_linear(img)).clamp(0, 1))


def test_an_input_sharp_everywhere_is_returned_unchanged():
    img, d = _two_planes()
    res = deconvolve(srgb_to_linear(img), d, torch.tensor([0.5]), torch.tensor([0.0]), settings=FAST)
    assert res.iterations == 0 and torch.equal(res.image, srgb_to_linear(img))
    out = refocus_physics(img, d, 0.5, 0.0, input_focus_disparity=0.3, input_K=0.0, settings=FAST)
    assert torch.allclose(out.image, img, atol=2e-6)


def test_refocus_beats_reblur_where_the_request_is_sharp():
    img, d = _two_planes()
    K = 6.0
    blurred = _blur(img, d, 0.0, K)            # focused on the far plane: the square is soft
    truth = _blur(img, d, 0.9, K)              # the same scene focused on the square
    reblur = _blur(blurred, d, 0.9, K)
    out = refocus_physics(blurred, d, 0.9, K, input_focus_disparity=0.0, input_K=K).image
    sharp = (K * (d - 0.9)).abs() < 1
    assert float(psnr(out, truth, mask=sharp)[0]) > float(psnr(blurred, truth, mask=sharp)[0]) + 2.0
    assert float(psnr(out, truth)[0]) > float(psnr(reblur, truth)[0]) + 1.5


def test_an_input_with_no_blur_is_rendered_as_bokeh_simulate_renders_it():
    """Nothing is deblurred, so nothing is known behind the request's rims: the renderer's own guess is used there, as
    in BokehSimulate, not the input (whose pixels there are the occluder itself); in a batch too."""
    from diffcamera.core.bokeh import render_bokeh
    img, d = _two_planes()
    blurred = _blur(img, d, 0.0, 5.0)
    simulated = render_bokeh(img, d, 0.0, 5.0, mode="layered")
    out = refocus_physics(img, d, 0.0, 5.0, input_focus_disparity=0.9, input_K=0.0, settings=FAST).image
    assert torch.allclose(out, simulated, atol=1e-5)
    batch = refocus_physics(torch.cat([blurred, img]), d, 0.9, 5.0, input_focus_disparity=torch.tensor([0.0, 0.9]),
                            input_K=torch.tensor([5.0, 0.0]), settings=FAST).image
    assert torch.allclose(batch[1:], render_bokeh(img, d, 0.9, 5.0, mode="layered"), atol=1e-5)
    single = refocus_physics(blurred, d, 0.9, 5.0, input_focus_disparity=0.0, input_K=5.0, settings=FAST).image
    assert torch.allclose(batch[:1], single, atol=1e-5)     # the deblurred one: with its solved hidden colour
    assert not torch.allclose(single, render_bokeh(blurred, d, 0.9, 5.0, mode="layered"), atol=1e-3)


def test_the_hidden_colour_starts_from_the_farther_surface_nearby():
    """Behind a near square the solve's first guess is the far plane's colour (not the square's own), the far plane
    keeps its own colour, and a pixel with nothing farther within reach keeps its own."""
    from diffcamera.core.physics.deconvolve import hidden_first_guess
    d = torch.zeros(1, 1, 40, 40)
    d[..., 10:30, 10:30] = 0.9
    y = torch.where(d > 0.5, torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1), torch.tensor([0.1, 0.2, 0.8]).view(1, 3, 1, 1))
    guess = hidden_first_guess(y, d, radius=6.0, step=0.03)
    far = torch.tensor([0.1, 0.2, 0.8])
    assert torch.allclose(guess[0, :, 12, 12], far, atol=1e-5)          # inside the square, near its rim
    assert torch.allclose(guess[0, :, 2, 2], far, atol=1e-5)            # the far plane: its own colour
    assert torch.allclose(guess[0, :, 20, 20], y[0, :, 20, 20])         # 10 px in: nothing farther within reach
    flat = hidden_first_guess(y, torch.zeros_like(d), radius=6.0, step=0.03)
    assert torch.equal(flat, y)


def test_a_noisy_8_bit_input_is_deblurred_without_amplifying_its_noise():
    """A photo carries sensor noise and 8-bit rounding; the robust data term and the TV prior must keep the
    deconvolution from turning it into speckle (measured: +1.9 dB over re-blurring at σ = 0.02, +3.2 dB noiseless;
    with the TV weights at 1e-5 and a quadratic data term it falls 1.2 dB below re-blurring)."""
    img, d = _two_planes()
    K = 6.0
    g = torch.Generator().manual_seed(0)
    blurred = _blur(img, d, 0.0, K)
    noisy = ((blurred + 0.02 * torch.randn(blurred.shape, generator=g)).clamp(0, 1) * 255).round() / 255
    truth = _blur(img, d, 0.9, K)
    out = refocus_physics(noisy, d, 0.9, K, input_focus_disparity=0.0, input_K=K).image
    sharp = (K * (d - 0.9)).abs() < 1
    assert float(psnr(out, truth)[0]) > float(psnr(_blur(noisy, d, 0.9, K), truth)[0]) + 1.0
    assert float(psnr(out, truth, mask=sharp)[0]) > float(psnr(noisy, truth, mask=sharp)[0]) + 1.0


def test_batches_with_per_image_focus_match_single_images_and_are_deterministic():
    img, d = _two_planes()
    a = _blur(img, d, 0.0, 5.0)
    b = _blur(img, d, 0.9, 3.0)
    batch = refocus_physics(torch.cat([a, b]), d, torch.tensor([0.9, 0.0]), torch.tensor([5.0, 3.0]),
                            input_focus_disparity=torch.tensor([0.0, 0.9]), input_K=torch.tensor([5.0, 3.0]),
                            settings=FAST)
    one = refocus_physics(b, d, 0.0, 3.0, input_focus_disparity=0.9, input_K=3.0, settings=FAST)
    assert torch.allclose(batch.image[1:], one.image, atol=1e-5)
    again = refocus_physics(torch.cat([a, b]), d, torch.tensor([0.9, 0.0]), torch.tensor([5.0, 3.0]),
                            input_focus_disparity=torch.tensor([0.0, 0.9]), input_K=torch.tensor([5.0, 3.0]),
                            settings=FAST)
    assert torch.equal(batch.image, again.image)
    assert batch.all_in_focus.shape == (2, 3, 48, 48) and batch.estimate is None


def test_the_callback_sees_every_iteration_and_can_cancel():
    img, d = _two_planes()
    blurred = _blur(img, d, 0.0, 5.0)
    seen = []
    refocus_physics(blurred, d, 0.9, 5.0, input_focus_disparity=0.0, input_K=5.0, settings=FAST,
                    callback=lambda done, total, _: seen.append((done, total)))
    n = FAST.iterations(1)
    done = [d for d, _ in seen]
    assert seen[-1] == (n, n) and all(t == n for _, t in seen)
    assert done == sorted(done) and sorted(set(done)) == list(range(n + 1))  # every CG iteration, in order
    assert len(seen) > 3 * n  # and within every operator application (per layer): Cancel acts within a layer

    class Stop(Exception):
        pass

    def stop(done, total, _):
        if done == 3:
            raise Stop
    with pytest.raises(Stop):
        refocus_physics(blurred, d, 0.9, 5.0, input_focus_disparity=0.0, input_K=5.0, settings=FAST, callback=stop)


@pytest.mark.parametrize("bad, match", [
    (dict(K=float("nan")), r"^K \(blur radius in px per unit disparity\): must be finite"),
    (dict(K=1e6), r"^K: 1e\+06 px per unit disparity \(bokeh level .*\) is more than this 48×48 image accepts, 64 px"),
    (dict(input_K=1e6), r"^input K: 1e\+06 px"),
    (dict(focus_disparity=1.5), "focus disparity"),
    (dict(input_K=-1.0), "input K"),
    (dict(depth=torch.zeros(1, 1, 40, 48)), "depth is 48×40 px but the image is 48×48"),
])
def test_bad_inputs_are_refused_before_any_work(bad, match):
    img, d = _two_planes()
    args = dict(focus_disparity=0.5, K=4.0, input_focus_disparity=0.0, input_K=4.0)
    depth = bad.pop("depth", d)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        refocus_physics(img, depth, args.pop("focus_disparity"), args.pop("K"), **args)


def test_the_estimate_finds_the_sharp_plane_and_the_blur_strength():
    """Two planes 0.9 apart: the estimate names the sharp one (error well under half their separation) and the
    blur strength within a third; an all-in-focus image reads as (nearly) unblurred."""
    img, _ = _two_planes(96, 96)
    d2 = torch.zeros(1, 1, 96, 96)
    d2[..., 28:68, 28:68] = 0.9
    for d_in in (0.0, 0.9):
        est = estimate_input_blur(_blur(img, d2, d_in, 8.0), d2)
        assert abs(float(est.focus_disparity[0]) - d_in) < 0.25
        assert 0.65 * 8.0 < float(est.K[0]) < 1.35 * 8.0
        assert est.edge_observations[0] > 0 and est.caveat(0) == ""   # measured across the depth edge
    sharp = estimate_input_blur(img, d2)
    assert float(sharp.K[0]) < 3.0   # (a 3-px stripe texture reads as ~2 px of blur)


def test_the_estimate_measures_across_a_soft_depth_edge():
    """A depth model's edges are soft: the same two planes with their depth step spread by a Gaussian (σ 3 px at
    128²) still give silhouette measurements, and the blur strength within a third (before, no edge was found and the
    estimate fell back on texture)."""
    from kornia.filters import gaussian_blur2d
    img, _ = _two_planes(128, 128)
    d2 = torch.zeros(1, 1, 128, 128)
    d2[..., 36:92, 36:92] = 0.9
    soft = gaussian_blur2d(d2, (19, 19), (3.0, 3.0), border_type="replicate")
    est = estimate_input_blur(_blur(img, d2, 0.0, 10.0), soft)
    assert est.edge_observations[0] > 0 and est.caveat(0) == ""
    assert abs(float(est.focus_disparity[0])) < 0.25
    assert 0.65 * 10.0 < float(est.K[0]) < 1.35 * 10.0


def test_an_estimate_from_texture_alone_says_it_is_weak():
    """A slanted plane has no depth edge: the estimate rests on texture and its description tells the user to set
    the input's focus and level if they know them (the node's text preview and the CLI print it)."""
    img, _ = _two_planes(64, 64)
    ramp = torch.linspace(0.1, 0.9, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64).contiguous()
    est = estimate_input_blur(_blur(img, ramp, 0.1, 8.0), ramp)
    assert est.edge_observations == [0] and float(est.K[0]) > 0
    assert "estimated from texture alone" in est.caveat(0) and "set the input's focus and level" in est.describe()
    res = refocus_physics(_blur(img, ramp, 0.1, 8.0), ramp, 0.9, 8.0, settings=FAST)
    assert "(estimated): no depth edge to measure" in res.describe()
    given = refocus_physics(_blur(img, ramp, 0.1, 8.0), ramp, 0.9, 8.0, input_focus_disparity=0.1, input_K=8.0,
                            settings=FAST)
    assert given.describe() == "input focus disparity 0.100, blur K 8.00 px (given)"
    half = refocus_physics(_blur(img, ramp, 0.1, 8.0), ramp, 0.9, 8.0, input_K=8.0, settings=FAST)
    assert half.describe().endswith("blur K 8.00 px (given)") and "(estimated)" in half.describe()
    assert "texture alone" not in half.describe()      # the caveat is about the blur, which was given


def test_an_unbounded_fit_assumes_no_blur_and_says_so():
    """A ground plane focused at its horizon: its texture edges only say "at least this blurred", so the fit lands on
    its largest K (it read 1.9× the true level there and rang). That is no measurement: the estimate reports K = 0,
    flags the image as unbounded and tells the user to set the level; the refocus then only adds blur."""
    from diffcamera.evaluation.scenes import make_scene
    from diffcamera.evaluation.thin_lens import render_thin_lens
    scene = make_scene(6, size=64, kind="ground")
    d = scene.disparity.float()
    img = render_thin_lens(scene, float(torch.quantile(d.flatten(), 0.05)), 10.0).float()
    est = estimate_input_blur(img, d)
    assert est.unbounded == [True] and float(est.K[0]) == 0.0 and est.edge_observations == [0]
    assert est.caveat(0).startswith("the image sets no upper limit on its blur, so none was assumed")
    res = refocus_physics(img, d, 0.9, 10.0, settings=FAST)
    assert "(estimated): the image sets no upper limit" in res.describe()
    # a measured estimate is not flagged
    two, _ = _two_planes(96, 96)
    d2 = torch.zeros(1, 1, 96, 96)
    d2[..., 28:68, 28:68] = 0.9
    measured = estimate_input_blur(_blur(two, d2, 0.0, 8.0), d2)
    assert measured.unbounded == [False] and measured.caveat(0) == ""


def test_a_picture_soft_everywhere_is_not_read_as_lens_blur():
    """An all-in-focus scene softened alike everywhere (an upscaled photo, a soft text-to-image output) has nothing
    sharp, which no lens photo focused inside its scene lacks; its texture differences between depths were read as
    lens blur (level 87 here) and over-sharpened. No blur is assumed, and the estimate says why; the same scene through
    a lens focused inside it is still measured."""
    from kornia.filters import gaussian_blur2d
    from diffcamera.evaluation.scenes import make_scene
    from diffcamera.evaluation.thin_lens import render_thin_lens
    scene = make_scene(0, size=128, kind="layers")
    d = scene.disparity.float()
    soft = gaussian_blur2d(scene.image.float(), (13, 13), (2.0, 2.0), border_type="replicate")
    est = estimate_input_blur(soft, d)
    assert est.nothing_sharp == [True] and float(est.K[0]) == 0.0
    assert est.caveat(0).startswith("nothing in the image reads sharp, so no blur was assumed")
    lens = render_thin_lens(scene, float(torch.quantile(d.flatten(), 0.05)), 8.0).float()
    measured = estimate_input_blur(lens, d)
    assert measured.nothing_sharp == [False] and float(measured.level[0]) > 20

