"""The 13 synthetic ShapeNet-like category families, each assembled from primitives with random
proportions and optional parts (a chair has a seat, legs and a back; an airplane a fuselage, wings and
a tail), so that categories differ in shape the way ShapeNet's do.

World frame as in ShapeNet/NMR: +y up; vehicles and seats face -z. ``make_shape(name, rng)`` returns one
object normalised to ShapeNet's convention (bounding box centred, longest side 1).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from recon.datamodules.primitives import (
    ColoredMesh,
    box,
    circle,
    cone,
    cylinder,
    ellipsoid,
    loft,
    merge,
    normalize,
    rotation,
)

Parts = list[ColoredMesh]
WOOD, METAL, DARK, WHITE = (0.55, 0.36, 0.2), (0.62, 0.63, 0.66), (0.12, 0.12, 0.14), (0.9, 0.9, 0.88)


def _color(rng: np.random.Generator, base: tuple[float, float, float], spread: float = 0.1) -> np.ndarray:
    return np.clip(np.asarray(base) + rng.uniform(-spread, spread, 3), 0.02, 0.98)


def _bright(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.15, 0.95, 3)


def _legs(rng: np.random.Generator, width: float, depth: float, height: float, color: np.ndarray,
          inset: float = 0.03, round_legs: bool | None = None) -> Parts:
    """Four legs under a rectangle of width × depth, standing on y = 0."""
    thickness = rng.uniform(0.025, 0.05)
    round_legs = rng.random() < 0.4 if round_legs is None else round_legs
    corners = [(sx * (width / 2 - inset), sz * (depth / 2 - inset)) for sx in (-1, 1) for sz in (-1, 1)]
    if round_legs:
        return [cylinder(thickness / 2, height, color, (x, height / 2, z), segments=8) for x, z in corners]
    return [box((thickness, height, thickness), color, (x, height / 2, z)) for x, z in corners]


def airplane(rng: np.random.Generator) -> Parts:
    length, radius = rng.uniform(0.8, 1.2), rng.uniform(0.05, 0.09)
    body, accent = _color(rng, WHITE, 0.1), _bright(rng)
    span, chord, sweep = rng.uniform(0.7, 1.3), rng.uniform(0.12, 0.25), rng.uniform(0.0, 35.0)
    wing_z = rng.uniform(-0.1, 0.1)
    parts = [ellipsoid((radius, radius, length / 2), body)]
    for side in (-1, 1):
        turn = rotation("y", -side * sweep)  # tips swept back (+z)
        parts.append(box((span / 2, 0.02, chord), body, (side * span / 4, -radius * 0.3, wing_z), turn))
        parts.append(box((span / 6, 0.015, chord * 0.5), accent, (side * span / 12, radius * 0.2, length * 0.42)))
        for k in range(int(rng.integers(0, 3))):  # engines under the wings
            x = side * span * (0.15 + 0.15 * k)
            parts.append(cylinder(radius * 0.45, chord * 0.9, accent, (x, -radius * 1.1, wing_z - 0.05), axis="z"))
    fin = rng.uniform(0.1, 0.22)
    parts.append(box((0.02, fin, chord * 0.7), accent, (0.0, radius + fin / 2 - 0.02, length * 0.4)))
    return parts


def bench(rng: np.random.Generator) -> Parts:
    width, depth, height = rng.uniform(0.9, 1.4), rng.uniform(0.28, 0.45), rng.uniform(0.35, 0.5)
    wood, frame = _color(rng, WOOD), _color(rng, METAL if rng.random() < 0.5 else WOOD)
    parts = [box((width, 0.04, depth), wood, (0.0, height, 0.0))]
    if rng.random() < 0.5:
        parts += [box((0.04, height, depth * 0.9), frame, (sx * (width / 2 - 0.06), height / 2, 0.0)) for sx in (-1, 1)]
    else:
        parts += _legs(rng, width, depth, height, frame)
    if rng.random() < 0.7:
        back = rng.uniform(0.25, 0.45)
        parts.append(box((width, back, 0.03), wood, (0.0, height + back / 2 + 0.05, depth / 2), rotation("x", -10)))
    return parts


def cabinet(rng: np.random.Generator) -> Parts:
    width, height, depth = rng.uniform(0.4, 1.0), rng.uniform(0.5, 1.2), rng.uniform(0.3, 0.6)
    wood, knob = _color(rng, WOOD, 0.2), _color(rng, METAL)
    parts = [box((width, height, depth), wood, (0.0, height / 2 + 0.05, 0.0)),
             box((width * 0.95, 0.05, depth * 0.95), _color(rng, DARK), (0.0, 0.025, 0.0))]
    drawers = int(rng.integers(1, 5))
    for k in range(drawers):
        y = 0.05 + height * (k + 0.5) / drawers
        parts.append(box((width * 0.9, height / drawers * 0.85, 0.02), _color(rng, WOOD, 0.2), (0.0, y, -depth / 2)))
        parts.append(box((width * 0.2, 0.02, 0.03), knob, (0.0, y, -depth / 2 - 0.02)))
    return parts


def car(rng: np.random.Generator) -> Parts:
    length, width, height = rng.uniform(0.9, 1.1), rng.uniform(0.38, 0.5), rng.uniform(0.12, 0.2)
    wheel = rng.uniform(0.07, 0.11)
    paint, glass = _bright(rng), _color(rng, DARK, 0.05)
    parts = [box((width, height, length), paint, (0.0, wheel + height / 2, 0.0))]
    cabin_l, cabin_h = length * rng.uniform(0.4, 0.65), rng.uniform(0.1, 0.18)
    lower = np.array([[-width / 2, -cabin_l / 2], [width / 2, -cabin_l / 2], [width / 2, cabin_l / 2], [-width / 2, cabin_l / 2]])
    upper = lower * np.array([0.85, rng.uniform(0.5, 0.8)])
    parts.append(loft(lower * 0.95, upper, cabin_h, glass, (0.0, wheel + height + cabin_h / 2, rng.uniform(-0.05, 0.1))))
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts.append(cylinder(wheel, 0.07, _color(rng, DARK, 0.03),
                                  (sx * (width / 2 - 0.02), wheel, sz * length * 0.32), axis="x", segments=12))
    return parts


def chair(rng: np.random.Generator) -> Parts:
    width, depth, height = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.55), rng.uniform(0.38, 0.5)
    seat_color, frame = _bright(rng), _color(rng, WOOD if rng.random() < 0.6 else DARK)
    seat_t = rng.uniform(0.03, 0.08)
    parts = [box((width, seat_t, depth), seat_color, (0.0, height, 0.0))]
    if rng.random() < 0.25:  # swivel chair: column and a star base
        parts.append(cylinder(0.03, height, frame, (0.0, height / 2, 0.0), segments=8))
        parts += [box((0.35, 0.03, 0.05), frame, (0.0, 0.03, 0.0), rotation("y", a)) for a in (0, 72, 144)]
    else:
        parts += _legs(rng, width, depth, height - seat_t / 2, frame)
    back = rng.uniform(0.35, 0.65)
    tilt = rotation("x", -rng.uniform(0.0, 15.0))
    parts.append(box((width * rng.uniform(0.8, 1.0), back, 0.04), seat_color, (0.0, height + back / 2, depth / 2 - 0.02), tilt))
    if rng.random() < 0.35:
        parts += [box((0.05, 0.04, depth * 0.9), frame, (sx * width / 2, height + 0.22, 0.0)) for sx in (-1, 1)]
        parts += [box((0.03, 0.22, 0.03), frame, (sx * width / 2, height + 0.11, -depth * 0.35)) for sx in (-1, 1)]
    return parts


def display(rng: np.random.Generator) -> Parts:
    width, height, thick = rng.uniform(0.6, 1.0), rng.uniform(0.35, 0.6), rng.uniform(0.03, 0.07)
    case, screen = _color(rng, DARK, 0.1), _color(rng, (0.1, 0.15, 0.3), 0.08)
    neck = rng.uniform(0.08, 0.25)
    parts = [box((width, height, thick), case, (0.0, neck + height / 2, 0.0)),
             box((width * 0.92, height * 0.88, 0.01), screen, (0.0, neck + height / 2, -thick / 2 - 0.004)),
             box((0.06, neck + 0.05, 0.04), case, (0.0, (neck + 0.05) / 2, thick))]
    if rng.random() < 0.5:
        parts.append(box((width * rng.uniform(0.3, 0.5), 0.03, 0.22), case, (0.0, 0.015, thick)))
    else:
        parts.append(cylinder(rng.uniform(0.1, 0.16), 0.03, case, (0.0, 0.015, thick)))
    return parts


def lamp(rng: np.random.Generator) -> Parts:
    base_r, pole = rng.uniform(0.1, 0.2), rng.uniform(0.4, 1.0)
    metal, shade = _color(rng, METAL, 0.2), _bright(rng)
    parts = [cylinder(base_r, 0.04, metal, (0.0, 0.02, 0.0))]
    if rng.random() < 0.5:  # standing lamp: straight pole, shade on top
        parts.append(cylinder(0.015, pole, metal, (0.0, pole / 2, 0.0), segments=8))
        r = rng.uniform(0.12, 0.25)
        parts.append(cylinder(r, r * rng.uniform(0.6, 1.0), shade, (0.0, pole, 0.0), top_radius=r * rng.uniform(0.3, 0.8)))
    else:  # desk lamp: tilted arm, cone head pointing down and to one side (not mirror-symmetric)
        lean = rng.uniform(15.0, 40.0) * rng.choice([-1, 1])
        arm = rotation("z", lean)
        top = arm @ np.array([0.0, pole, 0.0])
        parts.append(cylinder(0.015, pole, metal, arm @ np.array([0.0, pole / 2, 0.0]), segments=8, turn=arm))
        parts.append(cone(rng.uniform(0.08, 0.15), 0.15, shade, top + np.array([0.0, -0.05, 0.0]), segments=12))
    return parts


def loudspeaker(rng: np.random.Generator) -> Parts:
    width, height, depth = rng.uniform(0.3, 0.55), rng.uniform(0.45, 1.0), rng.uniform(0.3, 0.5)
    case, cone_color = _color(rng, DARK if rng.random() < 0.6 else WOOD, 0.1), _color(rng, (0.3, 0.3, 0.32), 0.1)
    parts = [box((width, height, depth), case, (0.0, height / 2, 0.0))]
    drivers = int(rng.integers(1, 4))
    for k in range(drivers):
        r = min(width * 0.4, height / drivers * 0.4) * rng.uniform(0.6, 1.0)
        y = height * (drivers - k - 0.5) / drivers
        parts.append(cylinder(r, 0.03, cone_color, (0.0, y, -depth / 2 - 0.01), axis="z", segments=14))
    return parts


def rifle(rng: np.random.Generator) -> Parts:
    barrel, receiver = rng.uniform(0.35, 0.55), rng.uniform(0.2, 0.3)
    metal, stock = _color(rng, DARK, 0.08), _color(rng, WOOD if rng.random() < 0.5 else DARK, 0.1)
    parts = [cylinder(0.012, barrel, metal, (0.0, 0.0, -receiver / 2 - barrel / 2), axis="z", segments=8),
             box((0.04, 0.07, receiver), metal, (0.0, 0.0, 0.0)),
             box((0.04, rng.uniform(0.08, 0.12), 0.3), stock, (0.0, -0.03, receiver / 2 + 0.14), rotation("x", 8.0)),
             box((0.03, 0.1, 0.04), stock, (0.0, -0.07, receiver * 0.3), rotation("x", -15.0))]
    if rng.random() < 0.7:
        parts.append(box((0.025, rng.uniform(0.08, 0.14), 0.05), metal, (0.0, -0.08, -receiver * 0.2)))
    if rng.random() < 0.5:
        parts.append(cylinder(0.02, receiver * 0.9, metal, (0.0, 0.06, 0.0), axis="z", segments=10))
    return parts


def sofa(rng: np.random.Generator) -> Parts:
    width, depth, seat = rng.uniform(1.0, 1.8), rng.uniform(0.55, 0.8), rng.uniform(0.3, 0.42)
    fabric, legs = _bright(rng), _color(rng, DARK)
    parts = [box((width, seat - 0.08, depth), fabric, (0.0, (seat + 0.08) / 2, 0.0))]
    parts += _legs(rng, width, depth, 0.08, legs, inset=0.05, round_legs=True)
    back = rng.uniform(0.3, 0.5)
    parts.append(box((width, back, 0.16), fabric, (0.0, seat + back / 2 - 0.02, depth / 2 - 0.08)))
    arm_h = rng.uniform(0.1, 0.25)
    if rng.random() < 0.85:
        parts += [box((0.14, arm_h, depth), fabric, (sx * (width / 2 - 0.07), seat + arm_h / 2 - 0.02, 0.0)) for sx in (-1, 1)]
    return parts


def table(rng: np.random.Generator) -> Parts:
    width, depth, height = rng.uniform(0.7, 1.6), rng.uniform(0.5, 1.0), rng.uniform(0.5, 0.8)
    top, legs = _color(rng, WOOD, 0.2), _color(rng, WOOD if rng.random() < 0.5 else METAL, 0.15)
    if rng.random() < 0.3:  # round table on a pedestal
        r = min(width, depth) / 2
        return [cylinder(r, 0.04, top, (0.0, height, 0.0), segments=20),
                cylinder(0.04, height, legs, (0.0, height / 2, 0.0), segments=10),
                cylinder(r * 0.5, 0.04, legs, (0.0, 0.02, 0.0), segments=14)]
    return [box((width, 0.04, depth), top, (0.0, height, 0.0))] + _legs(rng, width, depth, height - 0.02, legs)


def telephone(rng: np.random.Generator) -> Parts:
    width, height, thick = rng.uniform(0.4, 0.55), rng.uniform(0.75, 1.0), rng.uniform(0.04, 0.09)
    case, screen = _color(rng, DARK if rng.random() < 0.6 else WHITE, 0.1), _color(rng, (0.08, 0.1, 0.2), 0.05)
    outline = circle(width / 2, height / 2, 24)
    outline = np.sign(outline) * np.abs(outline) ** 0.6 * np.array([width / 2, height / 2]) ** 0.4  # squircle
    parts = [loft(outline, outline, thick, case, turn=rotation("x", 90.0))]
    if rng.random() < 0.6:
        parts.append(box((width * 0.88, height * 0.75, 0.01), screen, (0.0, height * 0.03, -thick / 2 - 0.003)))
    else:  # keypad phone: small screen and a grid of keys
        parts.append(box((width * 0.7, height * 0.3, 0.01), screen, (0.0, height * 0.22, -thick / 2 - 0.003)))
        keys = [(x, y) for x in (-1, 0, 1) for y in range(4)]
        parts += [box((0.08, 0.05, 0.02), _color(rng, METAL), (x * width * 0.25, -0.05 - y * height * 0.09, -thick / 2 - 0.005))
                  for x, y in keys]
    return parts


def watercraft(rng: np.random.Generator) -> Parts:
    length, width, depth = rng.uniform(0.9, 1.2), rng.uniform(0.2, 0.35), rng.uniform(0.1, 0.2)
    hull, deck = _bright(rng), _color(rng, WHITE, 0.1)
    bow = rng.uniform(0.15, 0.35) * length
    deck_outline = np.array([[0.0, -length / 2], [width / 2, -length / 2 + bow], [width / 2, length / 2],
                             [-width / 2, length / 2], [-width / 2, -length / 2 + bow]])
    parts = [loft(deck_outline * np.array([0.55, 0.9]), deck_outline, depth, hull, (0.0, depth / 2, 0.0))]
    if rng.random() < 0.5:  # motor boat: cabin blocks
        for k in range(int(rng.integers(1, 3))):
            size = (width * 0.7 * 0.8**k, rng.uniform(0.06, 0.12), length * rng.uniform(0.2, 0.35) * 0.8**k)
            parts.append(box(size, deck, (0.0, depth + size[1] * (k + 0.5), length * 0.1)))
    else:  # sail boat: mast and a thin triangular sail
        mast = rng.uniform(0.5, 0.9)
        parts.append(cylinder(0.012, mast, _color(rng, METAL), (0.0, depth + mast / 2, -length * 0.05), segments=8))
        # the sail: a thin triangle in the yz plane, outline given as (height, z) then centred on its centroid
        height_z = np.array([[0.0, 0.0], [mast * 0.85, 0.0], [0.0, length * 0.4]])
        centroid = height_z.mean(0)
        outline = (height_z - centroid) * np.array([-1.0, 1.0])  # local x maps to world -y under the turn
        parts.append(loft(outline, outline, 0.01, deck, (0.0, depth + 0.02 + centroid[0], -length * 0.05 + centroid[1]),
                          turn=rotation("z", -90.0)))
    return parts


FAMILIES: dict[str, Callable[[np.random.Generator], Parts]] = {
    "airplane": airplane, "bench": bench, "cabinet": cabinet, "car": car, "chair": chair, "display": display,
    "lamp": lamp, "loudspeaker": loudspeaker, "rifle": rifle, "sofa": sofa, "table": table,
    "telephone": telephone, "watercraft": watercraft,
}


def make_shape(category: str, rng: np.random.Generator) -> ColoredMesh:
    """One random object of ``category`` (a name of ``FAMILIES``), normalised into [-0.5, 0.5]³."""
    if category not in FAMILIES:
        raise ValueError(f"no synthetic family for category {category!r}; expected one of {sorted(FAMILIES)}")
    return normalize(merge(FAMILIES[category](rng)))
