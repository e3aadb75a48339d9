"""Text drawn as an image: the renderer behind the ``k15/Rendered*`` envs.

A text problem becomes a picture of itself (the report's "text-rendered" vision data), so
the text task's verifier still grades the answer. :func:`render_text` is a pure function of
``(text, style, seed)``: the same arguments give the same pixels on every machine (the font
is Pillow's bundled one unless ``style.font`` names a TrueType file).

Knobs (:class:`RenderStyle`): canvas ``width`` × ``height``, ``font_size`` (shrunk down to
``min_font_size`` until the wrapped text fits; a text that does not fit even then is an
error naming the problem), ``margin``, ``line_spacing``, ``jitter`` (random offset of the
text block, pixels), ``rotate`` (random rotation, degrees, ±), ``noise`` (standard deviation
of Gaussian pixel noise, 0-255 units) and the ``foreground`` / ``background`` gray levels.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

__all__ = ["RenderStyle", "render_text", "png_bytes", "decode_image", "letterbox"]


@dataclass(frozen=True)
class RenderStyle:
    """How problems are drawn (see the module docstring)."""

    width: int = 448
    height: int = 224
    font_size: int = 22
    min_font_size: int = 10
    font: str | None = None
    margin: int = 16
    line_spacing: float = 1.3
    jitter: int = 0
    rotate: float = 0.0
    noise: float = 0.0
    foreground: int = 0
    background: int = 255

    def __post_init__(self) -> None:
        checks = {
            "width": self.width >= 32,
            "height": self.height >= 32,
            "font_size": self.font_size >= self.min_font_size >= 4,
            "margin": 0 <= self.margin < min(self.width, self.height) // 4,
            "line_spacing": self.line_spacing >= 1.0,
            "jitter": 0 <= self.jitter <= self.margin,
            "rotate": 0.0 <= self.rotate <= 45.0,
            "noise": 0.0 <= self.noise <= 128.0,
            "foreground": 0 <= self.foreground <= 255,
            "background": 0 <= self.background <= 255,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = {name: getattr(self, name) for name in bad}
            raise ValueError(
                f"render style: bad {', '.join(bad)} ({values}); need width/height >= 32, "
                "font_size >= min_font_size >= 4, 0 <= margin < min(width, height) / 4, "
                "line_spacing >= 1, 0 <= jitter <= margin, 0 <= rotate <= 45, "
                "0 <= noise <= 128, gray levels in 0..255"
            )

    @classmethod
    def from_options(cls, options: RenderStyle | dict[str, Any] | None) -> RenderStyle:
        """A style from a dict of its fields (unknown keys are an error naming them)."""
        if options is None:
            return cls()
        if isinstance(options, RenderStyle):
            return options
        if not isinstance(options, dict):
            raise TypeError(
                f"render: expected a dict of style fields, got {type(options).__name__}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"render: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _font(style: RenderStyle, size: int):
    from PIL import ImageFont

    if style.font is None:
        return ImageFont.load_default(size=size)
    try:
        return ImageFont.truetype(style.font, size=size)
    except OSError as exc:
        raise ValueError(f"render: cannot load font {style.font!r}: {exc}") from None


def _wrap(text: str, font, max_width: float) -> list[str]:
    """Greedy word wrap of each paragraph to ``max_width`` pixels (a word longer than a
    line is split by characters)."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while len(word) > 1 and font.getlength(word) > max_width:
                cut = len(word) - 1
                while cut > 1 and font.getlength(word[:cut]) > max_width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


def _layout(text: str, style: RenderStyle, what: str):
    """``(font, lines, line_height)`` at the largest size from ``font_size`` down that fits."""
    inner_w = style.width - 2 * style.margin
    inner_h = style.height - 2 * style.margin
    for size in range(style.font_size, style.min_font_size - 1, -1):
        font = _font(style, size)
        lines = _wrap(text, font, inner_w)
        line_height = int(round(size * style.line_spacing))
        if len(lines) * line_height <= inner_h:
            return font, lines, line_height
    raise ValueError(
        f"{what}: the text ({len(text)} characters) does not fit a {style.width}x{style.height} "
        f"image even at min_font_size={style.min_font_size}; raise render.width/height or "
        "lower render.min_font_size"
    )


def render_text(text: str, style: RenderStyle, seed: int | tuple[int, ...], *, what: str = "text"):
    """Draw ``text`` on an RGB canvas of ``style``; returns a ``PIL.Image``. Deterministic in
    ``(text, style, seed)``; ``what`` names the problem in errors."""
    from PIL import Image, ImageDraw

    font, lines, line_height = _layout(text, style, what)
    rng = np.random.default_rng(seed)
    canvas = Image.new("L", (style.width, style.height), color=style.background)
    draw = ImageDraw.Draw(canvas)
    dx, dy = rng.integers(-style.jitter, style.jitter + 1, size=2) if style.jitter else (0, 0)
    y = style.margin + int(dy)
    for line in lines:
        draw.text((style.margin + int(dx), y), line, fill=style.foreground, font=font)
        y += line_height
    if style.rotate:
        angle = float(rng.uniform(-style.rotate, style.rotate))
        canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=style.background)
    pixels = np.asarray(canvas, dtype=np.float32)
    if style.noise:
        pixels = pixels + rng.normal(0.0, style.noise, size=pixels.shape)
    gray = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), mode="RGB")


def png_bytes(image) -> bytes:
    """PNG encoding of a ``PIL.Image`` (lossless, deterministic)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_image(data: bytes, *, what: str = "image"):
    """``PIL.Image`` (RGB) from encoded bytes; a clear error for bytes that are no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"{what}: not a readable image ({exc})") from None
    return image.convert("RGB")


def letterbox(image, width: int, height: int, background: int = 255) -> np.ndarray:
    """``image`` scaled to fit ``width`` × ``height`` (aspect kept), centred on a
    ``background`` canvas: the fixed-shape array an observation space can hold."""
    from PIL import Image

    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(size, resample=Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (width, height), color=(background,) * 3)
    canvas.paste(resized, ((width - size[0]) // 2, (height - size[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)
