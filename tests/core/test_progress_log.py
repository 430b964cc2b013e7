"""The plain-Python progress bar (``comfy_fallback.ProgressBar``, what the CLI shows) written to a log: stderr that
is not a terminal gets a few lines, not one per step (each redraw there is a new line in the log)."""
import subprocess
import sys

SCRIPT = """
from diffcamera.comfy_fallback import ProgressBar
bar = ProgressBar(2000, desc="solve")
for i in range(1, 2001):
    bar.update(i, 2000)
bar.close()
"""


def test_a_logged_progress_bar_writes_a_few_lines_not_one_per_step():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    redraws = run.stderr.count("\r") + run.stderr.count("\n")
    assert "solve" in run.stderr            # it still shows
    assert redraws <= 6, f"{redraws} redraws for 2000 steps: {run.stderr[-300:]!r}"
