"""Drive ComfyUI's real front end in headless Chromium (Playwright for Python, system Chromium).

Usage: ``python browser_focus_picker.py URL CHROMIUM OUT_DIR UI_WORKFLOW_DIR API_WORKFLOW_DIR PICKER_WORKFLOW``

1. Every UI workflow in ``UI_WORKFLOW_DIR`` is loaded into the front end (``app.loadGraphData``) and
   converted back with the front end's own ``app.graphToPrompt()``; the prompts are reported so the
   test compares them with the API copies (our converter's widget order against the real front end's).
2. ``PICKER_WORKFLOW`` (a UI workflow with one DiffCamera_FocusPicker) is loaded and queued; once the
   picker's preview <img> (see the DOM documented in ``web/js/focus_picker.js``) shows the result, the
   script clicks it at a normalised point with real mouse events, reads the ``focus_point`` widget, queues
   again and reports the ``diffcamera_focus`` the node returned in both runs.

Only the loopback URL is opened; Chromium runs with networking features off and a fresh profile.
"""
from __future__ import annotations

import json
import os
import sys
import time

from bootstrap import emit

CLICK = (0.25, 0.75)  # normalised x (right), y (down) of the click


def main(url, chromium, out_dir, ui_dir, api_dir, picker_name):
    from playwright.sync_api import sync_playwright

    assert url.startswith("http://127.0.0.1:")
    result = {"console": [], "conversions": {}}
    with sync_playwright() as pw:
        # Playwright gives every launch a fresh temporary profile (its own --user-data-dir)
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: result["console"].append(f"{m.type}: {m.text}"[:500]))
        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        page.wait_for_function("() => (window.app ?? window.comfyAPI?.app?.app)?.graph != null", timeout=120_000)
        page.wait_for_function("() => !!document.querySelector('canvas')", timeout=60_000)
        page.evaluate("() => { window.__app = window.app ?? window.comfyAPI.app.app; }")
        # the extension is loaded by the front end (GET /extensions, then an ES import)
        page.wait_for_function(
            "() => window.__app.extensions?.some(e => String(e.name).toLowerCase().includes('diffcamera'))",
            timeout=60_000)
        # node definitions come from /object_info after the extensions: wait until ours are registered
        page.wait_for_function(
            "() => { const t = (window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph)?.registered_node_types;"
            " return !!(t && t['DiffCamera_FocusPicker'] && t['LoadImage']); }", timeout=120_000)
        page.wait_for_timeout(500)
        result["extensions"] = page.evaluate(
            "() => window.__app.extensions.map(e => e.name).filter(n => n.toLowerCase().includes('diffcamera'))")

        # 1. the front end's own UI -> API conversion of every UI workflow
        for fname in sorted(os.listdir(ui_dir)):
            if not fname.endswith(".json"):
                continue
            with open(os.path.join(ui_dir, fname), encoding="utf-8") as f:
                wf = json.load(f)
            page.evaluate("async (wf) => { await window.__app.loadGraphData(wf); }", wf)
            out = page.evaluate("async () => (await window.__app.graphToPrompt()).output")
            result["conversions"][fname] = out

        # 2. click-to-focus on the picker workflow
        with open(os.path.join(ui_dir, picker_name), encoding="utf-8") as f:
            wf = json.load(f)
        page.evaluate("async (wf) => { await window.__app.loadGraphData(wf); }", wf)
        picker_id = next(n["id"] for n in wf["nodes"] if n["type"] == "DiffCamera_FocusPicker")

        def queue():
            return page.evaluate(
                """async () => {
                    const p = await window.__app.graphToPrompt();
                    const api = window.comfyAPI?.api?.api;
                    const r = await api.queuePrompt(0, p);
                    return r.prompt_id;
                }""")

        def wait_history(prompt_id, timeout=300):
            deadline = time.time() + timeout
            while time.time() < deadline:
                hist = page.evaluate("async (id) => (await (await fetch('/history/' + id)).json())", prompt_id)
                if prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                    entry = hist[prompt_id]
                    if entry["status"].get("status_str") in ("success", "error"):
                        return entry
                time.sleep(0.3)
            raise TimeoutError(prompt_id)

        first = wait_history(queue())
        result["first_status"] = first["status"]["status_str"]
        result["first_focus"] = first["outputs"].get(str(picker_id), {}).get("diffcamera_focus")
        img_sel = f".diffcamera-focus-picker[data-node-id='{picker_id}'] img.diffcamera-focus-image"
        page.wait_for_function(
            f"() => {{ const i = document.querySelector(\"{img_sel}\"); return i && i.complete && i.naturalWidth > 0; }}",
            timeout=60_000)
        # bring the picker into view and make sure no dialog covers it
        page.keyboard.press("Escape")
        page.evaluate("""(id) => {
            const app = window.__app, node = app.graph.getNodeById(id);
            const ds = app.canvas.ds; ds.scale = 1.0;
            ds.offset[0] = -node.pos[0] + 100; ds.offset[1] = -node.pos[1] + 100;
            app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        }""", picker_id)
        page.wait_for_timeout(800)
        box = page.evaluate(f"""() => {{
            const i = document.querySelector("{img_sel}"); const r = i.getBoundingClientRect();
            return {{left: r.left, top: r.top, width: r.width, height: r.height,
                     nw: i.naturalWidth, nh: i.naturalHeight}};
        }}""")
        # object-fit: contain -> the drawn image rectangle inside the element box
        scale = min(box["width"] / box["nw"], box["height"] / box["nh"])
        dw, dh = box["nw"] * scale, box["nh"] * scale
        cx = box["left"] + (box["width"] - dw) / 2 + CLICK[0] * dw
        cy = box["top"] + (box["height"] - dh) / 2 + CLICK[1] * dh
        result["box"] = box
        result["top_element"] = page.evaluate(
            "([x, y]) => { const e = document.elementFromPoint(x, y); return e ? e.className : null; }", [cx, cy])
        page.screenshot(path=os.path.join(out_dir, "before_click.png"))
        page.mouse.click(cx, cy)
        page.wait_for_timeout(300)
        result["widget_value"] = page.evaluate(
            "(id) => window.__app.graph.getNodeById(id).widgets.find(w => w.name === 'focus_point').value", picker_id)
        second = wait_history(queue())
        result["second_status"] = second["status"]["status_str"]
        result["second_focus"] = second["outputs"].get(str(picker_id), {}).get("diffcamera_focus")
        result["second_prompt_point"] = page.evaluate(
            "async (id) => (await window.__app.graphToPrompt()).output[String(id)].inputs.focus_point", picker_id)
        page.wait_for_timeout(500)
        page.screenshot(path=os.path.join(out_dir, "after_rerun.png"))
        browser.close()
    emit(result)


if __name__ == "__main__":
    main(*sys.argv[1:7])
