/**
 * Pure geometry and formatting for the FocusPicker front end (no DOM, no ComfyUI imports), so that
 * `node tests/web/test_focus_math.mjs` can test it. Used by focus_picker.js.
 *
 * Coordinates: a focus point is normalised, x right / y down, (0, 0) = top-left corner of the image,
 * (1, 1) = bottom-right corner; pixel column i of a W-wide image covers x in [i/W, (i+1)/W) — the same
 * convention as diffcamera.core.conventions.point_to_pixel in Python.
 */

export const DEFAULT_POINT = Object.freeze({ x: 0.5, y: 0.5 });

/** Decimals written into the widget (the same as the Python `point_json`). */
export const DECIMALS = 4;

/**
 * Where an image of `imageWidth` x `imageHeight` is drawn inside a `boxWidth` x `boxHeight` box with
 * CSS `object-fit: contain` (scaled to fit, aspect kept, centred). Returns box-relative
 * `{x, y, width, height}`; a zero-size rectangle when any size is not positive.
 */
export function containRect(boxWidth, boxHeight, imageWidth, imageHeight) {
  if (!(boxWidth > 0 && boxHeight > 0 && imageWidth > 0 && imageHeight > 0)) {
    return { x: 0, y: 0, width: 0, height: 0 };
  }
  const scale = Math.min(boxWidth / imageWidth, boxHeight / imageHeight);
  const width = imageWidth * scale;
  const height = imageHeight * scale;
  return { x: (boxWidth - width) / 2, y: (boxHeight - height) / 2, width, height };
}

/**
 * A click at client (viewport) coordinates -> normalised focus point, or `null` when the click falls
 * outside the drawn image (in the letterbox bars) or the image has no size yet.
 *
 * @param {number} clientX, clientY   pointer position (e.g. PointerEvent.clientX/Y)
 * @param {{left:number, top:number, width:number, height:number}} elementRect
 *        the <img>'s getBoundingClientRect() (the box the image is contained in)
 * @param {number} imageWidth, imageHeight   the image's natural size (naturalWidth/naturalHeight)
 */
export function clientToPoint(clientX, clientY, elementRect, imageWidth, imageHeight) {
  const r = containRect(elementRect.width, elementRect.height, imageWidth, imageHeight);
  if (r.width <= 0 || r.height <= 0) return null;
  const u = (clientX - elementRect.left - r.x) / r.width;
  const v = (clientY - elementRect.top - r.y) / r.height;
  const eps = 1e-9;
  if (u < -eps || u > 1 + eps || v < -eps || v > 1 + eps) return null;
  return { x: clamp01(u), y: clamp01(v) };
}

/** A normalised point -> box-relative pixel position `{left, top}` (where to draw the marker). */
export function pointToBox(point, boxWidth, boxHeight, imageWidth, imageHeight) {
  const r = containRect(boxWidth, boxHeight, imageWidth, imageHeight);
  return { left: r.x + point.x * r.width, top: r.y + point.y * r.height };
}

export function clamp01(v) {
  return Math.min(1, Math.max(0, v));
}

/** Round to DECIMALS and clamp into 0..1. */
export function roundCoord(v) {
  return Number(clamp01(v).toFixed(DECIMALS));
}

/** The widget text for a point: `{"x": 0.25, "y": 0.5}` (valid JSON, what the Python node parses). */
export function formatPoint(x, y) {
  return `{"x": ${roundCoord(x)}, "y": ${roundCoord(y)}}`;
}

function asPoint(item) {
  let x;
  let y;
  if (Array.isArray(item) && item.length === 2) [x, y] = item;
  else if (item && typeof item === "object") ({ x, y } = item);
  if (typeof x !== "number" || typeof y !== "number") return null;
  if (!Number.isFinite(x) || !Number.isFinite(y) || x < 0 || x > 1 || y < 0 || y > 1) return null;
  return { x, y };
}

/**
 * Parse the widget text like the Python node does: one point `{"x":..,"y":..}` / `[x, y]`, or a list of them
 * (one per image). Returns an array of points, or `null` when the text is not valid.
 */
export function parsePoints(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    return null;
  }
  if (Array.isArray(data) && data.length === 2 && data.every((v) => typeof v === "number")) {
    const p = asPoint(data);
    return p ? [p] : null;
  }
  const items = Array.isArray(data) ? data : [data];
  if (!items.length) return null;
  const points = items.map(asPoint);
  return points.every(Boolean) ? points : null;
}

/** The first point of the widget text, or `null`. */
export function parsePoint(text) {
  const points = parsePoints(text);
  return points ? points[0] : null;
}

/**
 * Query string of ComfyUI's `/view` route for a `{filename, subfolder, type}` entry of a node's `ui.images`.
 */
export function viewQuery(image) {
  const params = new URLSearchParams({
    filename: image.filename ?? "",
    subfolder: image.subfolder ?? "",
    type: image.type ?? "temp",
  });
  return `/view?${params.toString()}`;
}
