// Unit test of the FocusPicker click -> point mapping (web/js/focus_math.js). Run: node tests/web/test_focus_math.mjs
// The module is imported from a data: URL so that no package.json "type": "module" is needed next to it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const source = readFileSync(join(here, "..", "..", "web", "js", "focus_math.js"), "utf8");
const M = await import("data:text/javascript;charset=utf-8," + encodeURIComponent(source));

const close = (a, b, eps = 1e-9) => assert.ok(Math.abs(a - b) <= eps, `${a} != ${b}`);

test("containRect letterboxes a wide image in a tall box and pillarboxes a tall one", () => {
  assert.deepEqual(M.containRect(200, 200, 400, 200), { x: 0, y: 50, width: 200, height: 100 });
  assert.deepEqual(M.containRect(300, 100, 100, 100), { x: 100, y: 0, width: 100, height: 100 });
  assert.deepEqual(M.containRect(0, 100, 10, 10), { x: 0, y: 0, width: 0, height: 0 });
  assert.deepEqual(M.containRect(100, 100, 0, 10), { x: 0, y: 0, width: 0, height: 0 });
});

test("a click maps to the normalised point of the drawn image (not of the element box)", () => {
  const rect = { left: 10, top: 20, width: 200, height: 200 };   // the <img> box on screen
  // 400x200 image drawn at y = 50..150 inside the box
  assert.deepEqual(M.clientToPoint(10 + 100, 20 + 100, rect, 400, 200), { x: 0.5, y: 0.5 });
  assert.deepEqual(M.clientToPoint(10, 20 + 50, rect, 400, 200), { x: 0, y: 0 });
  assert.deepEqual(M.clientToPoint(10 + 200, 20 + 150, rect, 400, 200), { x: 1, y: 1 });
  const p = M.clientToPoint(10 + 50, 20 + 75, rect, 400, 200);
  close(p.x, 0.25);
  close(p.y, 0.25);
  // clicks in the letterbox bars are ignored
  assert.equal(M.clientToPoint(10 + 100, 20 + 10, rect, 400, 200), null);
  assert.equal(M.clientToPoint(10 + 100, 20 + 190, rect, 400, 200), null);
  // no image yet
  assert.equal(M.clientToPoint(50, 50, rect, 0, 0), null);
});

test("the mapping is zoom-invariant and matches Python's pixel convention", () => {
  // the same click on a canvas zoomed 2.5x gives the same point
  const a = M.clientToPoint(40, 30, { left: 0, top: 0, width: 160, height: 90 }, 64, 36);
  const b = M.clientToPoint(100, 75, { left: 0, top: 0, width: 400, height: 225 }, 64, 36);
  close(a.x, b.x);
  close(a.y, b.y);
  // clicking the centre of pixel (col 10, row 3) of a 64x36 image drawn 1:1 lands inside that pixel:
  const c = M.clientToPoint(10.5, 3.5, { left: 0, top: 0, width: 64, height: 36 }, 64, 36);
  assert.equal(Math.floor(c.x * 64), 10);
  assert.equal(Math.floor(c.y * 36), 3);
});

test("pointToBox is the inverse of clientToPoint (marker placement)", () => {
  const rect = { left: 0, top: 0, width: 300, height: 120 };
  for (const [x, y] of [[0, 0], [0.3, 0.7], [1, 1]]) {
    const pos = M.pointToBox({ x, y }, rect.width, rect.height, 50, 40);
    const back = M.clientToPoint(pos.left, pos.top, rect, 50, 40);
    close(back.x, x);
    close(back.y, y);
  }
});

test("formatPoint writes the JSON the Python node parses, 4 decimals, clamped", () => {
  assert.equal(M.formatPoint(0.25, 0.5), '{"x": 0.25, "y": 0.5}');
  assert.equal(M.formatPoint(0.123456, 0.99999), '{"x": 0.1235, "y": 1}');
  assert.equal(M.formatPoint(-0.2, 1.7), '{"x": 0, "y": 1}');
  assert.deepEqual(JSON.parse(M.formatPoint(1 / 3, 2 / 3)), { x: 0.3333, y: 0.6667 });
});

test("parsePoints accepts what the node accepts and rejects the rest", () => {
  assert.deepEqual(M.parsePoint('{"x": 0.5, "y": 0.25}'), { x: 0.5, y: 0.25 });
  assert.deepEqual(M.parsePoint("[0.1, 0.9]"), { x: 0.1, y: 0.9 });
  assert.deepEqual(M.parsePoints('[{"x": 0, "y": 1}, [1, 0]]'), [{ x: 0, y: 1 }, { x: 1, y: 0 }]);
  for (const bad of ['{"x": 0.5', '{"x": 1.5, "y": 0}', '{"x": "a", "y": 0}', "[]", '{"y": 0.5}', "42"]) {
    assert.equal(M.parsePoints(bad), null, bad);
  }
});

test("viewQuery builds ComfyUI's /view URL for a ui.images entry", () => {
  assert.equal(M.viewQuery({ filename: "a b.png", subfolder: "", type: "temp" }),
    "/view?filename=a+b.png&subfolder=&type=temp");
});
