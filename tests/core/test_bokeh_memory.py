"""estimate_render_bytes is an upper bound of what render_bokeh really allocates, the renderer keeps to
its budget by tiling, and its progress callback comes often enough to honour a Cancel."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from diffcamera.core.bokeh import ALLOCATOR_MARGIN, DEFAULT_MEMORY_BUDGET, estimate_render_bytes, render_bokeh

PROBE = textwrap.dedent("""
    import sys, torch, torch.nn.functional as F
    torch.set_num_threads(1)
    from diffcamera.core.bokeh import render_bokeh
    mode, size, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    render_bokeh(torch.rand(1, 3, 48, 48), torch.rand(1, 1, 48, 48), 0.5, 40.0, mode=mode)   # warm up
    g = torch.Generator().manual_seed(0)
    d = F.interpolate(torch.rand(1, 1, 8, 8, generator=g), size=(size, size), mode="bilinear")
    img = torch.rand(1, 3, size, size, generator=g)
    def rss(field):
        return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(field))
    base = rss("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")   # reset the peak (VmHWM)
    render_bokeh(img, d, 0.5, 40.0, mode=mode, memory_budget=budget)
    print(rss("VmHWM") - base)
""")


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc to read peak memory")
@pytest.mark.parametrize("mode", ["classical", "layered"])
def test_peak_memory_stays_within_the_estimate_and_the_budget(mode):
    size, budget = 512, 160 * 1024 ** 2      # small enough that the render must tile itself
    est = estimate_render_bytes(1, size, size, mode, 20.0, memory_budget=budget)
    assert est <= ALLOCATOR_MARGIN * budget   # the counted buffers fit the budget
    out = subprocess.run([sys.executable, "-c", PROBE, mode, str(size), str(budget)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.split()[-1])
    assert 0 < peak <= est, (peak, est)


def test_estimate_grows_with_size_and_is_capped_by_the_budget():
    for mode in ("classical", "layered"):
        small = estimate_render_bytes(1, 512, 512, mode, 32.0)
        big = estimate_render_bytes(1, 2048, 2048, mode, 32.0)
        assert 0 < small < big <= ALLOCATOR_MARGIN * DEFAULT_MEMORY_BUDGET
        # beyond the budget only the whole-image buffers grow
        huge = estimate_render_bytes(1, 8192, 8192, mode, 64.0)
        assert huge > DEFAULT_MEMORY_BUDGET
        assert huge < 8192 * 8192 * 4 * 20   # whole-image buffers only (at most 13 floats per pixel)
        assert estimate_render_bytes(2, 1024, 1024, mode, 32.0) > estimate_render_bytes(1, 1024, 1024, mode, 32.0)
    with pytest.raises(ValueError, match="mode"):
        estimate_render_bytes(1, 64, 64, "fast")


@pytest.mark.parametrize("mode", ["classical", "layered"])
def test_callback_comes_per_layer_or_kernel_and_tile(mode):
    img = torch.rand(1, 3, 256, 256)
    disp = torch.linspace(0, 1, 256).view(1, 1, 1, 256).expand(1, 1, 256, 256).contiguous()
    calls = []
    render_bokeh(img, disp, 0.5, 64.0, mode=mode, memory_budget=48 * 1024 ** 2,
                 callback=lambda done, total, preview: calls.append((done, total)))
    assert len(calls) >= 20
    assert all(0 < d <= t for d, t in calls) and calls[-1][0] == calls[-1][1]
