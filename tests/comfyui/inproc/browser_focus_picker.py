"""Drive ComfyUI's real front end in headless Chromium (Playwright for Python, system Chromium).

Usage: ``python browser_focus_picker.py URL CHROMIUM OUT_DIR UI_WORKFLOW_DIR PICKER_WORKFLOW MODE``
(MODE: ``classic`` = the LiteGraph canvas, ``vue`` = "Nodes 2.0", front end setting ``Comfy.VueNodes.Enabled``;
the setting is written through the server's ``/settings`` route before the page loads).

1. Every UI workflow in ``UI_WORKFLOW_DIR`` whose nodes the server has is loaded into the front end
   (``app.loadGraphData``) and converted back with the front end's own ``app.graphToPrompt()``; the prompts are
   reported so the test compares them with the API copies (our converter's widget order against the real front
   end's); workflows needing nodes the server lacks (core nodes newer than it) are reported with those nodes.
2. ``PICKER_WORKFLOW`` (a UI workflow with one DiffCamera_FocusPicker and a stock PreviewImage) is loaded and
   queued. Once the picker's preview <img> (DOM documented in ``web/js/focus_picker.js``) shows the result,
   the script reports how many previews each node shows (the stock PreviewImage is the control that the count
   sees a stock preview), drags on the picker and on its letterbox bar (the node must stay where it is) and on
   the node's title (the control: that drag moves it), clicks the letterbox bar (no change) and then the image
   at a normalised point with real mouse events, saves the workflow (``app.graph.serialize()``, what Save
   writes), loads another workflow and the saved one back, then reloads the page (the front end restores the
   open workflow), reads the ``focus_point`` widget each time, queues again and reports the
   ``diffcamera_focus`` the node returned in both runs. Screenshots: ``<MODE>_1_first_run.png``,
   ``<MODE>_2_clicked.png``, ``<MODE>_3_rerun.png`` in OUT_DIR.

Only the loopback URL is opened; Chromium runs with networking features off and a fresh profile.
"""
from __future__ import annotations

import json
import os
import sys
import time
import urllib.request

from bootstrap import emit

CLICK = (0.25, 0.75)  # normalised x (right), y (down) of the click
DRAG_FROM = (0.6, 0.4)  # a drag that starts on the picker image
VUE_SETTING = "Comfy.VueNodes.Enabled"


def _post_setting(url: str, key: str, value) -> None:
    req = urllib.request.Request(f"{url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback only
        assert resp.status == 200, resp.status


WAIT_APP = """() => {
    const app = window.app ?? window.comfyAPI?.app?.app;
    const types = (window.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph)?.registered_node_types;
    return !!(app?.graph && app.extensions?.some(e => String(e.name).toLowerCase().includes('diffcamera'))
              && types && types['DiffCamera_FocusPicker'] && types['LoadImage'] && document.querySelector('canvas'));
}"""


def main(url, chromium, out_dir, ui_dir, picker_name, mode):
    from playwright.sync_api import sync_playwright

    assert url.startswith("http://127.0.0.1:")
    assert mode in ("classic", "vue"), mode
    _post_setting(url, VUE_SETTING, mode == "vue")
    _post_setting(url, "Comfy.TutorialCompleted", True)
    result = {"console": [], "conversions": {}, "mode": mode, "screenshots": []}
    with open(os.path.join(ui_dir, picker_name), encoding="utf-8") as f:
        picker_wf = json.load(f)
    picker_id = next(n["id"] for n in picker_wf["nodes"] if n["type"] == "DiffCamera_FocusPicker")
    stock_id = next(n["id"] for n in picker_wf["nodes"] if n["type"] == "PreviewImage")
    picker_sel = f".diffcamera-focus-picker[data-diffcamera-node='{picker_id}']"
    img_sel = f"{picker_sel} img.diffcamera-focus-image"

    with sync_playwright() as pw:
        # Playwright gives every launch a fresh temporary profile (its own --user-data-dir)
        browser = pw.chromium.launch(
            executable_path=chromium, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: result["console"].append(f"{m.type}: {m.text}"[:500]))

        def shot(name):
            path = os.path.join(out_dir, f"{mode}_{name}.png")
            page.screenshot(path=path)
            result["screenshots"].append(path)

        def open_app():
            page.wait_for_function(WAIT_APP, timeout=180_000)
            page.evaluate("() => { window.__app = window.app ?? window.comfyAPI.app.app; }")
            page.wait_for_timeout(800)

        page.goto(url, wait_until="domcontentloaded", timeout=120_000)
        open_app()
        result["extensions"] = page.evaluate(
            "() => window.__app.extensions.map(e => e.name).filter(n => n.toLowerCase().includes('diffcamera'))")
        result["vue_setting"] = page.evaluate(
            f"() => window.__app.extensionManager?.setting?.get?.('{VUE_SETTING}') ?? null")

        # 1. the front end's own UI -> API conversion of every UI workflow whose nodes this server has
        known = set(page.evaluate("() => Object.keys((window.LiteGraph ?? window.comfyAPI.litegraph.LiteGraph)"
                                  ".registered_node_types)"))
        result["not_converted"] = {}
        for fname in sorted(os.listdir(ui_dir)):
            if not fname.endswith(".json"):
                continue
            with open(os.path.join(ui_dir, fname), encoding="utf-8") as f:
                wf = json.load(f)
            missing = sorted({n["type"] for n in wf["nodes"]} - known - {"Note", "MarkdownNote"})
            if missing:
                result["not_converted"][fname] = missing
                continue
            page.evaluate("async (wf) => { await window.__app.loadGraphData(wf); }", wf)
            result["conversions"][fname] = page.evaluate("async () => (await window.__app.graphToPrompt()).output")

        # 2. the picker workflow
        page.evaluate("async (wf) => { await window.__app.loadGraphData(wf); }", picker_wf)

        def queue():
            return page.evaluate(
                """async () => {
                    const p = await window.__app.graphToPrompt();
                    const r = await window.comfyAPI.api.api.queuePrompt(0, p);
                    return r.prompt_id;
                }""")

        def wait_history(prompt_id, timeout=300):
            deadline = time.time() + timeout
            while time.time() < deadline:
                hist = page.evaluate("async (id) => (await (await fetch('/history/' + id)).json())", prompt_id)
                entry = hist.get(prompt_id)
                if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                    return entry
                time.sleep(0.3)
            raise TimeoutError(prompt_id)

        def widget_value():
            return page.evaluate(
                "(id) => window.__app.graph.getNodeById(id).widgets.find(w => w.name === 'focus_point').value",
                picker_id)

        def view_picker():
            """Canvas at scale 1 with the picker's top-left at (100, 120) of the canvas element."""
            page.keyboard.press("Escape")
            page.evaluate("""(id) => {
                const app = window.__app, node = app.graph.getNodeById(id), ds = app.canvas.ds;
                ds.scale = 1.0; ds.offset[0] = -node.pos[0] + 100; ds.offset[1] = -node.pos[1] + 120;
                app.canvas.setDirty(true, true); app.canvas.draw?.(true, true);
            }""", picker_id)
            page.wait_for_timeout(1000)

        def picker_box():
            return page.evaluate(f"""() => {{
                const i = document.querySelector("{img_sel}"); const r = i.getBoundingClientRect();
                return {{left: r.left, top: r.top, width: r.width, height: r.height,
                         nw: i.naturalWidth, nh: i.naturalHeight}};
            }}""")

        def at(box, u, v):
            """Client coordinates of the normalised image point (u, v) (object-fit: contain)."""
            scale = min(box["width"] / box["nw"], box["height"] / box["nh"])
            dw, dh = box["nw"] * scale, box["nh"] * scale
            return box["left"] + (box["width"] - dw) / 2 + u * dw, box["top"] + (box["height"] - dh) / 2 + v * dh

        def node_pos():
            return page.evaluate("(id) => Array.from(window.__app.graph.getNodeById(id).pos)", picker_id)

        def drag(x0, y0, dx, dy):
            page.mouse.move(x0, y0)
            page.mouse.down()
            for k in range(1, 9):
                page.mouse.move(x0 + dx * k / 8, y0 + dy * k / 8)
                page.wait_for_timeout(30)
            page.mouse.up()
            page.wait_for_timeout(400)

        def previews():
            """How many image previews each node shows: ours (picker elements with a loaded image) and stock
            ones (Vue: <img> in the node's element outside our picker; canvas: node.imgs / preview widgets)."""
            return page.evaluate("""([pid, sid]) => {
                const app = window.__app, count = {};
                for (const [role, id] of [['picker', pid], ['stock', sid]]) {
                    const node = app.graph.getNodeById(id);
                    const el = document.querySelector(`[data-node-id="${id}"]`);
                    const vueImgs = el ? Array.from(el.querySelectorAll('img')).filter(
                        i => !i.closest('.diffcamera-focus-picker') && i.getBoundingClientRect().width > 0).length : 0;
                    const canvasImgs = (node.imgs?.length ?? 0) > 0 ? 1 : 0;
                    const previewWidgets = (node.widgets ?? []).filter(w => String(w.name).startsWith('$$')).length;
                    const ours = Array.from(document.querySelectorAll(`.diffcamera-focus-picker[data-diffcamera-node="${id}"]`));
                    count[role] = {vue_stock_imgs: vueImgs, canvas_imgs: canvasImgs, preview_widgets: previewWidgets,
                                 vue_node_element: !!el, ours: ours.length,
                                 ours_loaded: ours.filter(p => p.querySelector('img')?.naturalWidth > 0).length};
                }
                return count;
            }""", [picker_id, stock_id])

        def widen_picker():
            """Make the node wide, so the 3:2 preview is pillarboxed (bars left and right) in either mode."""
            page.evaluate("""([id, sid]) => {
                const node = window.__app.graph.getNodeById(id), stock = window.__app.graph.getNodeById(sid);
                node.setSize([620, node.size[1]]);
                stock.pos = [node.pos[0] + 680, node.pos[1]];  // keep the stock preview beside it, not under it
                window.__app.canvas.setDirty(true, true);
            }""", [picker_id, stock_id])
            page.wait_for_timeout(800)

        def bar_point(box):
            """The middle of a letterbox bar of the drawn image (top bar, else left bar) and the bar size."""
            top = at(box, 0.5, 0.0)[1] - box["top"]
            left = at(box, 0.0, 0.5)[0] - box["left"]
            if top >= left:
                return (box["left"] + box["width"] / 2, box["top"] + top / 2), top
            return (box["left"] + left / 2, box["top"] + box["height"] / 2), left

        first = wait_history(queue())
        result["first_status"] = first["status"]["status_str"]
        result["first_focus"] = first["outputs"].get(str(picker_id), {}).get("diffcamera_focus")
        result["first_output_keys"] = sorted(first["outputs"].get(str(picker_id), {}))
        page.wait_for_function(
            f"() => {{ const i = document.querySelector(\"{img_sel}\"); return i && i.complete && i.naturalWidth > 0; }}",
            timeout=60_000)
        widen_picker()
        view_picker()
        result["previews"] = previews()
        shot("1_first_run")

        # the control: a drag on the node's title moves the node (so the checks below can fail)
        pos0 = node_pos()
        title = page.evaluate("""(id) => {
            const app = window.__app, node = app.graph.getNodeById(id);
            const el = document.querySelector(`[data-node-id="${id}"]`);
            if (el) { const r = el.getBoundingClientRect(); return [r.left + r.width / 2, r.top + 12]; }
            const rect = app.canvas.canvas.getBoundingClientRect();
            const th = (window.LiteGraph ?? window.comfyAPI.litegraph.LiteGraph).NODE_TITLE_HEIGHT;
            const p = app.canvas.ds.convertOffsetToCanvas([node.pos[0] + node.size[0] / 2, node.pos[1] - th / 2]);
            return [rect.left + p[0], rect.top + p[1]];
        }""", picker_id)
        drag(title[0], title[1], 60, 40)
        result["title_drag_moved"] = [b - a for a, b in zip(pos0, node_pos())]
        view_picker()

        # drags on the picker leave the node where it is
        box = picker_box()
        result["box"] = box
        pos1 = node_pos()
        x, y = at(box, *DRAG_FROM)
        drag(x, y, 120, 60)
        result["image_drag_moved"] = [b - a for a, b in zip(pos1, node_pos())]
        result["value_after_image_drag"] = widget_value()
        (bar_x, bar_y), result["letterbox_bar_px"] = bar_point(box)
        drag(bar_x, bar_y, -90, 50)
        result["bar_drag_moved"] = [b - a for a, b in zip(pos1, node_pos())]

        # a click in the letterbox bar changes nothing; a click on the image sets the point
        view_picker()
        box = picker_box()
        before_bar = widget_value()
        (bar_x, bar_y), _ = bar_point(box)
        page.mouse.click(bar_x, bar_y)
        page.wait_for_timeout(300)
        result["bar_click_changed"] = widget_value() != before_bar
        cx, cy = at(box, *CLICK)
        result["top_element"] = page.evaluate(
            "([x, y]) => { const e = document.elementFromPoint(x, y); return e ? e.className : null; }", [cx, cy])
        page.mouse.click(cx, cy)
        page.wait_for_timeout(400)
        result["widget_value"] = widget_value()
        result["marker_point"] = page.evaluate(f"() => document.querySelector(\"{picker_sel}\").dataset.point")
        shot("2_clicked")

        # save / load another workflow / load the saved one; then reload the page
        saved = page.evaluate("() => JSON.stringify(window.__app.graph.serialize())")
        with open(os.path.join(ui_dir, "depth_estimate.json"), encoding="utf-8") as f:
            other = json.load(f)
        page.evaluate("async (wf) => { await window.__app.loadGraphData(wf); }", other)
        page.evaluate("async (wf) => { await window.__app.loadGraphData(JSON.parse(wf)); }", saved)
        page.wait_for_timeout(800)
        result["reloaded_value"] = widget_value()
        result["reloaded_marker_point"] = page.evaluate(
            f"() => document.querySelectorAll(\"{picker_sel}\").length === 1 ? "
            f"document.querySelector(\"{picker_sel}\").dataset.point : 'pickers: ' + "
            f"document.querySelectorAll(\"{picker_sel}\").length")
        page.wait_for_timeout(1500)  # let the front end persist the open workflow
        page.reload(wait_until="domcontentloaded", timeout=120_000)
        open_app()
        page.wait_for_function(f"() => !!window.__app.graph.getNodeById({picker_id})", timeout=60_000)
        result["page_reload_value"] = widget_value()
        result["page_reload_image_loaded"] = page.evaluate(
            f"() => (document.querySelector(\"{img_sel}\")?.naturalWidth ?? 0) > 0")

        second = wait_history(queue())
        result["second_status"] = second["status"]["status_str"]
        result["second_focus"] = second["outputs"].get(str(picker_id), {}).get("diffcamera_focus")
        result["second_prompt_point"] = page.evaluate(
            "async (id) => (await window.__app.graphToPrompt()).output[String(id)].inputs.focus_point", picker_id)
        page.wait_for_function(
            f"() => {{ const i = document.querySelector(\"{img_sel}\"); return i && i.complete && i.naturalWidth > 0; }}",
            timeout=60_000)
        view_picker()
        result["previews_after_rerun"] = previews()
        shot("3_rerun")
        browser.close()
    emit(result)


if __name__ == "__main__":
    main(*sys.argv[1:7])
