"""Training nodes through the fake ComfyUI executor (API-format prompts, inference mode as in ComfyUI)."""
import json
import os

import pytest
import torch

from fake_executor import run_prompt
from diffcamera.nodes.training import NODES

CLASSES = {c.define_schema().node_id: c for c in NODES}
TINY_CONFIG = {
    "model_kind": "toy", "size": 32, "lr": 0.001, "warmup_steps": 1, "batch_size": 1,
    "model": {"transformer": {"patch_size": 1, "in_channels": 192, "num_layers": 1, "num_single_layers": 1,
                              "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": 16,
                              "pooled_projection_dim": 16, "guidance_embeds": False, "axes_dims_rope": [4, 6, 6]},
              "camera_hidden": 16},
}


@pytest.fixture
def tiny_bundled_config(monkeypatch, tmp_path):
    """A tiny config made visible as a bundled one (so the test trains in seconds)."""
    from diffcamera.training import config as cfg_mod
    d = tmp_path / "configs"
    d.mkdir()
    (d / "tiny_test.json").write_text(json.dumps(TINY_CONFIG))
    monkeypatch.setattr(cfg_mod, "CONFIG_DIR", str(d))
    return "tiny_test"


def _prompt(config="tiny_test", steps=2, run_name="run1", name="pairs"):
    return {
        "1": {"class_type": "DiffCamera_SimulateDataset",
              "inputs": {"source": "procedural", "num_scenes": 2, "variants": 1, "size": 32, "level_min": 32.0,
                         "level_max": 256.0, "seed": 0, "name": name}},
        "2": {"class_type": "DiffCamera_TrainRefocusLoRA",
              "inputs": {"dataset": ["1", 0], "config": config, "steps": steps, "batch_size": 1,
                         "learning_rate": 0.001, "lambda_stack": 1.0, "depth_dropout": 0.15, "seed": 0,
                         "run_name": run_name, "checkpoint_every": 0}},
    }


def test_schemas_have_descriptions_and_tooltips():
    for cls in NODES:
        s = cls.define_schema()
        assert s.description and s.node_id.startswith("DiffCamera_")
        for i in s.inputs:
            assert i.tooltip, (s.node_id, i.id)


def test_simulate_then_train_in_inference_mode(comfy_models_dir, tiny_bundled_config):
    out = run_prompt(_prompt(), CLASSES)
    dataset, summary = out["1"].result
    assert dataset.groups == 2 and os.path.isfile(os.path.join(dataset.folder, "manifest.json"))
    path, curve = out["2"].result
    assert os.path.isfile(path) and path.startswith(str(comfy_models_dir / "diffcamera"))
    assert curve.dim() == 4 and curve.shape[-1] == 3 and curve.shape[0] == 1
    from diffcamera.core.dit.model import load_model_file
    assert load_model_file(path).config.family == "toy"
    # a second run never overwrites the published file
    out2 = run_prompt(_prompt(run_name="run2"), CLASSES)
    assert out2["2"].result[0] != path and os.path.isfile(path)


def test_cancel_saves_a_checkpoint_and_requeue_resumes(comfy_models_dir, tiny_bundled_config, monkeypatch):
    import comfy.model_management as mm
    from diffcamera import runtime as rt
    dataset = run_prompt({"1": _prompt()["1"]}, CLASSES)["1"].result[0]
    train_inputs = {k: v for k, v in _prompt(steps=3, run_name="cancelled")["2"]["inputs"].items() if k != "dataset"}
    progress_call = rt.Progress.__call__

    def cancel_after_first_step(self, done, total=None, preview=None):
        if done >= 1:  # the user presses Cancel once the first step is done
            mm.interrupt_current_processing(True)
        return progress_call(self, done, total, preview)

    monkeypatch.setattr(rt.Progress, "__call__", cancel_after_first_step)
    with pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
        CLASSES["DiffCamera_TrainRefocusLoRA"].execute(dataset=dataset, **train_inputs)
    monkeypatch.setattr(rt.Progress, "__call__", progress_call)
    run_dir = comfy_models_dir.parent / "output" / "diffcamera_train" / "cancelled"
    assert (run_dir / "checkpoints" / "latest.json").is_file()
    out = run_prompt(_prompt(steps=3, run_name="cancelled"), CLASSES)
    steps = [json.loads(l)["step"] for l in (run_dir / "loss.jsonl").read_text().splitlines() if l.strip()]
    assert steps == [1, 2, 3] and os.path.isfile(out["2"].result[0])


def test_bad_inputs_are_named(comfy_models_dir, tiny_bundled_config):
    p = _prompt()
    p["1"]["inputs"]["source"] = "image_folder"
    p["1"]["inputs"]["image_folder"] = str(comfy_models_dir / "nope")
    with pytest.raises(ValueError, match="image_folder"):
        run_prompt(p, CLASSES)
    p = _prompt(run_name="../escape")
    with pytest.raises(ValueError, match="run_name"):
        run_prompt(p, CLASSES)
