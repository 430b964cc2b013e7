"""Tier a: the refocus sampler — determinism, denoise, interruption, tiling without seams, bad input."""
import pytest
import torch

from diffcamera.core.dit.packing import pack_latents, token_ids, unpack_latents
from diffcamera.core.dit.sampler import flux_mu, refocus, schedule
from diffcamera.core.dit.tiling import plan_tiles, tile_starts
from diffcamera.core.dit.toy import toy_config
from diffcamera.core.dit.autoencoder import PixelShuffleAutoencoder
from diffcamera.core.dit.conditions import CameraEncoder
from diffcamera.core.values import Focus
from tiny_dit import tiny_flux, toy


def _inputs(h=32, w=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, h, w, generator=g)
    disp = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    return img, disp, Focus(torch.tensor([0.25]), torch.tensor([0.5]), torch.tensor([0.25]), ["point"])


@pytest.fixture(scope="module")
def toy_model():
    return toy()


class Counting:
    """Wraps a model, counting velocity calls."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def velocity_from_tokens(self, *a, **k):
        self.calls += 1
        return self.model.velocity_from_tokens(*a, **k)


def test_mu_matches_diffusers_calculate_shift():
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift
    for n in (64, 256, 1024, 4096, 9000):
        assert flux_mu(n) == pytest.approx(calculate_shift(n, 256, 4096, 0.5, 1.15), rel=1e-12)
    _, ts = schedule(28, 4096)
    assert len(ts) == 28 and ts[0] == 1000 and bool((ts[1:] < ts[:-1]).all())
    _, ts = schedule(10, 4096, denoise=0.5)
    assert len(ts) == 5


def test_same_seed_same_image_bitwise(toy_model):
    img, disp, focus = _inputs()
    a = refocus(toy_model, img, disp, focus, 8.0, steps=3, seed=5)
    b = refocus(toy_model, img, disp, focus, 8.0, steps=3, seed=5)
    c = refocus(toy_model, img, disp, focus, 8.0, steps=3, seed=6)
    assert a.shape == img.shape and torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert 0 <= a.min() and a.max() <= 1


def test_odd_sizes_are_padded_and_cropped(toy_model):
    img, disp, focus = _inputs(30, 45)
    out = refocus(toy_model, img, disp, focus, 8.0, steps=1, seed=0)
    assert out.shape == (1, 3, 30, 45)


def test_denoise_starts_from_noised_input(toy_model):
    img, disp, focus = _inputs()
    seen = []
    out = refocus(toy_model, img, disp, focus, 8.0, steps=8, denoise=0.25, callback=lambda d, t, p: seen.append((d, t)))
    assert seen == [(1, 2), (2, 2)]
    full = refocus(toy_model, img, disp, focus, 8.0, steps=8, denoise=1.0)
    # starting from the (pixel-exact) toy latent of the input, a short denoise stays nearer the input
    assert (out - img).abs().mean() < (full - img).abs().mean()


def test_interrupt_stops_within_one_step(toy_model):
    img, disp, focus = _inputs()
    counted = Counting(toy_model)

    class Stop(Exception):
        pass

    def cb(done, total, preview):
        if done == 2:
            raise Stop()

    with pytest.raises(Stop):
        refocus(counted, img, disp, focus, 8.0, steps=6, callback=cb)
    assert counted.calls == 2


def test_preview_reaches_callback(toy_model):
    img, disp, focus = _inputs()
    previews = []
    refocus(toy_model, img, disp, focus, 8.0, steps=2, preview=True, callback=lambda d, t, p: previews.append(p))
    assert len(previews) == 2 and previews[0].shape == (1, 3, 8, 12)


def test_tiny_flux_path_and_preview():
    model = tiny_flux()
    img, disp, focus = _inputs(32, 32)
    previews = []
    out = refocus(model, img, disp, focus, 8.0, steps=2, guidance=3.5, preview=True,
                  callback=lambda d, t, p: previews.append(p))
    assert out.shape == img.shape and previews[-1].shape == (1, 3, 4, 4)


# ----------------------------------------------------------------------------------------------- tiling
def test_tile_plan_covers_with_overlap():
    assert tile_starts(40, 16, 4) == [0, 12, 24]
    assert tile_starts(16, 16, 4) == [0]
    tiles = plan_tiles(20, 40, 16, 4)
    cover = torch.zeros(20, 40)
    for y0, x0, th, tw, wgt in tiles:
        assert wgt.min() > 0
        cover[y0:y0 + th, x0:x0 + tw] += wgt
    assert cover.min() > 0


class LocalModel(torch.nn.Module):
    """A per-token (attention-free) velocity: tiling must reproduce it exactly."""

    def __init__(self):
        super().__init__()
        self.config = toy_config()
        self.autoencoder = PixelShuffleAutoencoder(4)
        self.cam = CameraEncoder(6, 8, 192, 4, 16)
        torch.nn.init.normal_(self.cam.fc2.weight, std=0.1)
        self.lin = torch.nn.Linear(192 * 2, 192)

    @property
    def device(self):
        return torch.device("cpu")

    def condition_tokens(self, ref, cam):
        h, w = ref.shape[-2:]
        return pack_latents(ref) + self.cam(cam), token_ids(h // 2, w // 2, 1)

    def velocity_from_tokens(self, x, sigma, cond, ids, guidance=1.0, prompt=None, reference=None):
        h, w = x.shape[-2:]
        t = self.lin(torch.cat([pack_latents(x), cond], -1)) * sigma.view(-1, 1, 1)
        return unpack_latents(t, h, w)


def test_tiling_reproduces_a_local_model_exactly(monkeypatch):
    import diffcamera.core.dit.sampler as sampler
    monkeypatch.setattr(sampler, "flux_mu", lambda n: 0.8)  # the shift follows tokens per call; fix it here
    model = LocalModel()
    img, disp, focus = _inputs(64, 96)
    with torch.no_grad():
        whole = refocus(model, img, disp, focus, 8.0, steps=3, seed=1)
        tiled = refocus(model, img, disp, focus, 8.0, steps=3, seed=1, tile_size=32, tile_overlap=16)
    assert torch.allclose(whole, tiled, atol=1e-5)


def test_one_tile_covering_the_image_is_untiled(toy_model):
    img, disp, focus = _inputs()
    a = refocus(toy_model, img, disp, focus, 8.0, steps=2, seed=3)
    b = refocus(toy_model, img, disp, focus, 8.0, steps=2, seed=3, tile_size=64)
    assert torch.equal(a, b)


def _seam_ratio(out, boundaries):
    """Mean |horizontal step| across columns ``boundaries`` over the mean elsewhere."""
    dx = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1, 2))
    at = torch.stack([dx[c - 1] for c in boundaries]).mean()
    mask = torch.ones_like(dx, dtype=torch.bool)
    for c in boundaries:
        mask[c - 1] = False
    return float(at / dx[mask].mean())


class ContextModel(LocalModel):
    """The exact "copy the reference" velocity ``(x − ref)/σ`` plus a term from the mean of the call's tokens
    (like attention context): each tile sees another context, so naive tiling leaves steps at tile borders."""

    def velocity_from_tokens(self, x, sigma, cond, ids, guidance=1.0, prompt=None, reference=None):
        ref = unpack_latents(cond, *x.shape[-2:])
        ctx = x.mean(dim=(-2, -1), keepdim=True) + x[..., :1, :].mean(dim=(-2, -1), keepdim=True)
        return (x - ref) / sigma.view(-1, 1, 1, 1) + 3.0 * ctx


def test_tiling_leaves_no_seams_with_context_dependent_velocity():
    model = ContextModel()
    torch.nn.init.zeros_(model.cam.fc2.weight)
    img, disp, focus = _inputs(64, 128, seed=2)
    img = torch.nn.functional.interpolate(img[..., ::8, ::8], size=(64, 128), mode="bilinear")
    with torch.no_grad():
        hard = refocus(model, img, disp, focus, 8.0, steps=4, seed=1, tile_size=64, tile_overlap=0)
        blended = refocus(model, img, disp, focus, 8.0, steps=4, seed=1, tile_size=64, tile_overlap=32)
    # hard tiles [0,64) [64,128): a step at column 64; blended tiles at 0, 32, 64: no step anywhere
    assert _seam_ratio(hard, [64]) > 1.3  # measured 1.55
    assert _seam_ratio(blended, [32, 64, 96]) < 1.15  # measured 0.94


def test_tiled_real_dit_stays_close_to_untiled(toy_model):
    img, disp, focus = _inputs(64, 128, seed=2)
    img = torch.nn.functional.interpolate(img[..., ::8, ::8], size=(64, 128), mode="bilinear")
    whole = refocus(toy_model, img, disp, focus, 8.0, steps=3, seed=1)
    blended = refocus(toy_model, img, disp, focus, 8.0, steps=3, seed=1, tile_size=64, tile_overlap=32)
    assert blended.shape == whole.shape
    assert (blended - whole).abs().mean() < 0.02
    assert _seam_ratio(blended, [32, 64, 96]) < 1.3


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change, match", [
    (dict(disp=torch.rand(1, 1, 16, 48)), "depth is 48×16"),
    (dict(img=torch.rand(1, 3, 4, 48), disp=torch.rand(1, 1, 4, 48)), "smaller than one latent token"),
    (dict(steps=0), "steps must be at least 1"),
    (dict(denoise=0.0), "denoise"),
    (dict(focus=Focus(torch.rand(3), torch.rand(3), torch.rand(3), [])), "focus has 3"),
])
def test_bad_input_raises_before_work(toy_model, change, match):
    img, disp, focus = _inputs()
    kw = dict(img=img, disp=disp, focus=focus, steps=2, denoise=1.0)
    kw.update(change)
    counted = Counting(toy_model)
    with pytest.raises(ValueError, match=match):
        refocus(counted, kw["img"], kw["disp"], kw["focus"], 8.0, steps=kw["steps"], denoise=kw["denoise"])
    assert counted.calls == 0


def test_an_untrained_residual_model_returns_its_reference_exactly():
    """The toy's parameterisation (x0 = reference + output, output layer zero at init): whatever the steps, denoise
    and seed, sampling ends on the reference (the physics estimate the pipeline gives it), so refining cannot make
    the estimate worse before training has taught it something."""
    model = toy(prediction="residual")
    assert float(model.transformer.proj_out.weight.detach().abs().max()) == 0.0
    img, disp, focus = _inputs()
    for steps, denoise, seed in ((1, 1.0, 0), (8, 0.5, 3), (28, 0.3, 9)):
        out = refocus(model, img, disp, focus, 8.0, steps=steps, denoise=denoise, seed=seed, init_image=img)
        assert torch.allclose(out, img, atol=2e-6), (steps, denoise, seed)


def test_time_shift_is_the_schedulers():
    from diffcamera.core.dit.sampler import time_shift
    for tokens in (64, 1024, 4096):
        sched, _ = schedule(20, tokens)
        grid = torch.linspace(1.0, 1.0 / 20, 20)
        assert torch.allclose(time_shift(grid, tokens), sched.sigmas[:-1].float(), atol=1e-6)
