"""How the synthetic lesions look and how one photograph of a lesion is rendered.

``sample_lesion(dx, rng)`` draws the look of one lesion of a diagnosis; ``render(lesion, rng,
w, h)`` photographs it (new pose, zoom, lighting, hair and noise). ``kd_core.data.synthetic``
describes the classes' looks and drives these with one seeded generator per lesion and image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SKIN = np.array([[0.92, 0.74, 0.68], [0.88, 0.70, 0.62], [0.84, 0.66, 0.56], [0.90, 0.78, 0.74],
                 [0.78, 0.60, 0.52], [0.86, 0.68, 0.70]])
C = {  # lesion colours, RGB in 0..1
    "light": (0.74, 0.52, 0.36), "mid": (0.56, 0.34, 0.21), "dark": (0.36, 0.21, 0.13),
    "black": (0.14, 0.10, 0.10), "blue": (0.42, 0.46, 0.58), "red": (0.78, 0.32, 0.32),
    "white": (0.92, 0.86, 0.86), "pink": (0.90, 0.58, 0.58), "purple": (0.52, 0.22, 0.38),
    "tan": (0.80, 0.62, 0.46), "crimson": (0.70, 0.10, 0.20),
}
N_HARM = 12


@dataclass(frozen=True)
class Lesion:
    """How one lesion looks, in its own frame: (u, v) in units of its radius."""

    radius: float  # in image-frame units (the image is 2 wide)
    harm: np.ndarray  # (N_HARM,) border harmonics amplitudes, relative to the radius
    phase: np.ndarray  # (N_HARM,)
    edge: float  # soft-edge width, relative to the radius
    colour: np.ndarray  # (3,)
    opacity: float
    blobs: np.ndarray  # (B, 7): u, v, sigma, r, g, b, strength
    texture: float
    tex: np.ndarray  # coarse value noise over the lesion frame
    flakes: float  # white scale / milia strength
    dots: float  # dark dots and globules strength
    fine: np.ndarray  # fine value noise over the lesion frame
    vessels: tuple[np.ndarray, ...]  # polylines (N, 2) in the lesion frame
    skin: np.ndarray  # (3,) the patient's skin
    hair: float  # mean hair strands per image
    ring: bool  # photographed with the dermoscope's round field of view showing
    angle: float


def pick(rng: np.random.Generator, weights: dict[str, float]) -> str:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=np.float64)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _blob(rng: np.random.Generator, colour: str, spread: float, sigma: tuple[float, float],
          strength: tuple[float, float]) -> list[float]:
    r, a = spread * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
    return [r * np.cos(a), r * np.sin(a), rng.uniform(*sigma), *C[colour], rng.uniform(*strength)]


def _vessel(rng: np.random.Generator) -> np.ndarray:
    start = rng.uniform(-0.7, 0.7, 2)
    steps = rng.normal(0, 0.12, (int(rng.integers(4, 9)), 2)) + rng.normal(0, 0.12, 2)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


Look = dict[str, Any]


def _rgb(name: str) -> np.ndarray:
    return np.array(C[name])


def _melanocytic(dx: str, rng: np.random.Generator) -> Look:
    """nv and mel share one model driven by a latent atypia in [0, 1] whose ranges overlap."""
    u = rng.uniform
    a = rng.beta(4, 2.5) if dx == "mel" else rng.beta(1.5, 5)  # means 0.62 and 0.23
    blobs = [] if rng.random() < a else [[0, 0, u(0.35, 0.6), *C[pick(rng, {"dark": 3, "tan": 2})],
                                           u(0.2, 0.5)]]  # a symmetric darker or lighter centre
    odd = 4 * a**2  # black, blue-grey, red and white regions come with atypia
    palette = {"dark": 2, "light": 1, "black": odd, "blue": odd, "red": odd * 0.7, "white": odd / 2}
    blobs += [_blob(rng, pick(rng, palette), 0.6, (0.15, 0.45), (0.4, 0.9))
              for _ in range(int(rng.poisson(5 * a)))]
    return {"radius": float(np.clip(0.26 + 0.35 * a + rng.normal(0, 0.08), 0.18, 0.8)),
            "low": (0.02 + 0.14 * a) * u(0.6, 1.2), "high": (0.008 + 0.05 * a) * u(0.6, 1.2),
            "colour": _rgb("light") + u(0, 1) * (_rgb("dark") - _rgb("light")),
            "edge": u(0.02, 0.1), "texture": 0.15 + 0.35 * a, "dots": a * u(0.2, 0.9),
            "opacity": u(0.75, 1.0), "blobs": blobs}


def _bkl(rng: np.random.Generator) -> Look:
    u = rng.uniform
    dark = rng.random() < 0.2  # some keratoses are dark and mimic melanoma
    return {"radius": u(0.3, 0.6), "edge": u(0.02, 0.05), "texture": u(0.3, 0.5),
            "flakes": u(0.0, 0.4), "low": u(0.03, 0.1), "high": u(0.01, 0.03),
            "colour": _rgb("dark" if dark else pick(rng, {"tan": 1, "light": 1}))}


def _bcc(rng: np.random.Generator) -> Look:
    u = rng.uniform
    nests = rng.random() < 0.4  # blue-grey ovoid nests
    return {"radius": u(0.3, 0.55), "edge": u(0.1, 0.2), "opacity": u(0.5, 0.8), "texture": 0.2,
            "colour": _rgb("pink"), "low": u(0.04, 0.1),
            "vessels": [_vessel(rng) for _ in range(int(rng.integers(2, 6)))],
            "blobs": [_blob(rng, "blue", 0.6, (0.1, 0.2), (0.5, 0.8)) for _ in range(2 * nests)]}


def _vasc(rng: np.random.Generator) -> Look:
    u = rng.uniform
    lobules = [_blob(rng, pick(rng, {"purple": 1, "crimson": 1}), 0.6, (0.15, 0.3), (0.4, 0.8))
               for _ in range(int(rng.integers(2, 6)))]
    return {"radius": u(0.15, 0.35), "edge": u(0.02, 0.05), "opacity": u(0.8, 1.0),
            "colour": _rgb(pick(rng, {"red": 2, "purple": 1, "crimson": 1})), "blobs": lobules}


def _df(rng: np.random.Generator) -> Look:
    u = rng.uniform
    centre = [u(-0.1, 0.1), u(-0.1, 0.1), u(0.3, 0.45), *C["white"], u(0.5, 0.8)]
    return {"radius": u(0.2, 0.35), "edge": u(0.1, 0.2), "colour": _rgb("light"), "blobs": [centre]}


def _akiec(rng: np.random.Generator) -> Look:
    u = rng.uniform
    return {"radius": u(0.3, 0.6), "edge": u(0.1, 0.2), "opacity": u(0.5, 0.8), "texture": 0.3,
            "flakes": u(0.3, 0.7), "colour": _rgb("red") * 0.6 + _rgb("light") * 0.4}


def sample_lesion(dx: str, rng: np.random.Generator) -> Lesion:
    """Draw the look of one lesion of class ``dx`` (see the module docstring)."""
    u = rng.uniform
    look: Look = {"low": 0.03, "high": 0.012, "edge": u(0.03, 0.08), "opacity": u(0.75, 0.95),
                  "texture": 0.15, "dots": 0.0, "flakes": 0.0, "blobs": [], "vessels": []}
    builders = {"bkl": _bkl, "bcc": _bcc, "vasc": _vasc, "df": _df, "akiec": _akiec}
    look.update(_melanocytic(dx, rng) if dx in ("nv", "mel") else builders[dx](rng))
    k = np.arange(1, N_HARM + 1)
    harm = np.where(k <= 3, look["low"], look["high"] * 4.0 / np.maximum(k, 4)) * u(0.3, 1, N_HARM)
    harm[1] += u(0.0, 0.15)  # an oval is still symmetric
    return Lesion(
        radius=look["radius"], harm=harm, phase=u(0, 2 * np.pi, N_HARM), edge=look["edge"],
        colour=look["colour"] * u(0.96, 1.04, 3), opacity=look["opacity"],
        blobs=np.array(look["blobs"], dtype=np.float64).reshape(-1, 7), texture=look["texture"],
        tex=rng.random((12, 12)), flakes=look["flakes"], dots=look["dots"],
        fine=rng.random((40, 40)), vessels=tuple(look["vessels"]),
        skin=SKIN[rng.integers(len(SKIN))] * u(0.95, 1.03, 3),
        hair=float(rng.choice([0.0, 4.0, 15.0], p=[0.55, 0.3, 0.15])), angle=u(0, 2 * np.pi),
        ring=bool(rng.random() < 0.25),
    )


def _bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray, extent: float = 1.6) -> np.ndarray:
    """Sample ``grid`` (spanning [-extent, extent]^2 of the lesion frame) at (u, v), bilinearly."""
    ny, nx = grid.shape[0] - 1, grid.shape[1] - 1
    gx = np.clip((u + extent) / (2 * extent) * nx, 0, nx - 1e-6)
    gy = np.clip((v + extent) / (2 * extent) * ny, 0, ny - 1e-6)
    x0, y0 = gx.astype(np.intp), gy.astype(np.intp)
    fx, fy = gx - x0, gy - y0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _lines_alpha(lines: list[np.ndarray], widths: list[int], width: int, height: int) -> np.ndarray:
    """Antialiased coverage (H, W) of polylines given in pixel coordinates (drawn at 2x)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (2 * width, 2 * height), 0)
    draw = ImageDraw.Draw(canvas)
    for line, w in zip(lines, widths, strict=True):
        draw.line([(float(x) * 2, float(y) * 2) for x, y in line], fill=255, width=w, joint="curve")
    small = canvas.resize((width, height), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def _hairs(rng: np.random.Generator, count: int, width: int, height: int) -> list[np.ndarray]:
    t = np.linspace(0, 1, 12)[:, None]
    hairs = []
    for _ in range(count):
        p0 = rng.uniform(-0.1, 1.1, 2) * (width, height)
        p1, p2 = p0 + rng.normal(0, 0.35, (2, 2)) * width
        hairs.append((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2)
    return hairs


def _harmonics(cos1: np.ndarray, sin1: np.ndarray, les: Lesion) -> np.ndarray:
    """sum_k harm_k cos(k phi + phase_k), with cos/sin(k phi) by the angle-addition recurrence."""
    out = np.zeros_like(cos1)
    ck, sk = cos1, sin1
    for amp, ph in zip(les.harm, les.phase, strict=True):
        out += amp * (ck * np.cos(ph) - sk * np.sin(ph))
        ck, sk = ck * cos1 - sk * sin1, sk * cos1 + ck * sin1
    return out


def _lesion_layer(les: Lesion, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour (H, W, 3) and coverage (H, W) of the lesion at lesion-frame coordinates (u, v)."""
    rho = np.hypot(u, v)
    border = 1 + _harmonics(u / np.maximum(rho, 1e-9), v / np.maximum(rho, 1e-9), les)
    mask = 1 / (1 + np.exp(-np.clip((1 - rho / np.maximum(border, 0.2)) / les.edge, -30, 30)))
    col = np.broadcast_to(les.colour, (*u.shape, 3)).copy()
    for bu, bv, sig, r, g, b, strength in les.blobs:
        w = (strength * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * sig**2)))[..., None]
        col = col * (1 - w) + np.array([r, g, b]) * w
    col *= (1 + les.texture * (_bilinear(les.tex, u, v) - 0.5))[..., None]
    fine = _bilinear(les.fine, u, v)
    col += (les.flakes * np.clip((fine - 0.6) * 3, 0, 1))[..., None] * (1 - col)
    col *= (1 - les.dots * np.clip((fine - 0.65) * 4, 0, 1))[..., None]
    return col, mask * les.opacity


def _optics(img: np.ndarray, les: Lesion, rng: np.random.Generator, r2: np.ndarray) -> np.ndarray:
    """Vignetting, the dermoscope's round field of view, exposure, white balance and noise."""
    img = img * (1 - rng.uniform(0.1, 0.4) * r2**1.5)[..., None]
    if les.ring:
        img *= (1 / (1 + np.exp((np.sqrt(r2) - rng.uniform(0.8, 1.0)) * 40)))[..., None]
    img *= rng.uniform(0.92, 1.08) * rng.uniform(0.97, 1.03, 3)
    return img + rng.normal(0, 0.015, img.shape)


def render(les: Lesion, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One photograph of ``les`` (new pose, zoom, skin noise, hair, optics): (H, W, 3) uint8."""
    x = (np.arange(width) + 0.5) / width * 2 - 1
    y = ((np.arange(height) + 0.5) / height * 2 - 1) * height / width
    xs, ys = np.meshgrid(x, y)
    cx, cy = np.clip(rng.normal(0, 0.08, 2), -0.25, 0.25)
    theta, scale = les.angle + rng.normal(0, 0.2), les.radius * rng.uniform(0.9, 1.1)
    c, s = np.cos(theta), np.sin(theta)
    col, alpha = _lesion_layer(les, (c * (xs - cx) + s * (ys - cy)) / scale,
                               (-s * (xs - cx) + c * (ys - cy)) / scale)
    mottle = _bilinear(rng.random((6, 8)), xs, ys, 1.0) - 0.5
    grain = _bilinear(rng.random((height // 3, width // 3)), xs, ys, 1.0) - 0.5
    skin = les.skin * (1 + 0.08 * mottle + 0.06 * grain)[..., None]
    img = skin * (1 - alpha[..., None]) + col * alpha[..., None]
    if les.vessels:
        to_frame = np.array([[c, -s], [s, c]]) * scale
        lines = [(p @ to_frame.T + (cx, cy) + (1, height / width)) * width / 2 for p in les.vessels]
        a = _lines_alpha(lines, [2] * len(lines), width, height)[..., None] * 0.8
        img = img * (1 - a) + np.array(C["crimson"]) * a
    n_hair = int(rng.poisson(les.hair))
    if n_hair:
        a = _lines_alpha(_hairs(rng, n_hair, width, height),
                         [int(w) for w in rng.integers(1, 3, n_hair)], width, height)[..., None]
        img = img * (1 - a) + np.array([0.3, 0.2, 0.15]) * rng.uniform(0.3, 1.0) * a
    img = _optics(img, les, rng, (xs**2 + ys**2) / (1 + (height / width) ** 2))
    return np.clip(np.floor(img * 255 + 0.5), 0, 255).astype(np.uint8)
