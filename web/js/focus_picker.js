/**
 * DiffCamera FocusPicker: click the node's preview to set the focus point.
 *
 * The focus lives in the node's plain STRING widget `focus_point` (`{"x": 0.5, "y": 0.5}`, normalised,
 * x right / y down, 0..1), so workflows and the API work without this file; this extension only writes
 * that widget.
 *
 * DOM it creates (one per DiffCamera_FocusPicker node, as a DOM widget named "focus_preview"):
 *
 *   <div class="diffcamera-focus-picker" data-node-id="<node id>" data-point='{"x": .., "y": ..}'>
 *     <img class="diffcamera-focus-image" draggable="false">   last preview (object-fit: contain)
 *     <div class="diffcamera-focus-marker"></div>             ring at the widget's current point
 *     <div class="diffcamera-focus-info"></div>               point / focus disparity / hint text
 *   </div>
 *
 * The <img> shows the first image of the preview the Python node returns (`ui.images`, through ComfyUI's
 * /view route); the node's own canvas image preview is suppressed so the image is not shown twice.
 *
 * Click -> widget value: a left-button pointerdown on the <img> at client (clientX, clientY) is mapped to
 *   x = (clientX - rect.left - d.x) / d.width,  y = (clientY - rect.top - d.y) / d.height
 * where rect = img.getBoundingClientRect() and d = containRect(rect.width, rect.height, naturalWidth,
 * naturalHeight) is the rectangle the image is drawn in (object-fit: contain; focus_math.js). Clicks in the
 * letterbox bars, or before any preview exists, do nothing. The widget gets formatPoint(x, y) (4 decimals,
 * e.g. `{"x": 0.25, "y": 0.5}`), its callback runs, the marker moves at once, and the canvas is marked dirty;
 * the new focus disparity appears after the next run (queue the prompt again). A click sets one point for
 * every image of a batch; per-image points are typed as a JSON list.
 * For automation, `node.diffcameraFocus.setPoint(x, y)` does the same as a click at that normalised point.
 */
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { clientToPoint, formatPoint, parsePoint, pointToBox, viewQuery } from "./focus_math.js";

const NODE_CLASS = "DiffCamera_FocusPicker";
const POINT_WIDGET = "focus_point";
const PREVIEW_WIDGET = "focus_preview";
const CANVAS_PREVIEW_WIDGET = "$$canvas-image-preview";
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

function removeCanvasPreview(node) {
  const i = node.widgets?.findIndex((w) => w.name === CANVAS_PREVIEW_WIDGET) ?? -1;
  if (i >= 0) {
    node.widgets[i].onRemove?.();
    node.widgets.splice(i, 1);
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
    this.root.addEventListener("wheel", (e) => {
      // keep zooming the canvas when the wheel is over the preview
      if (app.canvas?.processMouseWheel) {
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
    this.root.dataset.nodeId = String(this.node.id);
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
    const image = message?.images?.[0];
    if (image?.filename) this.setImageUrl(api.apiURL(viewQuery(image)));
    const info = message?.diffcamera_focus?.[0];
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

    // ComfyUI's draw handler turns `ui.images` into `this.imgs` and a canvas preview widget; take the
    // loaded image for our element (this also restores it after a reload) and drop the canvas copy.
    const onDrawBackground = nodeType.prototype.onDrawBackground;
    nodeType.prototype.onDrawBackground = function (...args) {
      const r = onDrawBackground?.apply(this, args);
      const preview = this.diffcameraFocus;
      if (preview) {
        if (this.imgs?.length) {
          preview.setImageUrl(this.imgs[0].src);
          this.imgs = undefined;
        }
        removeCanvasPreview(this);
        preview.update(false);
      }
      return r;
    };

    const onRemoved = nodeType.prototype.onRemoved;
    nodeType.prototype.onRemoved = function (...args) {
      this.diffcameraFocus?.destroy();
      return onRemoved?.apply(this, args);
    };
  },
});
