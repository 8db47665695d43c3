"""A generated image-caption set: coloured shapes at three positions, captioned in three languages.

Every image shows one shape (circle, square, triangle, star) in one of six colours on the left,
in the middle or on the right of a lightly textured background; size, exact position, hue and
background vary. That gives 72 attribute sets ("groups"), each captioned in English by several
paraphrase templates and, for evaluation, in German and Japanese by small grammar templates
(German adjective endings follow the noun's gender). Many images share a group, so retrieval is
scored by group: a hit is correct when it shows the same shape, colour and position as the query
(see docs/clip-towers.md). Everything is deterministic in the seed; generation takes about a
second per thousand images, rendered at 2x and downsampled with antialiasing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 96
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 210, 20),
    "purple": (140, 40, 170),
    "orange": (250, 130, 10),
}
POSITIONS = ("left", "middle", "right")

EN_POSITION = {"left": "on the left", "middle": "in the middle", "right": "on the right"}
EN_TEMPLATES = (
    "{a} {colour} {shape} {where}",
    "{where_cap}, {a} {colour} {shape}",
    "there is {a} {colour} {shape} {where}",
    "a picture of {a} {colour} {shape} {where}",
    "one {colour} {shape}, placed {where}",
)

DE_SHAPE = {"circle": ("Kreis", "m"), "square": ("Quadrat", "n"), "triangle": ("Dreieck", "n"),
            "star": ("Stern", "m")}
DE_COLOUR = {"red": "rot", "green": "grün", "blue": "blau", "yellow": "gelb", "purple": "lila",
             "orange": "orange"}
DE_POSITION = {"left": "links", "middle": "in der Mitte", "right": "rechts"}
DE_TEMPLATES = ("{article} {adjective} {shape} {where}",
                "{where_cap} ist {article} {adjective} {shape}")

JA_SHAPE = {"circle": "円", "square": "四角形", "triangle": "三角形", "star": "星"}
JA_COLOUR = {"red": "赤い", "green": "緑の", "blue": "青い", "yellow": "黄色い", "purple": "紫の",
             "orange": "オレンジ色の"}
JA_POSITION = {"left": "左側", "middle": "真ん中", "right": "右側"}
JA_TEMPLATES = ("{where}に{colour}{shape}", "{colour}{shape}が{where}にある")


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    position: str

    @property
    def group(self) -> str:
        return f"{self.colour}-{self.shape}-{self.position}"


def english(scene: Scene, variant: int) -> str:
    where = EN_POSITION[scene.position]
    template = EN_TEMPLATES[variant % len(EN_TEMPLATES)]
    article = "an" if scene.colour[0] in "aeiou" else "a"
    return template.format(a=article, colour=scene.colour, shape=scene.shape, where=where,
                           where_cap=where[0].upper() + where[1:])


def german(scene: Scene, variant: int = 0) -> str:
    noun, gender = DE_SHAPE[scene.shape]
    stem = DE_COLOUR[scene.colour]
    # Indefinite article, nominative: ein roter Kreis (m), ein rotes Quadrat (n); lila stays.
    ending = "" if stem == "lila" else ("er" if gender == "m" else "es")
    where = DE_POSITION[scene.position]
    template = DE_TEMPLATES[variant % len(DE_TEMPLATES)]
    return template.format(article="ein", adjective=stem + ending, shape=noun, where=where,
                           where_cap=where[0].upper() + where[1:])


def japanese(scene: Scene, variant: int = 0) -> str:
    template = JA_TEMPLATES[variant % len(JA_TEMPLATES)]
    return template.format(where=JA_POSITION[scene.position], colour=JA_COLOUR[scene.colour],
                           shape=JA_SHAPE[scene.shape])


def render(scene: Scene, rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """The scene as RGB uint8 ``[size, size, 3]``, drawn at 2x and downsampled (antialiased)."""
    from PIL import Image, ImageDraw

    big = 2 * size
    background = rng.integers(215, 256, size=3)
    noise = rng.integers(-12, 13, size=(big // 8, big // 8, 1))
    canvas = np.clip(background + np.kron(noise, np.ones((8, 8, 1))), 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    radius = rng.uniform(0.12, 0.19) * big
    column = POSITIONS.index(scene.position)
    cx = (column + 0.5) / 3 * big + rng.uniform(-0.05, 0.05) * big
    cy = rng.uniform(0.3, 0.7) * big
    colour = tuple(int(c) for c in np.clip(np.array(COLOURS[scene.colour]) + rng.integers(
        -20, 21, size=3), 0, 255))
    if scene.shape == "circle":
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=colour)
    elif scene.shape == "square":
        r = radius * 0.85
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif scene.shape == "triangle":
        draw.polygon(_regular(cx, cy, radius, 3, rng), fill=colour)
    else:
        draw.polygon(_star(cx, cy, radius, rng), fill=colour)
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))


def _regular(cx: float, cy: float, r: float, n: int, rng: np.random.Generator) -> list:
    start = -np.pi / 2 + rng.uniform(-0.15, 0.15)
    return [(cx + r * np.cos(start + 2 * np.pi * k / n), cy + r * np.sin(start + 2 * np.pi * k / n))
            for k in range(n)]


def _star(cx: float, cy: float, r: float, rng: np.random.Generator) -> list:
    start = -np.pi / 2 + rng.uniform(-0.15, 0.15)
    points = []
    for k in range(10):
        radius = r if k % 2 == 0 else 0.45 * r
        angle = start + np.pi * k / 5
        points.append((cx + radius * np.cos(angle), cy + radius * np.sin(angle)))
    return points


def scenes(n: int, rng: np.random.Generator) -> list[Scene]:
    """``n`` scenes cycling through every group (balanced), in random order."""
    every = [Scene(s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS]
    picked = [every[i % len(every)] for i in range(n)]
    return [picked[i] for i in rng.permutation(n)]


def write_set(folder: Path, n: int, seed: int, name: str = "pairs") -> dict[str, Path]:
    """Render ``n`` images into ``folder/images`` and write the pairs files.

    Returns the paths of ``{name}.jsonl`` (English, paraphrased), ``{name}.de.jsonl`` and
    ``{name}.ja.jsonl`` (same images, translated captions). Each line carries ``image`` (relative
    to the file), ``text`` and ``group``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines: dict[str, list[str]] = {"en": [], "de": [], "ja": []}
    for i, scene in enumerate(scenes(n, rng)):
        relative = f"images/{name}-{i:05d}.png"
        Image.fromarray(render(scene, rng)).save(folder / relative, compress_level=1)
        variant = int(rng.integers(1 << 30))
        captions = {"en": english(scene, variant), "de": german(scene, variant),
                    "ja": japanese(scene, variant)}
        for lang, caption in captions.items():
            record = {"image": relative, "text": caption, "group": scene.group}
            lines[lang].append(json.dumps(record, ensure_ascii=False))
    out = {}
    for lang, rows in lines.items():
        path = folder / (f"{name}.jsonl" if lang == "en" else f"{name}.{lang}.jsonl")
        path.write_text("\n".join(rows) + "\n", encoding="utf-8")
        out[lang] = path
    return out
