"""Simulated refocus training data (``diffcamera simulate``).

Sources are all-in-focus (AIF) images with a disparity map each: files from a folder (depth maps beside
them, or estimated with :func:`diffcamera.core.depth.estimate_disparity` when a depth model is given), or
the procedural scenes of :func:`diffcamera.evaluation.scenes.make_scene` (exact depth). Every source yields
``variants`` *groups*; a group is what one stacking-constraint training sample needs:

===============  ===================  ==============================================================
key              shape / dtype        meaning
===============  ===================  ==============================================================
``aif``          [3,H,W] uint8        the all-in-focus source (sRGB)
``reference``    [3,H,W] uint8        the user's input: the AIF image (probability ``p_aif``) or a
                                      rendering focused at ``ref_focus_disparity`` with ``ref_level``
``target1/2``    [3,H,W] uint8        renderings focused at ``focus_disparity1/2`` with bokeh ``level``
``physics1/2``   [3,H,W] uint8        the weight-free physics refocus of ``reference`` to plane 1/2
                                      (what the DiT is conditioned on and starts from at inference)
``composite``    [3,H,W] uint8        the two-plane (multi-focus) image: each pixel as sharp as in the
                                      sharper of the two targets (see *Composite*)
``mask``         [1,H,W] uint8        1 where plane 1 is the sharper one (``|d−d1| <= |d−d2|``)
``disparity``    [1,H,W] float16      normalised disparity (0..1, near = 1)
``scalars``      [10] float32         see :data:`SCALAR_KEYS`
===============  ===================  ==============================================================

Renderer (``options.renderer``): ``"layered"`` (default) renders with :func:`diffcamera.core.bokeh.render_bokeh`
in ``layered`` mode — occlusion-aware, in linear light, 38.6 dB from thin-lens truth on the project's 64²
refocus cases against 26 dB for the classical renderer (its targets teach a look that is not physical depth of
field); ``"classical"`` (BokehMe-style scatter, as DiffCamera's simulation uses BokehMe) stays for
DiffCamera-compatible data. Focus points are pixels drawn uniformly, so focus disparities follow the image's
own depth distribution; the second plane is redrawn until ``|d2 − d1| >= min_plane_separation`` (up to 32
tries). Levels are drawn uniformly in ``level_range`` (artist units, px per 1024 px of long side;
``K = level_to_K(level, H, W)``). Both planes share one level; the reference has its own focus and level.

Physics references: ``physics_i = refocus_physics(reference, disparity, d_i, K, input_focus_disparity=ref_d,
input_K=ref_K)`` (:mod:`diffcamera.core.physics`; the input's blur is known in simulation), with the solver's
iteration counts ``physics_coarse`` / ``physics_fine`` (defaults ``(4, 8)`` / ``(2, 5)``: a third of the
default solver's iterations at 64², the same median PSNR on the 64² thin-lens cases, 28.19 against
28.21 dB, measured; the full solver made simulation about three times slower).

Composite
---------
``classical``: the same renderer with a remapped disparity ``d' = 0.5 + (d − p(d))/2``, ``p(d)`` the nearer of
the two planes, focus ``0.5`` and ``2K``, which gives exactly ``r = K·min(|d−d1|, |d−d2|)``; the classical
renderer depends on the radius only, so this is the exact two-plane rendering (our construction; the paper
does not publish its composite).

``layered``: no exact two-plane rendering exists with one layered render. The renderer orders its layers by
the signed circle of confusion, and no signed map that is monotonic in depth (what occlusion order needs)
has the magnitude ``K·min(|d−d1|, |d−d2|)``: between the planes it must fall back to 0 at the second
plane while depth keeps increasing. So the composite is the **mask blend** ``M·target1 + (1 − M)·target2``:
every pixel taken from the target in which it is the sharper one. This is an approximation of a two-plane
rendering (it differs within a blur radius of the mask boundary, where light of the other plane's render
crosses it), and exactly the paper's premise that photos of different focus planes blend linearly into a
multi-focus image. With it, the stacking loss is an extra loss on each plane's sharp region
(:mod:`diffcamera.training.losses`).

Output folder: ``shard_00000.safetensors`` (tensors stacked over the shard's groups) + ``shard_00000.json``
(per-group metadata: source, seed, focus points, focus disparities, level, K) for each shard,
``simulate_config.json`` (the arguments; a resume with other arguments is refused) and, at the end,
``manifest.json``. Each group's randomness comes from ``(seed, source index, variant)`` only, so the data
do not depend on the number of processes or on interruptions; finished shards are skipped on resume.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..core import safe_paths
from ..core.files import read_disparity, read_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
DEPTH_SUFFIXES = ("_depth", ".depth", "_disparity")
DEPTH_EXTENSIONS = (".png", ".tif", ".tiff", ".npy", ".safetensors")
SCALAR_KEYS = ("focus_x1", "focus_y1", "focus_disparity1", "focus_x2", "focus_y2", "focus_disparity2",
               "K", "level", "ref_focus_disparity", "ref_K")
IMAGE_KEYS = ("aif", "reference", "target1", "target2", "physics1", "physics2", "composite")
#: Version 2: physics references, the layered renderer by default.
FORMAT_VERSION = 2
RENDERERS = ("layered", "classical")
REFERENCE_RENDERERS = ("same", "thin_lens")


@dataclass
class SimulateOptions:
    """Arguments of a simulation run (stored in ``simulate_config.json``)."""

    size: int = 64
    variants: int = 4
    level_range: Tuple[float, float] = (8.0, 96.0)
    min_plane_separation: float = 0.15
    p_aif: float = 0.3
    min_sharpness: float = 0.0
    shard_size: int = 64
    seed: int = 0
    gamma: float = 4.0
    depth_is_metric: bool = False
    sources: str = ""
    scene_kinds: Tuple[str, ...] = ("layers", "slanted", "ground", "mixed")
    num_scenes: int = 0
    scene_seed: int = 0
    depth_model: Optional[str] = None
    renderer: str = "layered"
    reference_renderer: str = "same"
    physics_coarse: Tuple[int, int] = (4, 8)
    physics_fine: Tuple[int, int] = (2, 5)

    def __post_init__(self):
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, got {self.renderer!r}")
        if self.reference_renderer not in REFERENCE_RENDERERS:
            raise ValueError(f"reference_renderer must be one of {REFERENCE_RENDERERS}, got {self.reference_renderer!r}")
        if self.reference_renderer == "thin_lens" and self.sources:
            raise ValueError("reference_renderer 'thin_lens' needs the layers of procedural scenes; an image folder "
                             "has none: use reference_renderer 'same'")
        self.level_range = tuple(self.level_range)
        self.scene_kinds = tuple(self.scene_kinds)
        self.physics_coarse = tuple(int(v) for v in self.physics_coarse)
        self.physics_fine = tuple(int(v) for v in self.physics_fine)
        for name in ("physics_coarse", "physics_fine"):
            v = getattr(self, name)
            if len(v) != 2 or min(v) < 1:
                raise ValueError(f"{name} must be two iteration counts >= 1 (outer, inner), got {list(v)}")

    def physics_settings(self):
        """The :class:`~diffcamera.core.physics.SolverSettings` of the physics references."""
        from ..core.physics import SolverSettings
        return SolverSettings(coarse=self.physics_coarse, fine=self.physics_fine)


# ------------------------------------------------------------------------------------ randomness
def group_seed(seed: int, source_index: int, variant: int) -> int:
    """A 63-bit seed for one group, independent of process layout."""
    blob = f"{seed}:{source_index}:{variant}".encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def _uniform(gen: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen, dtype=torch.float64))


def _random_pixel(disparity: torch.Tensor, gen: torch.Generator) -> Tuple[float, float, float]:
    """A uniformly drawn pixel: its normalised centre ``(x, y)`` and its disparity."""
    h, w = disparity.shape[-2:]
    idx = int(torch.randint(h * w, (), generator=gen))
    row, col = divmod(idx, w)
    return (col + 0.5) / w, (row + 0.5) / h, float(disparity[0, 0, row, col])


# ------------------------------------------------------------------------------------ one group
def default_renderer(gamma: float = 4.0, interrupt: Optional[Callable[[], None]] = None,
                     mode: str = "layered") -> Callable:
    """``fn(image, disparity, focus_disparity, K)``: ``render_bokeh(..., mode=mode)``; ``interrupt()`` (may raise)
    is called from the renderer's progress callback, so a long render stops within it."""
    from ..core.bokeh import render_bokeh
    callback = None if interrupt is None else (lambda done, total, preview=None: interrupt())

    def render(img, disp, fd, K):
        return render_bokeh(img, disp, fd, K, mode=mode, gamma=gamma, callback=callback)
    return render


def composite_disparity(disparity: torch.Tensor, d1: float, d2: float) -> torch.Tensor:
    """The remapped disparity whose blur at focus 0.5 and ``2K`` is ``K·min(|d−d1|,|d−d2|)``."""
    near1 = (disparity - d1).abs() <= (disparity - d2).abs()
    offset = torch.where(near1, disparity - d1, disparity - d2)
    return (0.5 + 0.5 * offset).clamp(0.0, 1.0)


def plane_mask(disparity: torch.Tensor, d1: float, d2: float) -> torch.Tensor:
    """``[B,1,H,W]`` float: 1 where plane 1 is at least as sharp as plane 2."""
    return ((disparity - d1).abs() <= (disparity - d2).abs()).to(disparity.dtype)


def simulate_group(image: torch.Tensor, disparity: torch.Tensor, seed: int, options: SimulateOptions,
                   render: Optional[Callable] = None, interrupt: Optional[Callable[[], None]] = None,
                   scene=None) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """Render one training group.

    Args:
        image: ``[1,3,H,W]`` sRGB 0..1 all-in-focus. disparity: ``[1,1,H,W]`` 0..1, near = 1.
        seed: the group's seed (see :func:`group_seed`).
        render: ``fn(image, disparity, focus_disparity, K) -> image``; default
            ``render_bokeh(..., mode=options.renderer, gamma=options.gamma)``.
        interrupt: ``fn()`` that raises to stop (ComfyUI's Cancel); called before each render, by the default
            renderer during it and by the physics solver at every iteration.
        scene: the procedural :class:`~diffcamera.evaluation.scenes.Scene` of ``image`` (needed by
            ``options.reference_renderer == "thin_lens"``).
    Returns:
        ``(tensors, meta)``: tensors as in the module table (without batch dimension), meta a JSON dict.
    """
    if render is None:
        render = default_renderer(options.gamma, interrupt, options.renderer)
    if interrupt is not None:
        inner = render

        def render(*args):
            interrupt()
            return inner(*args)

    from ..core.conventions import level_to_K
    from ..core.physics import refocus_physics

    gen = torch.Generator().manual_seed(int(seed))
    h, w = image.shape[-2:]
    x1, y1, d1 = _random_pixel(disparity, gen)
    x2, y2, d2 = _random_pixel(disparity, gen)
    for _ in range(32):
        if abs(d2 - d1) >= options.min_plane_separation:
            break
        x2, y2, d2 = _random_pixel(disparity, gen)
    level = _uniform(gen, *options.level_range)
    K = level_to_K(level, h, w)
    use_aif = _uniform(gen) < options.p_aif
    _, _, ref_d = _random_pixel(disparity, gen)
    ref_level = _uniform(gen, *options.level_range)
    ref_K = 0.0 if use_aif else level_to_K(ref_level, h, w)

    def u8(t):
        return (t[0].clamp(0, 1) * 255.0).round().to(torch.uint8)

    mask = plane_mask(disparity, d1, d2)
    with torch.no_grad():
        t1 = render(image, disparity, d1, K)
        t2 = render(image, disparity, d2, K)
        if options.renderer == "classical":
            comp = render(image, composite_disparity(disparity, d1, d2), 0.5, 2.0 * K)
        else:
            comp = mask * t1 + (1 - mask) * t2
        if use_aif:
            ref = u8(image)
        elif options.reference_renderer == "thin_lens":
            if scene is None:
                raise ValueError("reference_renderer 'thin_lens' needs the procedural scene of the image")
            from ..evaluation.thin_lens import render_thin_lens
            if interrupt is not None:
                interrupt()
            ref = u8(render_thin_lens(scene, ref_d, ref_K).float())
        else:
            ref = u8(render(image, disparity, ref_d, ref_K))
        # the physics refocus of the (8-bit) reference to both planes, as inference runs it on the user's input
        progress = None if interrupt is None else (lambda done, total, preview=None: interrupt())
        phys = refocus_physics((ref.float() / 255.0).unsqueeze(0).expand(2, -1, -1, -1), disparity,
                               torch.tensor([d1, d2]), K, input_focus_disparity=ref_d, input_K=ref_K,
                               settings=options.physics_settings(), callback=progress).image

    tensors = {"aif": u8(image), "reference": ref, "target1": u8(t1), "target2": u8(t2),
               "physics1": u8(phys[0:1]), "physics2": u8(phys[1:2]),
               "composite": u8(comp), "mask": mask[0].to(torch.uint8), "disparity": disparity[0].half(),
               "scalars": torch.tensor([x1, y1, d1, x2, y2, d2, K, level, ref_d, ref_K], dtype=torch.float32)}
    meta = {"seed": int(seed), "focus_point1": [x1, y1], "focus_disparity1": d1, "focus_point2": [x2, y2],
            "focus_disparity2": d2, "level": level, "K": K, "reference": "aif" if use_aif else "rendered",
            "ref_focus_disparity": None if use_aif else ref_d, "ref_level": None if use_aif else ref_level,
            "ref_K": ref_K}
    return tensors, meta


# ------------------------------------------------------------------------------------ sources
def find_depth_file(image_path: str) -> Optional[str]:
    """``photo.png`` -> ``photo_depth.png`` / ``photo.depth.npy`` / ... beside it, or ``None``."""
    stem = os.path.splitext(image_path)[0]
    for suffix in DEPTH_SUFFIXES:
        for ext in DEPTH_EXTENSIONS:
            if os.path.isfile(stem + suffix + ext):
                return stem + suffix + ext
    return None


def is_depth_file(path: str) -> bool:
    stem = os.path.splitext(os.path.basename(path))[0]
    return any(stem.endswith(s) for s in DEPTH_SUFFIXES)


def list_image_files(folder: str) -> List[str]:
    """Image files (sorted, recursive) in ``folder``, depth maps excluded."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} does not exist")
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            if f.lower().endswith(IMAGE_EXTENSIONS) and not is_depth_file(p):
                out.append(p)
    return sorted(out)


def _square(t: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """Centre-crop ``[1,C,H,W]`` to a square and resize to ``size``."""
    h, w = t.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    t = t[..., top:top + s, left:left + s]
    if s != size:
        kw = {"antialias": True} if mode in ("bilinear", "bicubic") else {}
        t = torch.nn.functional.interpolate(t, size=(size, size), mode=mode,
                                            align_corners=False if mode != "area" else None, **kw)
    return t


def _unreadable(path: str) -> Optional[str]:
    """Why PIL cannot read ``path`` (cheap header check), or ``None``."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises many types
        return f"unreadable image ({type(exc).__name__})"
    return None


@dataclass
class SourceScan:
    """What :func:`scan_folder` found."""

    images: List[str] = field(default_factory=list)
    depth: Dict[str, Optional[str]] = field(default_factory=dict)
    bad: List[Tuple[str, str]] = field(default_factory=list)


def scan_folder(folder: str, have_depth_model: bool, root: Optional[str] = None) -> SourceScan:
    """List images and their depth maps; unreadable files go to ``bad`` (path, reason).

    ``root``: when given, a file (image or depth map) whose real path leaves ``root`` (a link) is not read: it
    goes to ``bad``. Raises ``ValueError`` when the folder holds no image, or when some images have no depth map
    beside them and no depth model was given (naming the first few, relative to ``folder``, and the fix).
    """
    files = list_image_files(folder)
    scan = SourceScan()
    missing = []
    for p in files:
        if root is not None and not safe_paths.is_inside(p, root):
            scan.bad.append((p, "a link leading outside the image folder (not read)"))
            continue
        if os.path.getsize(p) == 0:
            scan.bad.append((p, "empty file"))
            continue
        why = _unreadable(p)
        if why:
            scan.bad.append((p, why))
            continue
        dep = find_depth_file(p)
        if dep is not None and root is not None and not safe_paths.is_inside(dep, root):
            scan.bad.append((dep, "a link leading outside the image folder (not read)"))
            dep = None
        if dep is None and not have_depth_model:
            missing.append(p)
        scan.images.append(p)
        scan.depth[p] = dep
    if not scan.images:
        bad = "; ".join(f"{os.path.relpath(p, folder)} ({why})" for p, why in scan.bad[:5]) or "none"
        raise ValueError(f"no usable image in the image folder (extensions {', '.join(IMAGE_EXTENSIONS)}); "
                         f"bad files: {bad}")
    if missing:
        shown = ", ".join(os.path.relpath(p, folder) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"{len(missing)} image(s) have no depth map beside them ({shown}) and no depth model "
                         f"was given: put '<name>_depth.png' (disparity, bright = near) or '<name>_depth.npy' "
                         f"next to each image, or pass --depth-model (a local Depth Anything V2 folder)")
    return scan


# ------------------------------------------------------------------------------------ shards
def _atomic_save_tensors(tensors: Dict[str, torch.Tensor], path: str, metadata: Dict[str, str] = None) -> None:
    from safetensors.torch import save_file
    with safe_paths.atomic_write(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)


def shard_done(out_dir: str, index: int) -> bool:
    return (os.path.isfile(os.path.join(out_dir, f"shard_{index:05d}.safetensors"))
            and os.path.isfile(os.path.join(out_dir, f"shard_{index:05d}.json")))


def _load_source(source: Dict, options: SimulateOptions, depth_cache: Dict,
                 interrupt: Optional[Callable[[], None]] = None) -> Tuple[torch.Tensor, torch.Tensor, object]:
    """A source description -> ``(image [1,3,S,S], disparity [1,1,S,S], scene or None)`` at the simulation size."""
    if source["kind"] == "scene":
        from ..evaluation.scenes import make_scene
        scene = make_scene(int(source["seed"]), size=options.size, kind=source["scene_kind"], check=interrupt)
        return scene.image.float().clamp(0, 1), scene.disparity.float().clamp(0, 1), scene
    image = read_image(source["path"])
    if source.get("depth"):
        convention = "metric depth" if options.depth_is_metric else "disparity (near bright)"
        disp = read_disparity(source["depth"], convention, normalise=True, name=source["depth"])
    else:
        disp = depth_cache[source["path"]]
    disp = torch.nn.functional.interpolate(disp, size=image.shape[-2:], mode="bilinear", align_corners=False)
    return (_square(image, options.size, "bicubic").clamp(0, 1), _square(disp, options.size, "bilinear").clamp(0, 1),
            None)


def build_shard(index: int, sources: Sequence[Dict], options: SimulateOptions, out_dir: Optional[str] = None,
                depth_cache: Optional[Dict] = None, render: Optional[Callable] = None,
                interrupt: Optional[Callable[[], None]] = None) -> Dict:
    """Simulate the groups of shard ``index`` (groups ``index·shard_size ...``); write it if ``out_dir``.
    ``interrupt()`` (may raise, e.g. ComfyUI's Cancel) is checked before every group and inside its renders.

    Returns ``{"tensors": stacked tensors, "meta": [per-group dicts], "bad": [(path, reason)]}``.
    """
    total = len(sources) * options.variants
    start, stop = index * options.shard_size, min((index + 1) * options.shard_size, total)
    rows: Dict[str, List[torch.Tensor]] = {}
    metas, bad = [], []
    cache_key, cache_val = None, None
    for g in range(start, stop):
        si, var = divmod(g, options.variants)
        src = sources[si]
        if interrupt is not None:
            interrupt()
        if cache_key != si:
            try:
                cache_val = _load_source(src, options, depth_cache or {}, interrupt)
            except ValueError as exc:
                cache_val = None
                bad.append((src.get("path", str(src)), str(exc)))
            cache_key = si
        if cache_val is None:
            continue
        tensors, meta = simulate_group(cache_val[0], cache_val[1], group_seed(options.seed, si, var), options, render,
                                       interrupt, scene=cache_val[2])
        meta.update({"group": g, "source_index": si, "variant": var,
                     "source": src.get("path") or f"scene:{src['scene_kind']}:{src['seed']}"})
        for k, v in tensors.items():
            rows.setdefault(k, []).append(v)
        metas.append(meta)
    stacked = {k: torch.stack(v) for k, v in rows.items()}
    result = {"tensors": stacked, "meta": metas, "bad": bad}
    if out_dir is not None:
        name = os.path.join(out_dir, f"shard_{index:05d}")
        if stacked:
            _atomic_save_tensors(stacked, name + ".safetensors", {"format": f"diffcamera-pairs-v{FORMAT_VERSION}"})
        else:  # every source of this shard was bad: an empty marker keeps resume and the manifest simple
            _atomic_save_tensors({"empty": torch.zeros(1)}, name + ".safetensors", {"format": "empty"})
        safe_paths.write_json_atomic({"groups": metas, "bad": bad}, name + ".json")
    return result


def _worker(args):
    index, sources, options_dict, out_dir, depth_cache = args
    torch.set_num_threads(1)
    options = SimulateOptions(**options_dict)
    res = build_shard(index, sources, options, out_dir, depth_cache)
    return index, len(res["meta"]), res["bad"]


# ------------------------------------------------------------------------------------ run
def sharpness_filter(sources: List[Dict], options: SimulateOptions, depth_cache: Dict) -> Tuple[List[Dict], List, List]:
    """Drop sources whose Laplacian variance (``evaluation.metrics.laplacian_variance`` of the image at the
    simulation size) is below ``options.min_sharpness``. Returns ``(kept, dropped[(name, value)], bad)``."""
    if options.min_sharpness <= 0:
        return sources, [], []
    from ..evaluation.metrics import laplacian_variance
    kept, dropped, bad = [], [], []
    for src in sources:
        name = src.get("path") or f"scene:{src['scene_kind']}:{src['seed']}"
        try:
            img, _, _ = _load_source(src, options, depth_cache)
        except ValueError as exc:
            bad.append((name, str(exc)))
            continue
        v = float(laplacian_variance(img)[0])
        src["sharpness"] = v
        if v < options.min_sharpness:
            dropped.append((name, v))
        else:
            kept.append(src)
    return kept, dropped, bad


def procedural_sources(num_scenes: int, kinds: Sequence[str], scene_seed: int) -> List[Dict]:
    """Source descriptions for procedural scenes (seed ``scene_seed + i``, kinds cycled)."""
    return [{"kind": "scene", "seed": scene_seed + i, "scene_kind": kinds[i % len(kinds)]} for i in range(num_scenes)]


def estimate_missing_depth(images: List[str], depth: Dict[str, Optional[str]], depth_model_path: Optional[str],
                           callback=None, estimator: Optional[Callable] = None) -> Tuple[Dict[str, torch.Tensor], List]:
    """Estimate disparity for images without a depth file: ``estimator(image [1,3,H,W]) -> [1,1,H,W]``, or
    Depth Anything V2 loaded from ``depth_model_path`` via ``core.depth``."""
    todo = [p for p in images if not depth.get(p)]
    if not todo:
        return {}, []
    if estimator is None:
        from ..core.depth import estimate_disparity, load_depth_model
        model = load_depth_model(depth_model_path)

        def estimator(img):
            return estimate_disparity(model, img)
    cache, bad = {}, []
    for i, p in enumerate(todo):
        try:
            img = read_image(p)
        except ValueError as exc:
            bad.append((p, str(exc)))
            continue
        with torch.no_grad():
            cache[p] = estimator(img).float().cpu()
        if callback is not None:
            callback(i + 1, len(todo), None)
    return cache, bad


def _read_simulate_config(cfg_path: str, out_dir: str, what: str) -> Dict:
    """The ``simulate_config.json`` of an existing dataset folder; refuses a folder that is not one of ours."""
    foreign = (f"{what}: {out_dir!r} already holds files that are not a dataset made by the simulator; nothing was "
               f"overwritten: choose another {what}")
    if os.path.islink(cfg_path) or not os.path.isfile(cfg_path) or os.path.getsize(cfg_path) > 1 << 20:
        raise ValueError(foreign)
    try:
        with open(cfg_path, "r", encoding="utf-8") as fh:
            old = json.load(fh)
    except (OSError, ValueError, RecursionError):
        raise ValueError(foreign) from None
    if not isinstance(old, dict) or "size" not in old or "seed" not in old:
        raise ValueError(foreign)
    return old


#: Fixed working memory of a simulation process beyond its tensors (allocator, thread pools), measured.
SIMULATE_OVERHEAD_BYTES = 64 * 1024 * 1024


def estimate_simulate_bytes(size: int, workers: int = 1, shard_groups: int = 64,
                            render_bytes: Optional[int] = None, renderer: str = "layered") -> int:
    """Peak memory (bytes, an upper estimate) of :func:`simulate_dataset` at ``size`` px with ``workers`` processes.

    Per process: one group's float32 working set (source image and disparity, the composite disparity, the
    renders and their uint8 copies: ~16 three-channel ``size²`` float maps), the renderer's own peak
    (``render_bytes``; default :func:`diffcamera.core.bokeh.estimate_render_bytes` of a ``renderer`` render with
    the radius of level 1024: radius = size), the physics references' solve (two images: the layered operator's
    kept state, counted as two layered renders of a batch of two, and its 16 conjugate-gradient maps), a shard's
    uint8 rows (``shard_groups`` groups, at most the shard size, × 24 bytes per pixel) held twice while they are
    stacked, the procedural scene's supersampled maps, and :data:`SIMULATE_OVERHEAD_BYTES`. Against one measured
    shard of the classical renderer without physics references (``benchmarks/bench_memory.py``): 1.4× at 256 px,
    2.2× at 512 px; the physics term is counted, not measured.
    """
    from ..core.bokeh import estimate_render_bytes
    px = int(size) * int(size)
    if render_bytes is None:
        render_bytes = estimate_render_bytes(1, int(size), int(size), renderer, float(size))
    physics = 2 * estimate_render_bytes(2, int(size), int(size), "layered", float(size)) + 16 * 2 * 3 * px * 4
    group = 16 * 3 * px * 4
    scene = 16 * 4 * px * 4  # procedural scenes: ~16 float maps alive at 2x supersampling (4 px per px)
    shard = 2 * int(shard_groups) * 24 * px
    return int(max(1, workers) * (group + scene + max(int(render_bytes), physics) + shard + SIMULATE_OVERHEAD_BYTES))


def simulate_dataset(out_dir: str, options: SimulateOptions, image_folder: Optional[str] = None,
                     workers: int = 1, callback=None, log: Callable[[str], None] = print,
                     depth_estimator: Optional[Callable] = None, source_root: Optional[str] = None,
                     interrupt: Optional[Callable[[], None]] = None, what: str = "output folder") -> Dict:
    """Write a sharded dataset to ``out_dir`` (resumable); returns the manifest dict.

    Exactly one source: ``image_folder`` (``options.sources`` records it) or ``options.num_scenes > 0``
    procedural scenes. ``callback(done, total, None)`` after each shard (may raise to interrupt; finished
    shards stay and a rerun resumes). ``depth_estimator``: optional ``fn(image) -> disparity`` used instead of
    loading ``options.depth_model`` (the ComfyUI node passes its DEPTH_MODEL this way). ``source_root``: files
    of the image folder whose real path leaves it are not read (:func:`scan_folder`). ``interrupt()``: checked
    per group and inside renders (one process only; with ``workers > 1`` stop the pool with Ctrl-C).

    ``out_dir`` must be absent, empty, or a dataset this function made with the same options (then it resumes):
    a folder holding anything else, or a dataset made with other options, is refused — nothing is overwritten
    (the message names ``what``: the input or option that chose ``out_dir``).
    """
    from ..core.conventions import LATENT_MULTIPLE
    if options.size % LATENT_MULTIPLE:
        raise ValueError(f"size must be a multiple of {LATENT_MULTIPLE}, got {options.size}")
    if options.variants < 1 or options.shard_size < 1:
        raise ValueError("variants and shard_size must be >= 1")
    lo, hi = options.level_range
    if not 0 <= lo <= hi:
        raise ValueError(f"level_range must be low <= high, got {options.level_range}")
    if bool(image_folder) == bool(options.num_scenes > 0):
        raise ValueError("give either an image folder or a number of procedural scenes (--scenes N), not both/neither")
    if image_folder and options.reference_renderer == "thin_lens":
        raise ValueError("reference_renderer 'thin_lens' needs the layers of procedural scenes; an image folder has "
                         "none: use reference_renderer 'same'")
    os.makedirs(out_dir, exist_ok=True)
    if image_folder:
        options.sources = os.path.abspath(image_folder)
    cfg_path = os.path.join(out_dir, "simulate_config.json")
    cfg = json.loads(json.dumps(asdict(options)))  # tuples as JSON lists, as a resumed run reads them back
    if os.path.lexists(cfg_path) or os.listdir(out_dir):
        old = _read_simulate_config(cfg_path, out_dir, what)
        changed = sorted(k for k in cfg if old.get(k) != cfg[k])
        if changed:
            raise ValueError(f"{what}: {out_dir!r} holds a dataset simulated with other arguments "
                             f"({', '.join(changed)}); nothing was overwritten: choose another {what}, or the same "
                             f"arguments to resume")
    else:
        safe_paths.write_json_atomic(cfg, cfg_path)

    bad: List = []
    depth_cache: Dict[str, torch.Tensor] = {}
    if image_folder:
        have_model = bool(options.depth_model) or depth_estimator is not None
        scan = scan_folder(image_folder, have_depth_model=have_model, root=source_root)
        bad += scan.bad
        if have_model:
            depth_cache, b = estimate_missing_depth(scan.images, scan.depth, options.depth_model,
                                                    estimator=depth_estimator)
            bad += b
        sources = [{"kind": "file", "path": p, "depth": scan.depth[p]} for p in scan.images
                   if scan.depth[p] or p in depth_cache]
    else:
        sources = procedural_sources(options.num_scenes, options.scene_kinds, options.scene_seed)
    sources, dropped, b = sharpness_filter(sources, options, depth_cache)
    bad += b
    for name, why in bad:
        log(f"simulate: skipped bad file {name}: {why}")
    if dropped:
        log(f"simulate: dropped {len(dropped)} image(s) below the sharpness threshold {options.min_sharpness}: "
            + ", ".join(f"{os.path.basename(n)} ({v:.3g})" for n, v in dropped[:10]) + (" ..." if len(dropped) > 10 else ""))
    if not sources:
        raise ValueError("no source image left after removing bad files and the sharpness filter "
                         f"(threshold {options.min_sharpness}); lower --min-sharpness or add images")

    total_groups = len(sources) * options.variants
    n_shards = math.ceil(total_groups / options.shard_size)
    todo = [i for i in range(n_shards) if not shard_done(out_dir, i)]
    done = n_shards - len(todo)
    if done:
        log(f"simulate: resuming, {done}/{n_shards} shard(s) already written")
    if callback is not None:
        callback(done, n_shards, None)
    if workers <= 1 or len(todo) <= 1:
        for i in todo:
            build_shard(i, sources, options, out_dir, depth_cache, interrupt=interrupt)
            done += 1
            if callback is not None:
                callback(done, n_shards, None)
    else:
        import multiprocessing as mp
        opts = asdict(options)
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, (i, sources, opts, out_dir, depth_cache)) for i in todo]
            try:
                for fut in as_completed(futures):
                    fut.result()
                    done += 1
                    if callback is not None:
                        callback(done, n_shards, None)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    shards, groups = [], 0
    for i in range(n_shards):
        with open(os.path.join(out_dir, f"shard_{i:05d}.json"), "r", encoding="utf-8") as fh:
            info = json.load(fh)
        n = len(info["groups"])
        for name, why in info.get("bad", []):
            if not any(name == b[0] for b in bad):
                bad.append((name, why))
                log(f"simulate: skipped bad file {name}: {why}")
        if n:
            shards.append({"file": f"shard_{i:05d}.safetensors", "groups": n})
            groups += n
    if groups == 0:
        why = "; ".join(f"{n}: {w}" for n, w in bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"simulate: no training group could be made from the {len(sources)} source(s)"
                         + (f" (skipped {why})" if bad else "") + "; check the images and depth maps"
                         + (" in the image folder" if image_folder else ""))
    manifest = {"format": f"diffcamera-pairs-v{FORMAT_VERSION}", "size": options.size, "groups": groups,
                "shards": shards, "options": cfg, "sources": len(sources),
                "dropped_unsharp": [[n, v] for n, v in dropped], "bad_files": [[n, w] for n, w in bad],
                "image_keys": list(IMAGE_KEYS), "scalar_keys": list(SCALAR_KEYS)}
    safe_paths.write_json_atomic(manifest, os.path.join(out_dir, "manifest.json"))
    log(f"simulate: {groups} group(s) in {len(shards)} shard(s) from {len(sources)} source(s) -> {out_dir}")
    return manifest


def simulate_in_memory(options: SimulateOptions, callback=None) -> Dict[str, torch.Tensor]:
    """Procedural groups simulated in this process (the trainer's ``dataset: "procedural"``): stacked tensors."""
    sources = procedural_sources(options.num_scenes, options.scene_kinds, options.scene_seed)
    n_shards = math.ceil(len(sources) * options.variants / options.shard_size)
    parts = []
    for i in range(n_shards):
        parts.append(build_shard(i, sources, options)["tensors"])
        if callback is not None:
            callback(i + 1, n_shards, None)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
