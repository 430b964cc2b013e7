/**
 * DiffCamera FocusPicker: click the node's preview to set the focus point.
 *
 * The focus lives in the node's plain STRING widget `focus_point` (`{"x": 0.5, "y": 0.5}`, normalised,
 * x right / y down, 0..1), so workflows and the API work without this file; this extension only writes
 * that widget. It uses only the front end's extension API (`app.registerExtension`, `node.addDOMWidget`,
 * `node.onExecuted`, `api.apiURL`, `app.extensionManager.setting`), imported from scripts/app.js and
 * scripts/api.js, and works the same in both render modes of the front end (the classic LiteGraph canvas,
 * front end 1.2x+, and "Nodes 2.0" Vue nodes, front end 1.4x+, setting `Comfy.VueNodes.Enabled`).
 *
 * DOM it creates (one per DiffCamera_FocusPicker node, as a DOM widget named "focus_preview"):
 *
 *   <div class="diffcamera-focus-picker" data-diffcamera-node="<node id>" data-point='{"x": .., "y": ..}'>
 *     <img class="diffcamera-focus-image" draggable="false">   last preview (object-fit: contain)
 *     <div class="diffcamera-focus-marker"></div>             ring at the widget's current point
 *     <div class="diffcamera-focus-info"></div>               point / focus disparity / hint text
 *   </div>
 *
 * One preview only: the Python node returns its preview under its own ui key `diffcamera_preview` (a list
 * of `{filename, subfolder, type}` like `ui.images`), not `images`, so neither render mode draws the stock
 * output preview next to this one; the <img> shows the first entry through ComfyUI's /view route.
 *
 * Click -> widget value: a left-button pointerdown on the <img> at client (clientX, clientY) is mapped to
 *   x = (clientX - rect.left - d.x) / d.width,  y = (clientY - rect.top - d.y) / d.height
 * where rect = img.getBoundingClientRect() and d = containRect(rect.width, rect.height, naturalWidth,
 * naturalHeight) is the rectangle the image is drawn in (object-fit: contain; focus_math.js). Clicks in the
 * letterbox bars, or before any preview exists, do nothing. The widget gets formatPoint(x, y) (4 decimals,
 * e.g. `{"x": 0.25, "y": 0.5}`), its callback runs, the marker moves at once, and the canvas is marked dirty;
 * the new focus disparity appears after the next run (queue the prompt again). A click sets one point for
 * every image of a batch; per-image points are typed as a JSON list.
 * Pointer events on the picker never reach the canvas or the node (a drag on the preview does not move the
 * node); the mouse wheel still zooms the canvas (forwarded in classic mode; Vue nodes forward it themselves).
 * For automation, `node.diffcameraFocus.setPoint(x, y)` does the same as a click at that normalised point.
 */
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { clientToPoint, formatPoint, parsePoint, pointToBox, viewQuery } from "./focus_math.js";

const NODE_CLASS = "DiffCamera_FocusPicker";
const POINT_WIDGET = "focus_point";
const PREVIEW_WIDGET = "focus_preview";
/** The node's ui key for its preview images (nodes/focus.py PREVIEW_UI_KEY). */
export const PREVIEW_UI_KEY = "diffcamera_preview";
/** The node's ui key for the focus it picked (nodes/focus.py FOCUS_UI_KEY). */
export const FOCUS_UI_KEY = "diffcamera_focus";
const VUE_NODES_SETTING = "Comfy.VueNodes.Enabled";
const MIN_HEIGHT = 220;

const STYLE = `
.diffcamera-focus-picker { position: relative; width: 100%; height: 100%; min-height: ${MIN_HEIGHT - 20}px;
  box-sizing: border-box; overflow: hidden; pointer-events: auto; background: rgba(0,0,0,0.25);
  border-radius: 4px; }
.diffcamera-focus-image { position: absolute; inset: 0 0 18px 0; width: 100%; height: calc(100% - 18px);
  object-fit: contain; cursor: crosshair; user-select: none; -webkit-user-drag: none; }
.diffcamera-focus-marker { position: absolute; width: 14px; height: 14px; margin: -9px 0 0 -9px;
  border: 2px solid #fff; border-radius: 50%; box-shadow: 0 0 0 1px #000, inset 0 0 0 1px #000;
  pointer-events: none; display: none; }
.diffcamera-focus-info { position: absolute; left: 4px; right: 4px; bottom: 0; height: 18px; line-height: 18px;
  font: 11px sans-serif; color: var(--descrip-text, #aaa); white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; pointer-events: none; }
`;

function installStyle() {
  if (document.getElementById("diffcamera-focus-picker-style")) return;
  const style = document.createElement("style");
  style.id = "diffcamera-focus-picker-style";
  style.textContent = STYLE;
  document.head.appendChild(style);
}

function pointWidget(node) {
  return node.widgets?.find((w) => w.name === POINT_WIDGET);
}

/** Whether the front end draws nodes as Vue components ("Nodes 2.0"); false on front ends without it. */
function vueNodes() {
  try {
    return Boolean(app.extensionManager?.setting?.get?.(VUE_NODES_SETTING));
  } catch (e) {
    return false;
  }
}

class FocusPreview {
  constructor(node) {
    this.node = node;
    this.lastText = null;
    this.focusInfo = null;
    this.root = document.createElement("div");
    this.root.className = "diffcamera-focus-picker";
    this.img = document.createElement("img");
    this.img.className = "diffcamera-focus-image";
    this.img.draggable = false;
    this.img.alt = "";
    this.marker = document.createElement("div");
    this.marker.className = "diffcamera-focus-marker";
    this.info = document.createElement("div");
    this.info.className = "diffcamera-focus-info";
    this.root.append(this.img, this.marker, this.info);
    this.img.addEventListener("load", () => this.update(true));
    this.img.addEventListener("pointerdown", (e) => this.onPointerDown(e));
    this.img.addEventListener("dragstart", (e) => e.preventDefault());
    this.root.addEventListener("pointerenter", () => this.update(false));  // e.g. a value typed meanwhile
    // the picker is a control, not a handle: no press, drag or release on it reaches the node or the canvas
    for (const type of ["pointerdown", "pointermove", "pointerup"]) {
      this.root.addEventListener(type, (e) => {
        if (e.button !== 1 && !(e.buttons & 4)) e.stopPropagation();  // the middle button still pans
      });
    }
    this.root.addEventListener("wheel", (e) => {
      // keep zooming the canvas when the wheel is over the preview (Vue nodes forward it themselves)
      if (!vueNodes() && app.canvas?.processMouseWheel) {
        e.preventDefault();
        app.canvas.processMouseWheel(e);
      }
    }, { passive: false });
    if (typeof ResizeObserver !== "undefined") {
      this.resizeObserver = new ResizeObserver(() => this.update(true));
      this.resizeObserver.observe(this.root);
    }
    this.update(true);
  }

  setNodeId() {
    this.root.dataset.diffcameraNode = String(this.node.id);
  }

  /** Show `url` (a /view URL) in the <img>, if it differs from the current one. */
  setImageUrl(url) {
    if (url && this.img.getAttribute("src") !== url) this.img.src = url;
  }

  onPointerDown(e) {
    if (e.button !== 0) return;
    const p = clientToPoint(e.clientX, e.clientY, this.img.getBoundingClientRect(),
      this.img.naturalWidth, this.img.naturalHeight);
    if (!p) return;
    e.preventDefault();
    e.stopPropagation();
    this.setPoint(p.x, p.y);
  }

  /** Write a normalised point into the widget, as a click would. */
  setPoint(x, y) {
    const widget = pointWidget(this.node);
    if (!widget) return;
    const text = formatPoint(x, y);
    widget.value = text;
    widget.callback?.(text, app.canvas, this.node);
    this.node.onWidgetChanged?.(POINT_WIDGET, text, null, widget);
    this.focusInfo = null;  // stale until the next run
    this.update(true);
    this.node.setDirtyCanvas?.(true, true);
    app.graph?.setDirtyCanvas?.(true, true);
  }

  /** Move the marker and refresh the text when the widget value or the layout changed. */
  update(force = false) {
    const widget = pointWidget(this.node);
    const text = widget ? String(widget.value ?? "") : "";
    if (!force && text === this.lastText) return;
    this.lastText = text;
    this.setNodeId();
    this.root.dataset.point = text;
    const point = parsePoint(text);
    const hasImage = this.img.naturalWidth > 0 && this.img.naturalHeight > 0;
    if (point && hasImage) {
      // element-local CSS pixels (unaffected by the canvas zoom transform, which scales the marker too)
      const pos = pointToBox(point, this.img.clientWidth, this.img.clientHeight,
        this.img.naturalWidth, this.img.naturalHeight);
      this.marker.style.left = `${(this.img.offsetLeft || 0) + pos.left}px`;
      this.marker.style.top = `${(this.img.offsetTop || 0) + pos.top}px`;
      this.marker.style.display = "block";
    } else {
      this.marker.style.display = "none";
    }
    if (!hasImage) {
      this.info.textContent = "Run the workflow, then click the preview to focus.";
    } else if (!point) {
      this.info.textContent = `${POINT_WIDGET} is not a valid point; click to reset it.`;
    } else {
      const f = this.focusInfo;
      const df = f ? `  ·  focus disparity ${Number(f.disparity).toFixed(3)} (${f.method})` : "  ·  queue to apply";
      this.info.textContent = `x ${point.x.toFixed(3)}  y ${point.y.toFixed(3)}${df}`;
    }
  }

  /** Called with the node's `ui` output after a run. */
  onExecuted(message) {
    const image = message?.[PREVIEW_UI_KEY]?.[0];
    if (image?.filename) this.setImageUrl(api.apiURL(viewQuery(image)));
    const info = message?.[FOCUS_UI_KEY]?.[0];
    this.focusInfo = info ?? null;
    this.update(true);
  }

  destroy() {
    this.resizeObserver?.disconnect();
  }
}

function attach(node) {
  if (node.diffcameraFocus) return node.diffcameraFocus;
  installStyle();
  const preview = new FocusPreview(node);
  const widget = node.addDOMWidget(PREVIEW_WIDGET, "diffcamera_focus_preview", preview.root, {
    serialize: false,
    hideOnZoom: false,
    getValue: () => "",
    setValue: () => {},
    getMinHeight: () => MIN_HEIGHT,
  });
  widget.serialize = false;
  node.diffcameraFocus = preview;
  const pw = pointWidget(node);
  if (pw) {
    const original = pw.callback;
    pw.callback = function (...args) {
      const r = original?.apply(this, args);
      preview.update(true);
      return r;
    };
  }
  const size = node.computeSize?.();
  if (size) node.setSize?.([Math.max(node.size[0], 300), Math.max(node.size[1], size[1])]);
  return preview;
}

app.registerExtension({
  name: "diffcamera.FocusPicker",

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData?.name !== NODE_CLASS) return;

    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const r = onNodeCreated?.apply(this, args);
      attach(this);
      return r;
    };

    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message, ...rest) {
      const r = onExecuted?.apply(this, [message, ...rest]);
      attach(this).onExecuted(message);
      return r;
    };

    // a loaded or pasted workflow sets the widget values after the node was created: show its point
    const onConfigure = nodeType.prototype.onConfigure;
    nodeType.prototype.onConfigure = function (...args) {
      const r = onConfigure?.apply(this, args);
      attach(this).update(true);
      return r;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function (...args) {
      this.diffcameraFocus?.destroy();
      return onRemoved?.apply(this, args);
    };
  },
});
