"""FastCarRacing: gymnasium's CarRacing-v3 with a faster, byte-identical `state_pixels` renderer.

Its observations are byte-identical to stock (tests/test_carracing.py checks this against stock
CarRacing-v3, and checks the pygame-ce behaviours it relies on: `Vector2.rotate_rad` arithmetic,
smoothscale's separable passes). `benchmarks/envs.py` measures the speed-up. This module is over
400 lines because it is one renderer: the exact-arithmetic helpers exist only for it.

NumPy only: this module runs inside worker processes and never imports JAX.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import pygame  # noqa: E402
from gymnasium.envs.box2d.car_dynamics import SIZE, WHEEL_R, WHEEL_W, WHEEL_WHITE  # noqa: E402
from gymnasium.envs.box2d.car_racing import (  # noqa: E402
    GRASS_DIM,
    MAX_SHAPE_DIM,
    PLAYFIELD,
    SCALE,
    STATE_H,
    STATE_W,
    WINDOW_H,
    WINDOW_W,
    ZOOM,
    CarRacing,
)
from pygame import gfxdraw  # noqa: E402

_GYM_VERIFIED = ((1, 3), (1, 4))
"""FastCarRacing was verified byte-identical against gymnasium versions in [1.3, 1.4)."""

_DASH_H = 5 * WINDOW_H // 40
"""Bottom rows of the observation's source surface that the dashboard overwrites (100)."""
_ROAD_H = WINDOW_H - _DASH_H
"""Rows of the road surface (unflipped: its last _ROAD_H rows) the observation depends on."""
_MARGIN = 3.0  # px; an aa outline or fill never reaches further than this beyond its vertices


def _check_gym_version(version: str) -> None:
    """Raise if gymnasium `version` is outside the range FastCarRacing was verified against."""
    try:
        major_minor = tuple(int(p) for p in version.split(".")[:2])
    except ValueError as e:
        raise RuntimeError(f"FastCarRacing: cannot parse gymnasium version {version!r}") from e
    lo, hi = _GYM_VERIFIED
    if not lo <= major_minor < hi:
        raise RuntimeError(
            f"FastCarRacing is verified byte-identical only for gymnasium "
            f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}; found {version}. Use make_env(fast=False)."
        )


def _rotation(angle: float) -> tuple[float, float, int]:
    """(cos, sin, special) exactly as pygame-ce's `Vector2.rotate_rad` computes them.

    special is -1 for a general rotation, else the multiple k of pi/2 (0..4) that pygame
    special-cases with an exact coordinate permutation.
    """
    eps = 1e-6  # pygame's default Vector2.epsilon
    angle = math.fmod(angle, 2.0 * math.pi)
    if angle < 0:
        angle += 2.0 * math.pi
    if math.fmod(angle + eps, math.pi / 2) < 2 * eps:
        return 0.0, 0.0, int((angle + eps) / (math.pi / 2))
    return math.cos(angle), math.sin(angle), -1


def rotate_rad(xy: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate points (..., 2) like `pygame.math.Vector2(p).rotate_rad(angle)`, bit for bit."""
    x, y = xy[..., 0], xy[..., 1]
    c, s, special = _rotation(angle)
    if special in (0, 4):
        return x, y
    if special == 1:
        return -y, x
    if special == 2:
        return -x, -y
    if special == 3:
        return y, -x
    return c * x - s * y, s * x + c * y


def _b2_mul(rot: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Box2D's `b2Transform * b2Vec2` in float32, per row.

    rot (n, 4) float32 rows (cos, sin, px, py); v (n, 2) float32 -> (n, 2) float32.
    """
    c, s, px, py = rot[:, 0], rot[:, 1], rot[:, 2], rot[:, 3]
    x, y = v[:, 0], v[:, 1]
    return np.stack([(c * x - s * y) + px, (s * x + c * y) + py], axis=-1)


def _grass_polys() -> np.ndarray:
    """The 400 grass patches of `CarRacing._render_road`, same order and arithmetic. (400, 4, 2)"""
    g = GRASS_DIM
    polys = [
        [
            (g * x + g, g * y + 0),
            (g * x + 0, g * y + 0),
            (g * x + 0, g * y + g),
            (g * x + g, g * y + g),
        ]
        for x in range(-20, 20, 2)
        for y in range(-20, 20, 2)
    ]
    return np.array(polys, dtype=np.float64)


def _covers_window(corners: list[tuple[float, float]], margin: float = 4.0) -> bool:
    """Whether the convex polygon `corners` (pixels) contains the window grown by `margin`."""
    pts = [
        (-margin, -margin),
        (WINDOW_W + margin, -margin),
        (WINDOW_W + margin, WINDOW_H + margin),
        (-margin, WINDOW_H + margin),
    ]
    signs = set()
    for i in range(len(corners)):
        ax, ay = corners[i - 1]
        bx, by = corners[i]
        ex, ey = bx - ax, by - ay
        norm = math.hypot(ex, ey)
        if norm == 0:
            return False
        for px, py in pts:
            d = (ex * (py - ay) - ey * (px - ax)) / norm
            if abs(d) < margin:
                return False
            signs.add(d > 0)
    return len(signs) == 1


def _fill(surf: pygame.Surface, mapped: int) -> None:
    """`surf.fill(mapped)` with ordinary stores (SDL's fill streams past the caches)."""
    pixels = pygame.surfarray.pixels2d(surf)
    pixels.fill(mapped)
    del pixels  # release the surface lock


class FastCarRacing(CarRacing):
    """Gymnasium's CarRacing with a faster, byte-identical `state_pixels` renderer.

    Physics, rewards and termination are gymnasium's own; only `_render("state_pixels")` is
    replaced. It issues the same pygame drawing calls with bit-identical coordinates, minus the
    ones that cannot change the observation, and:
    - transforms road, grass and car polygons with NumPy in the exact arithmetic of
      `Vector2.rotate_rad` (float64) and Box2D's `b2Transform * b2Vec2` (float32);
    - skips polygons that cannot reach the rows the observation depends on (the dashboard
      overwrites the rest) and replaces the background polygon by a fill when it covers the
      whole window;
    - reuses surfaces and the font object instead of creating them every step, and fills them
      through NumPy: SDL's `Surface.fill` uses non-temporal stores, which evict the surface
      from the caches just before the polygons and smoothscale touch it again;
    - replaces flip + smoothscale(1000x800 -> 96x96) by smoothscale's own two passes: the
      horizontal pass (row-wise, so it commutes with the vertical flip) on the unflipped road
      rows and on the dashboard rows separately, then the vertical pass on the stacked result.
    Frames whose indicator bars would reach above the dashboard, and other render modes, use
    the stock renderer.
    """

    _GRASS = _grass_polys()

    def __init__(self, *args, **kwargs):
        _check_gym_version(gym.__version__)
        super().__init__(*args, **kwargs)
        self._track_src = None  # the road_poly list the cached arrays were built from
        self._track = None  # (xy (N, 4, 2), centres (N, 2), radii (N,), road colours)
        self._car_src = None  # the Car the cached vertex arrays were built from
        self._car = None
        self._font = None
        self._surfs = None
        self._probe = None
        self.fast_frames = 0  # frames rendered by the fast path
        self.stock_frames = 0  # frames that fell back to the stock renderer
        self.draw = True  # False: `step` keeps the last observation instead of drawing one
        self.undrawn_frames = 0  # steps that kept it

    # ----- caches

    def _surfaces(self):
        if self._surfs is None:
            road = pygame.Surface((WINDOW_W, WINDOW_H))
            dash = pygame.Surface((WINDOW_W, WINDOW_H))
            cols = pygame.Surface((STATE_W, WINDOW_H))
            self._surfs = {
                "road": road,  # stock's surface before the flip
                "road_rows": road.subsurface(pygame.Rect(0, _DASH_H, WINDOW_W, _ROAD_H)),
                "dash": dash,  # stock's surface after the flip; only its last _DASH_H rows
                "dash_rows": dash.subsurface(pygame.Rect(0, _ROAD_H, WINDOW_W, _DASH_H)),
                "road_x": pygame.Surface((STATE_W, _ROAD_H)),
                "cols": cols,  # horizontally shrunk rows of stock's flipped surface
                "dash_x": cols.subsurface(pygame.Rect(0, _ROAD_H, STATE_W, _DASH_H)),
                "out": pygame.Surface((STATE_W, STATE_H)),
            }
        return self._surfs

    def _mapped(self, color) -> int:
        """The pixel value gfxdraw writes for `color` (it truncates float components)."""
        if self._probe is None:
            self._probe = pygame.Surface((4, 4))
        gfxdraw.filled_polygon(self._probe, [(0, 0), (3, 0), (3, 3), (0, 3)], color)
        return self._probe.get_at_mapped((1, 1))

    def _track_arrays(self):
        """Grass then road polygons (N, 4, 2), their bounding circles, and the road colours."""
        if self._track_src is not self.road_poly:
            road = np.array(
                [[(p[0], p[1]) for p in poly] for poly, _ in self.road_poly], dtype=np.float64
            ).reshape(-1, 4, 2)
            xy = np.concatenate([self._GRASS, road], axis=0)
            centres = xy.mean(axis=1)
            radii = np.sqrt(((xy - centres[:, None]) ** 2).sum(-1)).max(axis=1) * 1.001 + 1e-3
            colors = [color for _, color in self.road_poly]
            self._track = (xy, centres, radii, colors)
            self._track_src = self.road_poly
        return self._track

    def _car_arrays(self):
        """Local vertices (V, 2) float32 of `car.drawlist`'s fixtures, in drawing order, with
        their body index (V,), per-polygon (body, size, colour), and the wheels' body indices."""
        if self._car_src is not self.car:
            local, body_of, polys, wheels = [], [], [], []
            for k, obj in enumerate(self.car.drawlist):
                color = [int(c * 255) for c in obj.color]
                for f in obj.fixtures:
                    v = np.array(f.shape.vertices, dtype=np.float32)
                    local.append(v)
                    body_of += [k] * len(v)
                    polys.append((k, len(v), color))
                if "phase" in obj.__dict__:
                    wheels.append(k)
            self._car = (np.concatenate(local), np.array(body_of), polys, wheels)
            self._car_src = self.car
        return self._car

    # ----- rendering

    def _indicator_values(self) -> tuple[float, list[float], float, float]:
        """(true speed, wheel omegas, front-left wheel joint angle, hull angular velocity)."""
        car = self.car
        v = car.hull.linearVelocity
        true_speed = math.sqrt(v[0] * v[0] + v[1] * v[1])  # == stock's np.sqrt(np.square...)
        omegas = [w.omega for w in car.wheels]
        return true_speed, omegas, car.wheels[0].joint.angle, car.hull.angularVelocity

    def observe(self) -> np.ndarray:
        """The observation of the last `step`, drawn now even if `draw` was off: `step` draws
        after the physics and only then charges the frame's -0.1 to the score the dashboard
        shows, so the score is put back to its value at that point for the drawing."""
        score, self.reward = self.reward, self._drawn_score
        try:
            self.state = self._render("state_pixels")
        finally:
            self.reward = score
        return self.state

    def _render(self, mode: str):
        if mode == "state_pixels":
            self._drawn_score = getattr(self, "reward", 0.0)
            if not self.draw and getattr(self, "state", None) is not None:
                self.undrawn_frames += 1
                return self.state
        if mode != "state_pixels" or "t" not in self.__dict__:
            return super()._render(mode)
        ind = self._indicator_values()
        if max(0.02 * ind[0], *(0.01 * w for w in ind[1])) >= 3.9:
            # a vertical bar would reach above the dashboard rows (its top is at
            # WINDOW_H - h * (1 + val) with h = 20 px): draw this frame the stock way
            self.stock_frames += 1
            return super()._render(mode)
        self.fast_frames += 1
        pygame.font.init()
        if self.clock is None:
            self.clock = pygame.time.Clock()
        s = self._surfaces()

        angle = -self.car.hull.angle
        zoom = 0.1 * SCALE * max(1 - self.t, 0) + ZOOM * SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (WINDOW_W / 2 + trans[0], WINDOW_H / 4 + trans[1])

        self.surf = s["road"]
        self._draw_road_fast(s["road"], s["road_rows"], zoom, trans, angle)
        self._draw_car_fast(s["road"], zoom, trans, angle)
        pygame.transform.smoothscale(s["road_rows"], (STATE_W, _ROAD_H), s["road_x"])

        self._draw_dashboard(s["dash"], s["dash_rows"], ind)
        pygame.transform.smoothscale(s["dash_rows"], (STATE_W, _DASH_H), s["dash_x"])

        cols = pygame.surfarray.pixels2d(s["cols"])  # (x, y) view
        cols[:, :_ROAD_H] = pygame.surfarray.pixels2d(s["road_x"])[:, ::-1]
        del cols  # release the surface lock
        pygame.transform.smoothscale(s["cols"], (STATE_W, STATE_H), s["out"])
        # the bytes of stock's np.transpose(pixels3d(out), (1, 0, 2)), as a fresh array
        rgb = np.frombuffer(pygame.image.tobytes(s["out"], "RGB"), dtype=np.uint8)
        return rgb.reshape(STATE_H, STATE_W, 3).copy()

    def _draw_road_fast(self, surf, rows, zoom, trans, angle):
        """`CarRacing._render_road` minus the draws that cannot reach `rows`."""
        b = PLAYFIELD
        x, y = self.car.hull.position
        # the car sits at (WINDOW_W / 2, WINDOW_H / 4); the farthest window corner is < 782 px away
        deep_inside = max(abs(x), abs(y)) <= b - 800.0 / zoom
        if not deep_inside:
            field = [(b, b), (b, -b), (-b, -b), (-b, b)]
            corners = [pygame.math.Vector2(c).rotate_rad(angle) for c in field]
            corners = [(c[0] * zoom + trans[0], c[1] * zoom + trans[1]) for c in corners]
        if deep_inside or _covers_window(corners):
            # the background polygon fills every pixel and its outline lies off-surface
            _fill(rows, self._mapped(self.bg_color))
        else:
            surf.fill((0, 0, 0))
            gfxdraw.aapolygon(surf, corners, self.bg_color)
            gfxdraw.filled_polygon(surf, corners, self.bg_color)

        xy, centres, radii, road_colors = self._track_arrays()
        # candidates: bounding circle reaches the road rows (cheap, conservative)
        cx, cy = rotate_rad(centres, angle)
        cx = cx * zoom + trans[0]
        cy = cy * zoom + trans[1]
        reach = radii * zoom + (_MARGIN + 1.0)
        cand = np.flatnonzero(
            (cx >= -reach)
            & (cx <= WINDOW_W + reach)
            & (cy >= _DASH_H - reach)
            & (cy <= WINDOW_H + reach)
        )
        rx, ry = rotate_rad(xy[cand], angle)
        px = rx * zoom + trans[0]
        py = ry * zoom + trans[1]
        # stock's own culling test (a vertex inside the enlarged window) ...
        m = MAX_SHAPE_DIM
        inside = ((px >= -m) & (px <= WINDOW_W + m) & (py >= -m) & (py <= WINDOW_H + m)).any(1)
        # ... and the exact bounding box against the road rows
        touch = (
            (px.max(1) >= -_MARGIN)
            & (px.min(1) <= WINDOW_W + _MARGIN)
            & (py.max(1) >= _DASH_H - _MARGIN)
            & (py.min(1) <= WINDOW_H + _MARGIN)
        )
        keep = np.flatnonzero(inside & touch)
        pts = np.stack([px[keep], py[keep]], axis=-1).tolist()
        ids = cand[keep].tolist()
        n_grass = len(self._GRASS)
        n_road = sum(i >= n_grass for i in ids)
        colors = [self.grass_color] * (len(ids) - n_road)  # grass first, then road
        if n_road:
            # tile colours change in place when visited; stock converts with int() (truncation)
            road = np.array([road_colors[i - n_grass] for i in ids[len(colors) :]])
            colors += road.astype(np.int64).tolist()
        aapolygon, filled_polygon = gfxdraw.aapolygon, gfxdraw.filled_polygon
        for p, color in zip(pts, colors, strict=True):
            aapolygon(surf, p, color)
            filled_polygon(surf, p, color)

    def _draw_car_fast(self, surf, zoom, trans, angle):
        """`Car.draw(..., draw_particles=False)` with vectorised transforms."""
        local, body_of, polys, wheels = self._car_arrays()
        drawlist = self.car.drawlist
        rots = []
        for obj in drawlist:
            t = obj.transform
            q, p = t.q, t.position
            rots.append((q.c, q.s, p[0], p[1]))
        # each wheel's white stripe, in wheel coordinates (as Car.draw computes it)
        white, white_of, white_drawn = [], [], {}
        for k in wheels:
            phase = drawlist[k].phase
            a1, a2 = phase, phase + 1.2
            s1, s2 = math.sin(a1), math.sin(a2)
            c1, c2 = math.cos(a1), math.cos(a2)
            if s1 > 0 and s2 > 0:
                continue
            if s1 > 0:
                c1 = np.sign(c1)
            if s2 > 0:
                c2 = np.sign(c2)
            white_drawn[k] = len(white_of)
            white += [
                (-WHEEL_W * SIZE, +WHEEL_R * c1 * SIZE),
                (+WHEEL_W * SIZE, +WHEEL_R * c1 * SIZE),
                (+WHEEL_W * SIZE, +WHEEL_R * c2 * SIZE),
                (-WHEEL_W * SIZE, +WHEEL_R * c2 * SIZE),
            ]
            white_of += [k] * 4
        if white:
            local = np.concatenate([local, np.array(white, dtype=np.float32)])
            body_of = np.concatenate([body_of, np.array(white_of)])
        world = _b2_mul(np.array(rots, dtype=np.float32)[body_of], local).astype(np.float64)
        rx, ry = rotate_rad(world, angle)
        pts = np.stack([rx * zoom + trans[0], ry * zoom + trans[1]], axis=-1).tolist()
        n_body = len(local) - len(white_of)
        start = 0
        for i, (k, n, color) in enumerate(polys):
            pygame.draw.polygon(surf, color=color, points=pts[start : start + n])
            start += n
            last_of_body = i + 1 == len(polys) or polys[i + 1][0] != k
            if last_of_body and k in white_drawn:
                w = n_body + white_drawn[k]
                pygame.draw.polygon(surf, color=WHEEL_WHITE, points=pts[w : w + 4])

    def _draw_dashboard(self, dash, dash_rows, ind):
        """Stock's `_render_indicators` and reward text on the flipped surface's dashboard rows.

        Same polygons and calls, except the black background polygon, which covers exactly
        `dash_rows`, is a fill.
        """
        W, H = WINDOW_W, WINDOW_H
        s = W / 40.0
        h = H / 40.0
        _fill(dash_rows, 0)

        def vertical_ind(place, val):
            return [
                (place * s, H - (h + h * val)),
                ((place + 1) * s, H - (h + h * val)),
                ((place + 1) * s, H - h),
                ((place + 0) * s, H - h),
            ]

        def horiz_ind(place, val):
            return [
                ((place + 0) * s, H - 4 * h),
                ((place + val) * s, H - 4 * h),
                ((place + val) * s, H - 2 * h),
                ((place + 0) * s, H - 2 * h),
            ]

        true_speed, omegas, joint_angle, angular_velocity = ind
        bars = [
            (true_speed, vertical_ind(5, 0.02 * true_speed), (255, 255, 255)),
            (omegas[0], vertical_ind(7, 0.01 * omegas[0]), (0, 0, 255)),
            (omegas[1], vertical_ind(8, 0.01 * omegas[1]), (0, 0, 255)),
            (omegas[2], vertical_ind(9, 0.01 * omegas[2]), (51, 0, 255)),
            (omegas[3], vertical_ind(10, 0.01 * omegas[3]), (51, 0, 255)),
            (joint_angle, horiz_ind(20, -10.0 * joint_angle), (0, 255, 0)),
            (angular_velocity, horiz_ind(30, -0.8 * angular_velocity), (255, 0, 0)),
        ]
        for value, points, color in bars:
            if abs(value) > 1e-4:
                pygame.draw.polygon(dash, points=points, color=color)

        if self._font is None:
            self._font = pygame.font.Font(pygame.font.get_default_font(), 42)
        text = self._font.render(f"{self.reward:04}", True, (255, 255, 255), (0, 0, 0))
        text_rect = text.get_rect()
        text_rect.center = (60, WINDOW_H - WINDOW_H * 2.5 / 40.0)
        dash.blit(text, text_rect)
