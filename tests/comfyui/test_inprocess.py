"""Tier c, ComfyUI in-process (in a subprocess with ComfyUI's interpreter; see ``inproc/bootstrap.py``).

* The V1 view of every node class (``INPUT_TYPES``, ``RETURN_TYPES``, ``RETURN_NAMES``, ``FUNCTION``,
  ``OUTPUT_NODE``, ``CATEGORY``, ``DESCRIPTION``) under the real ``comfy_api.latest`` equals the one
  under our fallback (``comfy_fallback``), which tier b's fake executor validates against.
"""
from __future__ import annotations

import json
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _fake_view(base):
    sys.path.insert(0, os.path.join(HERE, "inproc"))
    try:
        from v1_view import v1_view
    finally:
        sys.path.pop(0)
    import folder_paths
    from diffcamera.nodes import all_nodes

    folder_paths.set_base(base)
    for name in ("depth_anything", "diffcamera"):
        folder_paths.folder_names_and_paths.pop(name, None)
    for name in ("loras", "diffusion_models", "vae", "text_encoders"):
        folder_paths.folder_names_and_paths[name] = ([os.path.join(base, "models", name)],
                                                     folder_paths.folder_names_and_paths.get(name, ([], set()))[1])
    return json.loads(json.dumps({cls.define_schema().node_id: v1_view(cls) for cls in all_nodes()}))


def test_v1_view_of_real_comfy_api_equals_the_fallback(comfy_run, comfy_world):
    real = comfy_run("v1_view.py", comfy_world)
    fake = _fake_view(comfy_world)
    assert sorted(real) == sorted(fake)
    for node_id in fake:
        for key, want in fake[node_id].items():
            got = real[node_id][key]
            if key == "INPUT_TYPES":
                for section in set(want) | set(got):
                    assert list(want.get(section, {})) == list(got.get(section, {})), (node_id, section)
                    for name, spec in want.get(section, {}).items():
                        assert spec == got[section][name], f"{node_id}.{name}: fake {spec} != real {got[section][name]}"
            assert got == want, f"{node_id}.{key}: fake {want!r} != real {got!r}"


def _chromium():
    import shutil

    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


FRONT_ENDS = [pytest.param("default", "classic", id="default-frontend-classic"),
              pytest.param("newer", "classic", id="newer-frontend-classic"),
              pytest.param("newer", "vue", id="newer-frontend-nodes2")]


@pytest.mark.parametrize("frontend,mode", FRONT_ENDS)
def test_focus_picker_in_real_front_end(request, frontend, mode, comfy_env, comfy_run, tmp_path):
    """Headless Chromium on a real front end, ComfyUI's own (v0.3.64 pins 1.27.10, classic canvas) and the newer
    one from ``$DIFFCAMERA_FRONTEND_ROOT`` (1.58.x) in both render modes (classic canvas, Nodes 2.0): UI
    workflows convert (front end's graphToPrompt) to their API copies; the picker draws the preview and is the
    node's only preview (the stock PreviewImage in the same graph shows one: the count can see it); drags on the
    picker do not move the node (a drag on its title does); a click in the letterbox bar of the wide image does
    nothing, a click on the image sets the widget to that image point; the value survives save -> load and a
    page reload; and the re-run focuses there. Screenshots are written (``$DIFFCAMERA_SCREENSHOT_DIR`` keeps a
    copy)."""
    import shutil
    import subprocess

    _, python = comfy_env
    chromium = _chromium()
    if not chromium:
        pytest.skip("no Chromium: apt-get install chromium (or set CHROMIUM=/path/to/chrome)")
    if subprocess.run([python, "-c", "import playwright"], capture_output=True).returncode != 0:
        pytest.skip(f"Playwright for Python is not installed for {python}: {python} -m pip install playwright "
                    "(the system Chromium is used; no browser download)")
    server = request.getfixturevalue("comfy_server" if frontend == "default" else "comfy_server_newer_frontend")
    root = os.path.dirname(os.path.dirname(HERE))
    out = comfy_run("browser_focus_picker.py", server.url, chromium, tmp_path, os.path.join(root, "workflows"),
                    "focus_from_depth_map.json", mode, timeout=900)
    keep = os.environ.get("DIFFCAMERA_SCREENSHOT_DIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for path in out["screenshots"]:
            shutil.copy(path, os.path.join(keep, f"{frontend}-{os.path.basename(path)}"))
    print(json.dumps({k: v for k, v in out.items() if k not in ("conversions",)}, indent=1)[:6000])
    assert out["extensions"], "the front end did not load web/js/focus_picker.js"
    if frontend == "newer":
        assert out["vue_setting"] is (mode == "vue"), out["vue_setting"]

    # the real front end converts each UI workflow to its API copy
    sys.path.insert(0, os.path.join(root, "scripts"))
    try:
        import workflow_ui
    finally:
        sys.path.pop(0)
    with open(os.path.join(root, "scripts", "stock_nodes_newer.json"), encoding="utf-8") as f:
        newer = set(json.load(f)["nodes"])
    for fname, missing in out["not_converted"].items():  # only UI-only workflows with core nodes newer than this
        assert set(missing) <= newer and not os.path.exists(os.path.join(root, "tests", "workflows", fname)), \
            (fname, missing)
    assert len(out["conversions"]) >= 7, sorted(out["conversions"])
    for fname, prompt in out["conversions"].items():
        api_path = os.path.join(root, "tests", "workflows", fname)
        if not os.path.exists(api_path):
            api_path = os.path.join(root, "scripts", "workflow_sources", fname)
        with open(api_path, encoding="utf-8") as f:
            api = json.load(f)
        assert workflow_ui.strip_meta(prompt) == workflow_ui.strip_meta(api), fname

    assert out["first_status"] == "success" and out["second_status"] == "success"
    assert "images" not in out["first_output_keys"] and "diffcamera_preview" in out["first_output_keys"]
    # one preview: ours, drawn; none from the front end; the stock PreviewImage (the control) shows its own
    for key in ("previews", "previews_after_rerun"):
        picker, stock = out[key]["picker"], out[key]["stock"]
        assert picker["ours"] == 1 and picker["ours_loaded"] == 1, (key, picker)
        assert picker["vue_stock_imgs"] == 0 and picker["canvas_imgs"] == 0 and picker["preview_widgets"] == 0, \
            (key, picker)
        assert stock["vue_stock_imgs"] + stock["canvas_imgs"] >= 1, (key, "the count does not see a stock preview", stock)
        assert picker["vue_node_element"] is (mode == "vue"), picker
    # drags: the title moves the node (control), the picker and its letterbox bar do not
    assert max(abs(v) for v in out["title_drag_moved"]) > 20, out["title_drag_moved"]
    assert out["image_drag_moved"] == [0, 0] and out["bar_drag_moved"] == [0, 0], out
    # the image is letterboxed (96x64 in a taller box); a click in the bar does nothing
    assert out["letterbox_bar_px"] > 10, out["box"]
    assert not out["bar_click_changed"]
    # the click maps to the image point
    assert out["top_element"] and "diffcamera-focus-image" in out["top_element"], out["top_element"]
    point = json.loads(out["widget_value"])
    w, h = out["box"]["nw"], out["box"]["nh"]
    assert abs(point["x"] - 0.25) <= 1.5 / w + 1e-3 and abs(point["y"] - 0.75) <= 1.5 / h + 1e-3, point
    assert out["marker_point"] == out["widget_value"]
    # save -> load -> page reload keep it, and the re-run uses it
    assert out["reloaded_value"] == out["widget_value"] and out["reloaded_marker_point"] == out["widget_value"]
    assert out["page_reload_value"] == out["widget_value"]
    assert json.loads(out["second_prompt_point"]) == point
    first, second = out["first_focus"][0], out["second_focus"][0]
    assert (round(first["x"], 3), round(first["y"], 3)) == (0.3, 0.6)
    assert abs(second["x"] - point["x"]) < 1e-3 and abs(second["y"] - point["y"]) < 1e-3, second
    assert abs(second["disparity"] - first["disparity"]) > 0.05, "the click did not move the focus to another depth"

    # the same graph with the clicked point, through the fake executor, picks the same focus disparity
    import fake_executor
    import folder_paths
    import stock_nodes
    from diffcamera.nodes import all_nodes

    folder_paths.set_base(server.base)
    with open(os.path.join(root, "tests", "workflows", "focus_from_depth_map.json"), encoding="utf-8") as f:
        prompt = json.load(f)
    picker_key = next(k for k, v in prompt.items() if v["class_type"] == "DiffCamera_FocusPicker")
    prompt[picker_key]["inputs"]["focus_point"] = out["widget_value"]
    classes = {c.define_schema().node_id: c for c in all_nodes()}
    classes.update(stock_nodes.NODE_CLASS_MAPPINGS)
    focus = fake_executor.run_prompt(prompt, classes)[picker_key].args[0]
    assert abs(float(focus.disparity[0]) - second["disparity"]) < 2e-3


def test_comfy_flux_and_our_diffusers_path_agree_with_our_lora(comfy_run, tmp_path):
    """A tiny FLUX built from ComfyUI's own classes (``comfy.supported_models.Flux``) predicts the same velocity
    as our diffusers transformer for the same weights and conditions (Kontext ``ref_latents``, method
    ``index``), with and without our LoRA; and our LoRA file loads in ComfyUI's stock LoraLoaderModelOnly
    with every ``transformer.*`` key mapped (only our own ``diffcamera.*`` extras are left to our loader)."""
    out = comfy_run("flux_parity.py", tmp_path, timeout=900)
    print(json.dumps(out, indent=1))
    for layout, errs in out["parity"].items():
        assert errs["effect"] > 1e-2, f"{layout}: the LoRA does not change the output, the comparison is void"
        assert errs["base"] < 1e-4, (layout, errs)
        assert errs["lora"] < 1e-4, (layout, errs)
    stock = out["stock_loader"]
    assert not [k for k in stock["not_loaded"] if k.startswith("transformer.")], stock["not_loaded"]
    assert all(k.startswith("diffcamera.") for k in stock["not_loaded"]), stock["not_loaded"]
    assert stock["patches"] > 0 and stock["transformer_keys"] > 0
    assert stock["error"] < 1e-4, stock


def test_refocus_node_same_image_on_comfy_model_and_own_transformer(comfy_run, tmp_path):
    """DiffCameraRefocus given ComfyUI's FLUX MODEL (flux_model; our LoRA applied by ComfyUI's patcher) makes the
    same image as with the loader's own diffusers transformer, for the same tiny weights (2 steps)."""
    out = comfy_run("node_parity.py", tmp_path, timeout=900)
    print(out)
    assert out["shape"] == [1, 64, 48, 3]
    assert out["effect"] > 1e-2
    assert out["diff"] < 1e-3, out


def test_comfy_api_names_and_keywords_exist_in_this_comfyui(comfy_run, tmp_path):
    """Every comfy_api name, Hidden member and constructor keyword the pack uses (collected from its source, as
    tests/test_comfy_api_names.py does against the 0.38 lists) exists publicly in the ComfyUI tier c runs."""
    sys.path.insert(0, os.path.dirname(HERE))
    try:
        import test_comfy_api_names as names
    finally:
        sys.path.pop(0)
    used = {k: sorted(v) for k, v in names.collect_used_names().items()}
    keywords = {}
    for _, _, kind, _, kws, _ in names.construction_calls():
        keywords.setdefault(kind, set()).update(kws)
    used["keywords"] = {k: sorted(v) for k, v in keywords.items()}
    path = tmp_path / "used.json"
    path.write_text(json.dumps(used))
    out = comfy_run("api_names.py", path)
    assert out == {"missing_latest": [], "missing_io": [], "missing_ui": [], "missing_hidden": [],
                   "refused_keywords": {}}, out
