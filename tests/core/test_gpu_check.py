"""benchmarks/gpu_check.py: its CPU dry run (the very code paths of the GPU run at tiny sizes) must keep working, so
the script is ready when a GPU is lent. Runs it as a subprocess, as a user would."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.py")

#: every row the GPU run prints (at the dry run's sizes)
ROWS = ["card", "versions",
        "BokehSimulate classical 64²", "BokehSimulate layered 64²",
        "BokehSimulate classical 128²", "BokehSimulate layered 128²",
        "physics refocus 64²",
        "refocus 64², 2 steps, bf16",
        "step: FLUX Kontext, one reference image, 64²", "step: DiffCameraRefocus fused, 64²",
        "refocus 64², 2 steps, fp8 storage",
        "train step 32², bf16 base, checkpointing", "train step 64², bf16 base, checkpointing",
        "train step 32², fp8 base, checkpointing", "train step 64², fp8 base, checkpointing",
        "refocus 64², 2 steps, bf16, group offload",
        "total time"]


def _table(text):
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 4 and cells[0] != "measurement" and not set(cells[0]) <= set("-"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out = tmp_path_factory.mktemp("gpu_check") / "table.md"
    res = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--out", str(out)], capture_output=True, text=True,
                         timeout=600, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert out.read_text() in res.stdout  # the same table in the file
    again = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--out", str(out)], capture_output=True, text=True,
                           timeout=600, env=env, cwd=ROOT)
    assert again.returncode == 2 and "exists" in again.stderr  # never replaces a file
    return res.stdout


def test_dry_run_prints_every_row_and_none_fails(dry_run):
    assert dry_run.count("| measurement | result | peak GPU memory | notes |") == 1  # ONE table
    rows = _table(dry_run)
    assert list(rows) == ROWS
    for label, (result, _peak, _notes) in rows.items():
        assert not result.startswith(("failed", "skipped")), (label, result)
    try:
        from diffcamera.core.physics import refocus_physics  # noqa: F401 - the lead's, when this build has it
        assert re.fullmatch(r"[\d.]+ s", rows["physics refocus 64²"][0])
    except ImportError:
        assert rows["physics refocus 64²"][0] == "not available in this build"
    assert re.fullmatch(r"[\d.]+ ms", rows["BokehSimulate layered 128²"][0])
    assert re.fullmatch(r"[\d.]+ s / image", rows["refocus 64², 2 steps, fp8 storage"][0])
    assert re.search(r"[\d.]+×\*\* the Kontext step", rows["step: DiffCameraRefocus fused, 64²"][2])
    assert "memory plan estimate" in rows["train step 64², fp8 base, checkpointing"][2]
    assert "LoRA float32" in rows["train step 64², fp8 base, checkpointing"][2]
    assert "dry run" in rows["card"][0]


def test_guarded_rows_report_failures_and_go_on():
    """A row that raises is printed as failed with its reason (out of memory included); the next rows still run."""
    import torch
    from diffcamera.cli.bench import gpu_check_module
    mod = gpu_check_module()
    rows = mod.Rows(mod.Plan(True, torch.device("cpu")))

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    def boom():
        raise ValueError("bad thing")
    rows.run("a", oom)
    rows.run("b", boom)
    rows.run("c", lambda: ("1 s", "", "ok"))
    rows.plan.budget_s = 0.0
    rows.run("d", lambda: ("never", "", ""))
    got = _table(rows.table())
    assert got["a"][0] == "failed: out of memory" and "Tried to allocate" in got["a"][2]
    assert got["b"][0] == "failed: ValueError" and got["b"][2] == "bad thing"
    assert got["c"] == ["1 s", "", "ok"]
    assert got["d"][0] == "skipped: time guard"


def test_cli_reaches_the_gpu_check(monkeypatch):
    from diffcamera.cli import bench, main
    mod = bench.gpu_check_module()
    assert os.path.samefile(mod.__file__, SCRIPT)  # the shipped script, loaded by path
    calls = []
    monkeypatch.setattr(mod, "main", lambda argv: calls.append(argv) or 0)
    assert main(["bench", "--gpu", "--dry-run"]) == 0
    assert main(["bench", "--gpu"]) == 0
    assert calls == [["--dry-run"], []]
    assert main(["bench", "--dry-run"]) == 2  # --dry-run belongs to --gpu
