"""The pictures `dreamjax.play` shows: frames side by side with C's action drawn as bars
(`compose`), and the pygame window of `--window` (`Window`, `check_display`).

A picture is a header row of titles over panels PANEL pixels high: each frame scaled to that
height (nearest-neighbour when enlarging, so the 96x96 CarRacing frame and V's 64x64 frame keep
their pixels), then the action panel: one bar per action component with its value, and a few
lines of text (seed, step, return so far). Width and height are even, as H.264 needs.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dreamjax.errors import ConfigError

PANEL = 192
"""Panel height in pixels (the 96x96 CarRacing frame x2, V's 64x64 frame x3)."""
HEADER = 18
GAP = 4
BAR_COLORS = ((80, 150, 255), (90, 210, 90), (235, 80, 80))
_FONT = ImageFont.load_default(size=12)
Bar = tuple[str, float, float, float]
"""(label, value, low, high) of one action component."""


def fit(img: np.ndarray) -> Image.Image:
    """An (h, w, 3) uint8 frame scaled to height PANEL (nearest when enlarging)."""
    pic = Image.fromarray(np.asarray(img, np.uint8))
    w = max(1, round(pic.width * PANEL / pic.height))
    return pic.resize((w, PANEL), Image.NEAREST if pic.height < PANEL else Image.BILINEAR)


def action_panel(bars: list[Bar], lines: list[str]) -> Image.Image:
    """A PANEL x PANEL picture: one bar per action component (filled from 0, or from the low
    end when 0 is outside its range) with its value, and text lines at the bottom."""
    pic = Image.new("RGB", (PANEL, PANEL), (32, 32, 32))
    draw = ImageDraw.Draw(pic)
    x0, x1 = 10, PANEL - 10
    for i, (label, value, lo, hi) in enumerate(bars):
        y = 8 + 40 * i
        draw.text((x0, y), f"{label} {value:+.2f}", font=_FONT, fill=(230, 230, 230))
        draw.rectangle((x0, y + 16, x1, y + 30), outline=(120, 120, 120))

        def at(v: float, lo: float = lo, hi: float = hi) -> int:
            return round(x0 + (x1 - x0) * (min(max(v, lo), hi) - lo) / (hi - lo))

        base = at(0.0 if lo <= 0.0 <= hi else lo)
        end = at(value)
        if end != base:
            draw.rectangle((min(base, end), y + 17, max(base, end), y + 29),
                           fill=BAR_COLORS[i % len(BAR_COLORS)])
        draw.line((base, y + 14, base, y + 32), fill=(200, 200, 200))
    for j, text in enumerate(lines):
        draw.text((x0, PANEL - 16 * (len(lines) - j) - 4), text, font=_FONT,
                  fill=(230, 230, 230))
    return pic


def compose(images: list[np.ndarray], titles: list[str], bars: list[Bar],
            lines: list[str]) -> np.ndarray:
    """Frames (each scaled to height PANEL) and the action panel side by side under a header
    of titles -> (H, W, 3) uint8 with H, W even (for H.264)."""
    panels = [fit(x) for x in images] + [action_panel(bars, lines)]
    width = sum(p.width for p in panels) + GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width + width % 2, HEADER + PANEL), (16, 16, 16))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for pic, title in zip(panels, titles, strict=True):
        canvas.paste(pic, (x, HEADER))
        draw.text((x + 4, 3), title, font=_FONT, fill=(240, 240, 240))
        x += pic.width + GAP
    return np.asarray(canvas)


def check_display() -> None:
    """ConfigError unless a window can be opened (Linux/BSD: DISPLAY or WAYLAND_DISPLAY)."""
    if sys.platform in ("darwin", "win32"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("--window: no display here (DISPLAY and WAYLAND_DISPLAY are unset); "
                          "use --video FILE to write an MP4 instead")


class Window:
    """A pygame window showing frames at `fps`; `show` returns False once it is closed (the
    window's close button, Esc or q). pygame is imported here, only for `--window`: its import
    prints a banner and probes SDL."""

    def __init__(self, title: str, fps: int):
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
        import pygame

        self.pg = pygame
        pygame.display.init()
        pygame.display.set_caption(title)
        self.screen = None
        self.clock = pygame.time.Clock()
        self.fps = fps

    def show(self, frame: np.ndarray) -> bool:
        pg = self.pg
        for event in pg.event.get():
            if event.type == pg.QUIT or (event.type == pg.KEYDOWN
                                         and event.key in (pg.K_ESCAPE, pg.K_q)):
                return False
        h, w = frame.shape[:2]
        if self.screen is None or self.screen.get_size() != (w, h):
            try:
                self.screen = pg.display.set_mode((w, h))
            except pg.error as e:
                raise ConfigError(f"--window: cannot open a window ({e}); use --video FILE "
                                  "instead") from None
        self.screen.blit(pg.surfarray.make_surface(frame.swapaxes(0, 1)), (0, 0))
        pg.display.flip()
        self.clock.tick(self.fps)
        return True

    def close(self) -> None:
        self.pg.display.quit()
