"""Writes ``k15_envs/data/imageqa_sample.jsonl``: the bundled 12-row sample of
``k15/ImageQA-v0`` (shape counting and reading a bar chart; PNGs inline as base64 data URLs).

Run from ``envs/``: ``python tools/make_imageqa_sample.py``. Deterministic (seed 0).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "k15_envs" / "data" / "imageqa_sample.jsonl"
COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 160, 60)}


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def shapes(rng: np.random.Generator) -> tuple[Image.Image, str, str]:
    image = Image.new("RGB", (160, 160), "white")
    draw = ImageDraw.Draw(image)
    counts = {name: int(rng.integers(0, 5)) for name in COLORS}
    cells = rng.permutation(16)[: sum(counts.values())]
    names = [name for name, n in counts.items() for _ in range(n)]
    for cell, name in zip(cells, names):
        x, y = 40 * (cell % 4) + 8, 40 * (cell // 4) + 8
        draw.ellipse((x, y, x + 24, y + 24), fill=COLORS[name])
    asked = str(rng.choice(list(COLORS)))
    return image, f"How many {asked} circles are in the image?", str(counts[asked])


def bars(rng: np.random.Generator) -> tuple[Image.Image, str, str]:
    image = Image.new("RGB", (160, 160), "white")
    draw = ImageDraw.Draw(image)
    heights = [int(v) for v in rng.integers(1, 8, size=3)]
    for i, h in enumerate(heights):
        draw.rectangle((20 + 45 * i, 150 - 18 * h, 50 + 45 * i, 150), fill=(90, 90, 90))
    for level in range(1, 9):  # grid lines every unit
        draw.line((10, 150 - 18 * level, 155, 150 - 18 * level), fill=(210, 210, 210))
    return (
        image,
        "The bars stand on a grid of unit steps. What is the sum of their heights?",
        str(sum(heights)),
    )


def main() -> None:
    rng = np.random.default_rng(0)
    rows = []
    for index in range(12):
        image, question, answer = (shapes if index % 2 == 0 else bars)(rng)
        rows.append(
            {
                "id": f"sample-{index:02d}",
                "image": data_url(image),
                "question": question,
                "answer": answer,
            }
        )
    OUT.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {len(rows)} rows to {OUT}")


if __name__ == "__main__":
    main()
