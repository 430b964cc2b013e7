// Drives web/js/focus_picker.js with a minimal fake DOM and a fake ComfyUI `app`/`api`:
// node created -> DOM widget added; ui output -> <img> src; click on the <img> -> focus_point widget value.
// Run: node tests/web/test_focus_picker_wiring.mjs   (no browser, no npm packages)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const webDir = join(here, "..", "..", "web", "js");
const dataUrl = (src) => "data:text/javascript;charset=utf-8," + encodeURIComponent(src);

// ---- fake DOM ------------------------------------------------------------------------------------------
class FakeElement {
  constructor(tag) {
    this.tagName = tag.toUpperCase();
    this.children = [];
    this.listeners = {};
    this.dataset = {};
    this.style = {};
    this.attributes = {};
    this.className = "";
    this.textContent = "";
    this.rect = { left: 0, top: 0, width: 0, height: 0 };
    this.clientWidth = 0;
    this.clientHeight = 0;
    this.naturalWidth = 0;
    this.naturalHeight = 0;
  }
  append(...els) { this.children.push(...els); }
  appendChild(el) { this.children.push(el); return el; }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  dispatch(type, event) { for (const fn of this.listeners[type] ?? []) fn(event); }
  getBoundingClientRect() { return { ...this.rect }; }
  getAttribute(name) { return this.attributes[name] ?? null; }
  set src(v) { this.attributes.src = v; }
  get src() { return this.attributes.src ?? ""; }
}
globalThis.document = {
  head: new FakeElement("head"),
  createElement: (tag) => new FakeElement(tag),
  getElementById: () => null,
};

// ---- fake ComfyUI ---------------------------------------------------------------------------------------
const registered = [];
const settings = { "Comfy.VueNodes.Enabled": false };
const wheels = [];
globalThis.__fakeApp = {
  registerExtension: (ext) => registered.push(ext),
  canvas: { processMouseWheel: (e) => wheels.push(e) },
  graph: { setDirtyCanvas() {} },
  extensionManager: { setting: { get: (id) => settings[id] } },
};
globalThis.__fakeApi = { apiURL: (route) => "/api" + route };
const appModule = dataUrl("export const app = globalThis.__fakeApp;");
const apiModule = dataUrl("export const api = globalThis.__fakeApi;");
const mathModule = dataUrl(readFileSync(join(webDir, "focus_math.js"), "utf8"));
const pickerSource = readFileSync(join(webDir, "focus_picker.js"), "utf8")
  .replace('"../../scripts/app.js"', JSON.stringify(appModule))
  .replace('"../../scripts/api.js"', JSON.stringify(apiModule))
  .replace('"./focus_math.js"', JSON.stringify(mathModule));
const picker = await import(dataUrl(pickerSource));

class FakeNode {
  constructor() {
    this.id = 7;
    this.size = [200, 100];
    this.changed = [];
    this.widgets = [{ name: "focus_point", value: '{"x": 0.5, "y": 0.5}', callback: (v) => this.changed.push(v) }];
  }
  addDOMWidget(name, type, element, options) {
    const w = { name, type, element, options };
    this.widgets.push(w);
    return w;
  }
  computeSize() { return [200, 300]; }
  setSize(s) { this.size = s; }
  setDirtyCanvas() {}
}

test("the extension registers under its name and patches only the FocusPicker", async () => {
  assert.equal(registered.length, 1);
  assert.equal(registered[0].name, "diffcamera.FocusPicker");
  class Other {}
  await registered[0].beforeRegisterNodeDef(Other, { name: "SomethingElse" });
  assert.equal(Other.prototype.onNodeCreated, undefined);
});

test("click on the preview writes the point into the focus_point widget", async () => {
  class NodeType extends FakeNode {}
  await registered[0].beforeRegisterNodeDef(NodeType, { name: "DiffCamera_FocusPicker" });
  const node = new NodeType();
  node.onNodeCreated();
  const dom = node.widgets.find((w) => w.name === "focus_preview");
  assert.ok(dom, "a DOM widget named focus_preview is added");
  assert.equal(dom.options.serialize, false);
  assert.equal(dom.element.className, "diffcamera-focus-picker");
  const [img, marker] = dom.element.children;
  assert.equal(img.className, "diffcamera-focus-image");
  assert.equal(dom.element.dataset.diffcameraNode, "7");
  assert.ok(node.size[1] >= 300);

  // a run: the node's ui output arrives
  node.onExecuted({ diffcamera_preview: [{ filename: "p.png", subfolder: "", type: "temp" }],
    diffcamera_focus: [{ x: 0.5, y: 0.5, disparity: 0.8, method: "point" }] });
  assert.equal(img.src, "/api/view?filename=p.png&subfolder=&type=temp");

  // the image (200x100) loads into a 200x200 box on screen at (50, 60): drawn at y = 50..150
  img.naturalWidth = 200; img.naturalHeight = 100;
  img.clientWidth = 200; img.clientHeight = 200;
  img.rect = { left: 50, top: 60, width: 200, height: 200 };
  img.dispatch("load", {});
  assert.equal(marker.style.display, "block");
  assert.equal(marker.style.left, "100px");
  assert.equal(marker.style.top, "100px");

  let prevented = false;
  img.dispatch("pointerdown", { button: 0, clientX: 50 + 50, clientY: 60 + 50 + 75,
    preventDefault() { prevented = true; }, stopPropagation() {} });
  const widget = node.widgets[0];
  assert.equal(widget.value, '{"x": 0.25, "y": 0.75}');
  assert.deepEqual(node.changed, ['{"x": 0.25, "y": 0.75}']);   // the widget callback ran
  assert.ok(prevented);
  assert.equal(dom.element.dataset.point, '{"x": 0.25, "y": 0.75}');
  assert.equal(marker.style.left, "50px");
  assert.equal(marker.style.top, "125px");

  // clicks in the letterbox bar or with another button change nothing
  img.dispatch("pointerdown", { button: 0, clientX: 150, clientY: 65, preventDefault() {}, stopPropagation() {} });
  img.dispatch("pointerdown", { button: 2, clientX: 150, clientY: 160, preventDefault() {}, stopPropagation() {} });
  assert.equal(widget.value, '{"x": 0.25, "y": 0.75}');

  // the automation hook does the same as a click
  node.diffcameraFocus.setPoint(0.1, 0.2);
  assert.equal(widget.value, '{"x": 0.1, "y": 0.2}');
});

test("the preview comes only from the node's own ui key; a stock `images` output is not shown", async () => {
  assert.equal(picker.PREVIEW_UI_KEY, "diffcamera_preview");
  assert.equal(picker.FOCUS_UI_KEY, "diffcamera_focus");
  class NodeType extends FakeNode {}
  await registered[0].beforeRegisterNodeDef(NodeType, { name: "DiffCamera_FocusPicker" });
  const node = new NodeType();
  node.onNodeCreated();
  const img = node.widgets.find((w) => w.name === "focus_preview").element.children[0];
  node.onExecuted({ images: [{ filename: "stock.png", subfolder: "", type: "temp" }] });
  assert.equal(img.src, "");
  assert.equal(NodeType.prototype.onDrawBackground, undefined, "no canvas drawing hook");
});

test("pointer events on the picker stop there; the wheel zooms the canvas in classic mode only", async () => {
  class NodeType extends FakeNode {}
  await registered[0].beforeRegisterNodeDef(NodeType, { name: "DiffCamera_FocusPicker" });
  const node = new NodeType();
  node.onNodeCreated();
  const root = node.widgets.find((w) => w.name === "focus_preview").element;
  for (const type of ["pointerdown", "pointermove", "pointerup"]) {
    let stopped = false;
    root.dispatch(type, { button: 0, buttons: 1, stopPropagation() { stopped = true; } });
    assert.ok(stopped, `${type} (left button) must not reach the node or the canvas`);
    stopped = false;
    root.dispatch(type, { button: 1, buttons: 4, stopPropagation() { stopped = true; } });
    assert.ok(!stopped, `${type} (middle button) still pans the canvas`);
  }
  wheels.length = 0;
  let prevented = false;
  root.dispatch("wheel", { preventDefault() { prevented = true; } });
  assert.equal(wheels.length, 1);
  assert.ok(prevented);
  settings["Comfy.VueNodes.Enabled"] = true;   // Vue nodes forward the wheel themselves
  root.dispatch("wheel", { preventDefault() {} });
  assert.equal(wheels.length, 1);
  settings["Comfy.VueNodes.Enabled"] = false;
});

test("a loaded workflow's point is shown (onConfigure)", async () => {
  class NodeType extends FakeNode {}
  await registered[0].beforeRegisterNodeDef(NodeType, { name: "DiffCamera_FocusPicker" });
  const node = new NodeType();
  node.onNodeCreated();
  const root = node.widgets.find((w) => w.name === "focus_preview").element;
  node.widgets[0].value = '{"x": 0.9, "y": 0.1}';   // what configure() does with widgets_values
  node.onConfigure({});
  assert.equal(root.dataset.point, '{"x": 0.9, "y": 0.1}');
});
