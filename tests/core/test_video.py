"""core/video.py: easing, the rack-focus schedule, per-frame focus, temporal smoothing and its lag."""
from __future__ import annotations

import pytest
import torch

from diffcamera.core import video


def _crossing(curve: torch.Tensor, level: float = 0.5) -> float:
    """Fractional frame index where a rising curve first reaches ``level`` (linear interpolation)."""
    i = int(torch.nonzero(curve >= level)[0])
    if i == 0:
        return 0.0
    a, b = float(curve[i - 1]), float(curve[i])
    return i - 1 + (level - a) / (b - a)


@pytest.mark.parametrize("curve", video.EASINGS)
def test_easing_runs_from_0_to_1_monotonically(curve):
    t = torch.linspace(0, 1, 101)
    e = video.ease(t, curve)
    assert float(e[0]) == 0.0 and float(e[-1]) == 1.0
    assert (e[1:] >= e[:-1]).all()
    assert float(video.ease(torch.tensor(-0.5), curve)) == 0.0 and float(video.ease(torch.tensor(2.0), curve)) == 1.0


def test_easing_shapes():
    t = torch.tensor([0.01, 0.25, 0.5, 0.75, 0.99])
    io = video.ease(t, "ease-in-out")
    assert torch.allclose(io + video.ease(1 - t, "ease-in-out"), torch.ones(5))  # symmetric about the middle
    assert float(io[0]) < 1e-3 and float(1 - io[-1]) < 1e-3  # starts and settles slowly
    assert torch.allclose(video.ease(t, "linear"), t)
    assert (video.ease(t, "ease-in") < t).all() and (video.ease(t, "ease-out") > t).all()
    with pytest.raises(ValueError, match="^easing: unknown curve 'bounce'"):
        video.ease(t, "bounce")


def test_schedule_holds_exactly_the_asked_frames():
    p = video.rack_schedule(20, hold_start=4, hold_end=6, curve="linear")
    assert p.shape == (20,)
    assert (p[:4] == 0).all() and (p[-6:] == 1).all()
    moving = p[4:-6]
    assert ((moving > 0) & (moving < 1)).all() and (moving[1:] > moving[:-1]).all()
    assert torch.allclose(moving, torch.arange(1, 11) / 11.0)
    assert video.rack_schedule(6, 3, 3).tolist() == [0, 0, 0, 1, 1, 1]  # no transition frames: a cut
    assert video.rack_schedule(1).tolist() == [0.5]


@pytest.mark.parametrize("args,match", [((0, 0, 0), "^frames: a shot needs at least 1 frame"),
                                        ((10, 6, 5), r"^hold_start \+ hold_end: 6 \+ 5 frames held do not fit"),
                                        ((10, -1, 0), "^hold_start / hold_end: must be >= 0"),
                                        ((10, 2.5, 0), "^hold_start: must be a whole number")])
def test_schedule_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        video.rack_schedule(*args)


def _two_planes(h=24, w=36, left=0.2, right=0.8):
    d = torch.full((1, 1, h, w), left)
    d[..., w // 2:] = right
    return d


def test_rack_focus_pulls_from_one_subject_to_the_other():
    focus = video.rack_focus(_two_planes(), (0.2, 0.5), (0.8, 0.5), frames=12, hold_start=3, hold_end=2,
                             curve="ease-in-out")
    d = focus.disparity
    assert d.shape == (12,) and focus.method == ["rack:ease-in-out"] * 12
    assert torch.allclose(d[:3], torch.tensor(0.2)) and torch.allclose(d[-2:], torch.tensor(0.8))
    assert (d[3:-2] > 0.2).all() and (d[3:-2] < 0.8).all() and (d[1:] >= d[:-1]).all()
    assert torch.allclose(focus.x[:3], torch.tensor(0.2)) and torch.allclose(focus.x[-2:], torch.tensor(0.8))
    # the pull is symmetric: its midpoint is the middle one of the 7 transition frames (3..9)
    assert abs(_crossing((d - 0.2) / 0.6) - 6.0) < 1e-4


def test_rack_focus_reads_each_frame_of_a_per_frame_depth_and_masks():
    frames = 5
    depth = _two_planes().repeat(frames, 1, 1, 1)
    depth[:, :, :, :18] += torch.linspace(0, 0.1, frames).view(-1, 1, 1, 1)  # the near subject drifts
    focus = video.rack_focus(depth, (0.1, 0.5), (0.9, 0.5), frames=frames, hold_start=frames, hold_end=0)
    assert torch.allclose(focus.disparity, 0.2 + torch.linspace(0, 0.1, frames), atol=1e-6)
    mask = torch.zeros(1, 1, 24, 36)
    mask[..., 30:] = 1
    to_mask = video.rack_focus(_two_planes(), (0.1, 0.5), mask, frames=4, hold_start=0, hold_end=1)
    assert abs(float(to_mask.disparity[-1]) - 0.8) < 1e-6
    with pytest.raises(ValueError, match="^depth: 3 depth maps for 5 frames"):
        video.rack_focus(depth[:3], (0.1, 0.5), (0.9, 0.5), frames=5)
    with pytest.raises(ValueError, match="^end: the mask is empty"):
        video.rack_focus(_two_planes(), (0.1, 0.5), torch.zeros(1, 1, 24, 36), frames=4)


def test_smoothing_keeps_constants_ramps_and_far_frames_and_cuts_noise():
    torch.manual_seed(0)
    const = torch.full((9, 1, 4, 4), 0.3)
    assert torch.allclose(video.smooth_frames(const, 3), const)
    ramp = torch.linspace(0, 1, 30).view(-1, 1)
    smoothed = video.smooth_frames(ramp, 3)
    assert torch.allclose(smoothed[3:-3], ramp[3:-3], atol=1e-6)  # no lag on a linear pull
    noise = 0.05 * torch.randn(400, 1, 8, 8)
    ratio = float(video.smooth_frames(noise, 2)[2:-2].std() / noise.std())
    assert abs(ratio - 1 / 5 ** 0.5) < 0.03
    one = noise[:1]
    assert video.smooth_frames(noise, 0) is noise and video.smooth_frames(one, 5) is one
    with pytest.raises(ValueError, match="^temporal_smoothing: a radius in frames >= 0"):
        video.smooth_frames(noise, -1)


@pytest.mark.parametrize("curve", video.EASINGS)
def test_smoothing_does_not_lag_a_focus_pull(curve):
    """A centred window of radius r moves the midpoint of a pull by no frame, changes no frame farther than r
    from the pull's ends, and stays within the pull's range; a trailing (causal) average of the same length,
    the kind of filter that lags, is caught by the same measurement (r frames late)."""
    r = 3
    raw = video.rack_schedule(40, hold_start=8, hold_end=8, curve=curve)
    smooth = video.smooth_frames(raw.view(-1, 1), r).view(-1)
    lag = _crossing(smooth) - _crossing(raw)
    if curve in ("linear", "ease-in-out"):  # symmetric pulls: the midpoint stays on its frame
        assert abs(lag) < 0.5, lag
    assert abs(lag) <= r, lag  # asymmetric curves: never more than the window's half-width
    changed = torch.nonzero((smooth - raw).abs() > 1e-6).view(-1)
    assert int(changed.min()) >= 8 - r and int(changed.max()) <= 40 - 8 - 1 + r
    assert float(smooth.min()) >= 0.0 and float(smooth.max()) <= 1.0
    trailing = torch.stack([raw[max(0, i - 2 * r):i + 1].mean() for i in range(40)])
    assert _crossing(trailing) - _crossing(raw) > r - 0.5


def test_flicker_and_frame_counts():
    assert video.temporal_flicker(torch.ones(5, 3, 2, 2)) == 0.0
    frames = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(4, 1, 1, 1)
    assert video.temporal_flicker(frames) == 1.0
    with pytest.raises(ValueError):
        video.temporal_flicker(frames[:1])
    assert video.frame_counts([("image", 1), ("focus", 24), ("depth", 1)]) == 24
    with pytest.raises(ValueError, match=r"^frame counts differ \(image 1, focus 24, depth 3\)"):
        video.frame_counts([("image", 1), ("focus", 24), ("depth", 3)])
