"""Procedural "shapes10" image classification dataset (pure numpy, no downloads).

Ten classes of geometric shapes (see ``CLASS_NAMES``) are rendered as 32x32 RGB
images. The generator is calibrated to "medium" difficulty: a small CNN reaches
roughly 80-95 % clean test accuracy after a few CPU minutes of training, so that
training methods can still differ (toy data on which every model reaches ~100 %
in seconds would hide those differences).

Difficulty comes from:

* geometry: radius 6-11 px, centre uniform in [8, 24]^2, any rotation, and
  +-12 % independent jitter of each of a shape's own parameters (side lengths,
  radii, offsets);
* appearance: a random background colour with a linear brightness gradient in
  a random direction, a random foreground colour at least ``_MIN_CONTRAST``
  away from the background, an 8 % multiplicative brightness texture on the
  shape and Gaussian pixel noise;
* clutter: 1-3 thin line segments and 1-3 small discs/squares of random colour,
  drawn below the shape.

Shapes are defined by implicit "inside" tests evaluated on a 2x2 supersampled
grid (64x64 sub-pixel centres) and averaged to 32x32 coverage, which gives
anti-aliased edges.

Determinism: the output depends only on ``(num_examples, seed)`` and is
bit-identical across machines. All randomness comes from numpy's PCG64
(``np.random.default_rng``), all arithmetic is float64 until the final
quantization, and no transcendental function (sin, cos, exp, atan2, ...) is
evaluated by this module: rotations are random unit vectors obtained by
rejection sampling and normalisation (``sqrt`` is correctly rounded in IEEE
754), the star is a union of convex kites tested with half-planes, and line /
disc anti-aliasing only uses ``sqrt``. (numpy's Gaussian sampler calls
``exp``/``log1p`` for a tiny fraction of tail draws; a 1-ulp difference there
would not survive 8-bit quantization in practice.) Per-sample parameters are drawn for all
samples up front, and per-pixel noise comes from fixed blocks of samples with
their own seed, so results do not depend on the rendering chunk size.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "rhombus",
    "star",
    "ellipse",
    "crescent",
    "bar",
)
IMAGE_SHAPE = (32, 32, 3)

_SIZE = IMAGE_SHAPE[0]
_NUM_CLASSES = len(CLASS_NAMES)

# Geometry of the main shape.
_CENTRE_RANGE = (8.0, 24.0)
_RADIUS_RANGE = (6.0, 11.0)
_JITTER = 0.12
_NUM_JITTER = 3  # Largest number of free parameters of any shape.

# Appearance.
_GRADIENT_AMPLITUDE = 0.25  # Brightness offset at the image edge (centre: 0).
_MIN_CONTRAST = 0.4  # Minimum RGB distance foreground <-> background, [0, 1] scale.
_TEXTURE_STD = 0.08
_NOISE_STD = 0.05

# Clutter drawn below the shape.
_MAX_CLUTTER = 3  # Both lines and blobs: between 1 and this many per image.
_LINE_LENGTH_RANGE = (4.0, 14.0)
_LINE_HALF_WIDTH = 0.5
_BLOB_RADIUS_RANGE = (1.0, 3.0)


@dataclasses.dataclass(frozen=True)
class Style:
    """How hard the images are to recognise: the geometry, appearance and clutter knobs.

    ``MEDIUM`` (the module constants above) is shapes10 itself; ``EASY`` and ``HARD`` are
    variants for testing anything tuned on shapes10 on other data: larger, cleaner,
    higher-contrast shapes without clutter, or smaller, fainter shapes with more jitter,
    noise and clutter.
    """

    radius_range: tuple[float, float] = _RADIUS_RANGE
    jitter: float = _JITTER
    gradient_amplitude: float = _GRADIENT_AMPLITUDE
    min_contrast: float = _MIN_CONTRAST
    texture_std: float = _TEXTURE_STD
    noise_std: float = _NOISE_STD
    clutter: tuple[int, int] = (1, _MAX_CLUTTER)  # lines and blobs per image: [low, high]


# fmt: off
STYLES = {
    "easy": Style(radius_range=(9.0, 12.0), jitter=0.05, gradient_amplitude=0.1, min_contrast=0.6,
                  texture_std=0.03, noise_std=0.02, clutter=(0, 0)),
    "medium": Style(),
    "hard": Style(radius_range=(5.0, 10.0), jitter=0.2, gradient_amplitude=0.35, min_contrast=0.25,
                  texture_std=0.12, noise_std=0.08, clutter=(2, 5)),
}
# fmt: on

# Rendering: chunk size bounds memory; the noise block size fixes how per-pixel
# random numbers are seeded and must never change (it is part of the output).
_CHUNK_SIZE = 500
_NOISE_BLOCK = 100
_PIXEL_NORMALS = _SIZE * _SIZE * 4  # Texture (1 channel) + noise (3 channels).

_PIXEL_CENTRES = np.arange(_SIZE) + 0.5
_SUBPIXEL_CENTRES = (np.arange(2 * _SIZE) + 0.5) / 2.0

# Exact (sqrt-only) trigonometry of the pentagon, for the star and triangle.
_SQRT5 = math.sqrt(5.0)
_COS36, _SIN36 = (1.0 + _SQRT5) / 4.0, math.sqrt(10.0 - 2.0 * _SQRT5) / 4.0
_COS72, _SIN72 = (_SQRT5 - 1.0) / 4.0, math.sqrt(10.0 + 2.0 * _SQRT5) / 4.0
_SQRT3_2 = math.sqrt(3.0) / 2.0
# Star tip directions (angles 0, 72, ..., 288 deg) and notch directions
# (36, 108, ..., 324 deg), counter-clockwise.
_STAR_TIPS = np.array(
    [(1.0, 0.0), (_COS72, _SIN72), (-_COS36, _SIN36), (-_COS36, -_SIN36), (_COS72, -_SIN72)]
)
_STAR_NOTCHES = np.array(
    [(_COS36, _SIN36), (-_COS72, _SIN72), (-1.0, 0.0), (-_COS72, -_SIN72), (_COS36, -_SIN36)]
)
# Outward unit normals of an equilateral triangle's edges.
_TRIANGLE_NORMALS = ((0.0, 1.0), (-_SQRT3_2, -0.5), (_SQRT3_2, -0.5))


@dataclasses.dataclass(frozen=True)
class _Params:
    """Random parameters of a batch of images; the first axis indexes images.

    Coordinates are in pixels with (0, 0) at the top-left image corner, x to the
    right and y downwards. Colours are RGB in [0, 1].
    """

    labels: np.ndarray  # [N] int32.
    centre: np.ndarray  # [N, 2] shape centre (x, y).
    radius: np.ndarray  # [N] nominal shape radius.
    rotation: np.ndarray  # [N, 2] unit vector (cos, sin) of the rotation angle.
    jitter: np.ndarray  # [N, _NUM_JITTER] multiplicative parameter jitter.
    background: np.ndarray  # [N, 3] background colour.
    gradient: np.ndarray  # [N, 2] brightness gradient vector (per half image).
    foreground: np.ndarray  # [N, 3] shape colour.
    line_start: np.ndarray  # [N, _MAX_CLUTTER, 2].
    line_direction: np.ndarray  # [N, _MAX_CLUTTER, 2] unit vectors.
    line_length: np.ndarray  # [N, _MAX_CLUTTER].
    line_colour: np.ndarray  # [N, _MAX_CLUTTER, 3].
    line_active: np.ndarray  # [N, _MAX_CLUTTER] bool.
    blob_centre: np.ndarray  # [N, _MAX_CLUTTER, 2].
    blob_radius: np.ndarray  # [N, _MAX_CLUTTER].
    blob_is_disc: np.ndarray  # [N, _MAX_CLUTTER] bool (else axis-aligned square).
    blob_colour: np.ndarray  # [N, _MAX_CLUTTER, 3].
    blob_active: np.ndarray  # [N, _MAX_CLUTTER] bool.

    def take(self, index: np.ndarray | slice) -> _Params:
        """Returns the parameters of the images selected by ``index``."""
        return _Params(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


# --------------------------------------------------------------------------
# Shapes: implicit "inside" tests in the shape's own (rotated) frame.
#
# Each takes local sub-pixel coordinates u, v [n, H, W], the nominal radius
# r [n, 1, 1] and jitter factors j (a sequence of [n, 1, 1] arrays around 1),
# and returns a boolean mask [n, H, W].
# --------------------------------------------------------------------------

_Array = np.ndarray
_ShapeFn = Callable[[_Array, _Array, _Array, Sequence[_Array]], _Array]


def _circle(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Disc of radius r."""
    return u * u + v * v <= (r * j[0]) ** 2


def _square(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Square of half side 0.8 r."""
    return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r * j[0]


def _triangle(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Equilateral triangle of circumradius 1.15 r; each edge offset jittered."""
    half_planes = [u * nx + v * ny <= 0.575 * r * jk for (nx, ny), jk in zip(_TRIANGLE_NORMALS, j)]
    return np.logical_and.reduce(half_planes)


def _cross(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Plus sign: union of two perpendicular bars (half-length r, aspect 0.25)."""
    au, av = np.abs(u), np.abs(v)
    half_length, half_width = r * j[0], 0.25 * r * j[1]
    return ((au <= half_length) & (av <= half_width)) | ((au <= half_width) & (av <= half_length))


def _ring(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Annulus with outer radius r and inner radius 0.6 r."""
    d2 = u * u + v * v
    return (d2 <= (r * j[0]) ** 2) & (d2 >= (0.6 * r * j[1]) ** 2)


def _rhombus(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Rhombus with half-diagonals r and 0.6 r (aspect 0.6, not a rotated square)."""
    return np.abs(u) / (r * j[0]) + np.abs(v) / (0.6 * r * j[1]) <= 1.0


def _star(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Five-point star, outer radius 1.1 r, inner radius 0.5 r.

    The star is the union of five convex kites (centre, notch, tip, next notch).
    The rays through the notches split the plane into five sectors, so a point
    is inside iff, within its sector, it lies on the inner side of both outer
    edges of that sector's kite. Only +, -, * and comparisons are used.
    """
    tips = (1.1 * r * j[0])[..., None, None] * _STAR_TIPS  # [n, 1, 1, 5, 2]
    notches = (0.5 * r * j[1])[..., None, None] * _STAR_NOTCHES
    # left_of_notch[k]: the point is on the counter-clockwise side of notch ray k.
    left_of_notch = [_STAR_NOTCHES[k, 0] * v - _STAR_NOTCHES[k, 1] * u >= 0.0 for k in range(5)]
    inside = np.zeros(u.shape, dtype=bool)
    for k in range(5):
        in_sector = left_of_notch[k - 1] & ~left_of_notch[k]
        tip, before, after = tips[..., k, :], notches[..., k - 1, :], notches[..., k, :]
        inside |= in_sector & _left_of(before, tip, u, v) & _left_of(tip, after, u, v)
    return inside


def _left_of(a: _Array, b: _Array, u: _Array, v: _Array) -> _Array:
    """Whether (u, v) is on the counter-clockwise side of (or on) the line a -> b.

    That is, whether the cross product (b - a) x ((u, v) - a) is >= 0.

    Args:
        a: Line start, [..., 2].
        b: Line end, [..., 2].
        u: Point x coordinates.
        v: Point y coordinates.

    Returns:
        Boolean mask broadcast from the inputs.
    """
    ex, ey = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    return ex * v - ey * u >= ex * a[..., 1] - ey * a[..., 0]


def _ellipse(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Ellipse with semi-axes r and 0.55 r."""
    a, b = r * j[0], 0.55 * r * j[1]
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _crescent(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Disc of radius r minus a disc of radius 0.85 r shifted by 0.5 r."""
    shift, cut = 0.5 * r * j[2], 0.85 * r * j[1]
    us = u - shift
    return (u * u + v * v <= (r * j[0]) ** 2) & (us * us + v * v > cut * cut)


def _bar(u: _Array, v: _Array, r: _Array, j: Sequence[_Array]) -> _Array:
    """Rectangle with half-length r and aspect 0.25."""
    return (np.abs(u) <= r * j[0]) & (np.abs(v) <= 0.25 * r * j[1])


_SHAPES: tuple[_ShapeFn, ...] = (
    _circle,
    _square,
    _triangle,
    _cross,
    _ring,
    _rhombus,
    _star,
    _ellipse,
    _crescent,
    _bar,
)


# --------------------------------------------------------------------------
# Random parameters.
# --------------------------------------------------------------------------


def _unit_vectors(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Uniformly distributed random 2-D unit vectors without trigonometry.

    Points are drawn uniformly in the unit disc by rejection (resampling only the
    rejected ones, in order) and normalised, so the direction is uniform and the
    result is exactly reproducible (``sqrt`` is correctly rounded).

    Args:
        rng: Random generator.
        shape: Batch shape.

    Returns:
        Array of shape ``shape + (2,)``.
    """
    out = np.empty((math.prod(shape), 2))
    todo = np.arange(out.shape[0])
    while todo.size:
        p = rng.uniform(-1.0, 1.0, (todo.size, 2))
        r2 = p[:, 0] * p[:, 0] + p[:, 1] * p[:, 1]
        ok = (r2 <= 1.0) & (r2 >= 1e-6)
        out[todo[ok]] = p[ok] / np.sqrt(r2[ok])[:, None]
        todo = todo[~ok]
    return out.reshape(shape + (2,))


def _too_close(a: np.ndarray, b: np.ndarray, distance: float) -> np.ndarray:
    """Whether RGB colours a and b ([n, 3]) are closer than ``distance``."""
    d = a - b
    return d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2] < distance * distance


def _contrasting_colours(
    rng: np.random.Generator, reference: np.ndarray, min_contrast: float
) -> np.ndarray:
    """Random colours at least ``min_contrast`` away from ``reference`` ([n, 3]).

    Rejected colours are redrawn (vectorized, in index order) until all pass.
    """
    colours = rng.random(reference.shape)
    todo = np.flatnonzero(_too_close(colours, reference, min_contrast))
    while todo.size:
        colours[todo] = rng.random((todo.size, 3))
        todo = todo[_too_close(colours[todo], reference[todo], min_contrast)]
    return colours


def _draw_params(num_examples: int, rng: np.random.Generator, style: Style) -> _Params:
    """Draws every per-image parameter for all images, in a fixed order.

    Args:
        num_examples: Number of images N.
        rng: Random generator; consumed in a fixed order independent of chunking.
        style: The geometry, appearance and clutter ranges.

    Returns:
        Parameters of all N images.
    """
    (low, k), n = style.clutter, num_examples
    labels = rng.permutation(np.arange(n, dtype=np.int32) % _NUM_CLASSES)
    centre = rng.uniform(*_CENTRE_RANGE, (n, 2))
    radius = rng.uniform(*style.radius_range, n)
    rotation = _unit_vectors(rng, (n,))
    jitter = rng.uniform(1.0 - style.jitter, 1.0 + style.jitter, (n, _NUM_JITTER))
    background = rng.random((n, 3))
    gradient = _unit_vectors(rng, (n,)) * rng.uniform(0.0, style.gradient_amplitude, (n, 1))
    foreground = _contrasting_colours(rng, background, style.min_contrast)
    lines = _draw_clutter(
        rng,
        n,
        low,
        k,
        start=lambda s: rng.uniform(0.0, _SIZE, (*s, 2)),
        direction=lambda s: _unit_vectors(rng, s),
        length=lambda s: rng.uniform(*_LINE_LENGTH_RANGE, s),
        colour=lambda s: rng.random((*s, 3)),
    )
    blobs = _draw_clutter(
        rng,
        n,
        low,
        k,
        centre=lambda s: rng.uniform(0.0, _SIZE, (*s, 2)),
        radius=lambda s: rng.uniform(*_BLOB_RADIUS_RANGE, s),
        is_disc=lambda s: rng.random(s) < 0.5,
        colour=lambda s: rng.random((*s, 3)),
    )
    return _Params(
        labels=labels,
        centre=centre,
        radius=radius,
        rotation=rotation,
        jitter=jitter,
        background=background,
        gradient=gradient,
        foreground=foreground,
        **{f"line_{name}": x for name, x in lines.items()},
        **{f"blob_{name}": x for name, x in blobs.items()},
    )


def _draw_clutter(
    rng: np.random.Generator, n: int, low: int, k: int, **draws
) -> dict[str, np.ndarray]:
    """One kind of clutter (lines or blobs): each image's number of items (``low`` to ``k``),
    then every field of ``k`` items per image, ``draws[name]((n, k))``, in the order given
    (the generator's order is part of the dataset). Returns the fields and ``active``, which
    items are drawn."""
    count = rng.integers(low, k + 1, n)
    fields = {name: draw((n, k)) for name, draw in draws.items()}
    return {**fields, "active": np.arange(k) < count[:, None]}


def _pixel_normals(seed: int, start: int, stop: int) -> np.ndarray:
    """Standard normals for the per-pixel texture and noise of images [start, stop).

    Images are grouped in fixed blocks of ``_NOISE_BLOCK``; block b uses its own
    generator seeded with ``SeedSequence(seed, spawn_key=(b,))`` (independent of
    the parameter stream), so an image's noise does not depend on chunking.

    Returns:
        Array [stop - start, _PIXEL_NORMALS].
    """
    first, last = start // _NOISE_BLOCK, (stop - 1) // _NOISE_BLOCK
    blocks = [
        np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(b,))).standard_normal(
            (_NOISE_BLOCK, _PIXEL_NORMALS)
        )
        for b in range(first, last + 1)
    ]
    offset = first * _NOISE_BLOCK
    return np.concatenate(blocks)[start - offset : stop - offset]


# --------------------------------------------------------------------------
# Rendering.
# --------------------------------------------------------------------------


def _background(p: _Params) -> np.ndarray:
    """Background colour plus a linear brightness gradient, [n, 32, 32, 3]."""
    offset = (_PIXEL_CENTRES - _SIZE / 2) / (_SIZE / 2)  # [-1, 1] across the image.
    ramp = (
        offset[None, None, :] * p.gradient[:, 0, None, None]
        + offset[None, :, None] * p.gradient[:, 1, None, None]
    )
    return p.background[:, None, None, :] + ramp[..., None]


def _window_origin(low: np.ndarray, size: int) -> np.ndarray:
    """Integer (x, y) origins [m, 2] of size x size pixel windows inside the image.

    Each window starts at or before ``low`` ([m, 2], the lower corner of an
    object's support), so that objects narrower than ``size - 1`` pixels lie
    inside it (or outside the image).
    """
    return np.clip(np.floor(low), 0, _SIZE - size).astype(np.intp)


def _window_offsets(
    origin: np.ndarray, point: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of a window's pixel centres from ``point`` ([m, 2]).

    Returns:
        ``(dx [m, 1, size], dy [m, size, 1])``.
    """
    centres = np.arange(size) + 0.5
    dx = (origin[:, 0, None, None] + centres[None, None, :]) - point[:, 0, None, None]
    dy = (origin[:, 1, None, None] + centres[None, :, None]) - point[:, 1, None, None]
    return dx, dy


def _composite_window(
    image: np.ndarray,
    rows: np.ndarray,
    origin: np.ndarray,
    coverage: np.ndarray,
    colour: np.ndarray,
) -> None:
    """Alpha-blends ``colour`` over ``image`` in place where coverage > 0.

    Clutter is small, so coverage is computed only in a window per image, and
    only the covered pixels are touched.

    Args:
        image: [n, 32, 32, 3], modified in place.
        rows: Indices [m] of the images being drawn on.
        origin: Window origins (x, y) [m, 2].
        coverage: Coverage in [0, 1] of each window, [m, W, W].
        colour: Colours [m, 3].
    """
    b, y, x = np.nonzero(coverage)
    alpha = coverage[b, y, x][:, None]
    index = (rows[b], origin[b, 1] + y, origin[b, 0] + x)
    pixels = image[index]
    image[index] = pixels + alpha * (colour[b] - pixels)


def _draw_lines(image: np.ndarray, p: _Params) -> None:
    """Draws the active clutter line segments (anti-aliased, ~1 px thick) in place."""
    reach = _LINE_HALF_WIDTH + 0.5  # Anti-aliasing extends half a pixel further.
    size = math.ceil(_LINE_LENGTH_RANGE[1] + 2.0 * reach) + 1
    for k in range(p.line_active.shape[1]):
        rows = np.flatnonzero(p.line_active[:, k])
        start, direction = p.line_start[rows, k], p.line_direction[rows, k]
        length = p.line_length[rows, k]
        end = start + length[:, None] * direction
        origin = _window_origin(np.minimum(start, end) - reach, size)
        dx, dy = _window_offsets(origin, start, size)
        ux, uy = direction[:, 0, None, None], direction[:, 1, None, None]
        t = np.clip(dx * ux + dy * uy, 0.0, length[:, None, None])
        ex, ey = dx - t * ux, dy - t * uy
        coverage = np.clip(reach - np.sqrt(ex * ex + ey * ey), 0.0, 1.0)
        _composite_window(image, rows, origin, coverage, p.line_colour[rows, k])


def _draw_blobs(image: np.ndarray, p: _Params) -> None:
    """Draws the active clutter discs / axis-aligned squares (anti-aliased) in place."""
    size = math.ceil(2.0 * (_BLOB_RADIUS_RANGE[1] + 0.5)) + 1
    for k in range(p.blob_active.shape[1]):
        rows = np.flatnonzero(p.blob_active[:, k])
        centre, radius = p.blob_centre[rows, k], p.blob_radius[rows, k, None]
        origin = _window_origin(centre - (radius + 0.5), size)
        dx, dy = _window_offsets(origin, centre, size)
        ax, ay = np.abs(dx), np.abs(dy)
        distance = np.where(
            p.blob_is_disc[rows, k, None, None], np.sqrt(ax * ax + ay * ay), np.maximum(ax, ay)
        )
        coverage = np.clip(radius[:, :, None] + 0.5 - distance, 0.0, 1.0)
        _composite_window(image, rows, origin, coverage, p.blob_colour[rows, k])


def _shape_coverage(p: _Params) -> np.ndarray:
    """Anti-aliased coverage [n, 32, 32] of each image's shape.

    Each class's inside test is applied to the images of that class at 2x2
    sub-pixel positions; the four samples of a pixel are averaged.
    """
    coverage = np.empty((p.labels.shape[0], _SIZE, _SIZE))
    for label, shape_fn in enumerate(_SHAPES):
        rows = np.flatnonzero(p.labels == label)
        if rows.size == 0:
            continue
        q = p.take(rows)
        dx = _SUBPIXEL_CENTRES[None, None, :] - q.centre[:, 0, None, None]
        dy = _SUBPIXEL_CENTRES[None, :, None] - q.centre[:, 1, None, None]
        cos, sin = q.rotation[:, 0, None, None], q.rotation[:, 1, None, None]
        u = dx * cos + dy * sin
        v = dy * cos - dx * sin
        jitter = [q.jitter[:, i, None, None] for i in range(_NUM_JITTER)]
        inside = shape_fn(u, v, q.radius[:, None, None], jitter).astype(np.uint8)
        hits = (
            inside[:, 0::2, 0::2]
            + inside[:, 0::2, 1::2]
            + inside[:, 1::2, 0::2]
            + inside[:, 1::2, 1::2]
        )
        coverage[rows] = hits * 0.25
    return coverage


def _render(p: _Params, normals: np.ndarray, style: Style) -> np.ndarray:
    """Renders a chunk of images.

    Args:
        p: Parameters of n images.
        normals: Standard normals [n, _PIXEL_NORMALS] for texture and noise.
        style: The texture and noise levels.

    Returns:
        uint8 images [n, 32, 32, 3].
    """
    n = p.labels.shape[0]
    texture = normals[:, : _SIZE * _SIZE].reshape(n, _SIZE, _SIZE, 1)
    noise = normals[:, _SIZE * _SIZE :].reshape(n, _SIZE, _SIZE, 3)
    image = _background(p)
    _draw_lines(image, p)
    _draw_blobs(image, p)
    shape_colour = p.foreground[:, None, None, :] * (1.0 + style.texture_std * texture)
    alpha = _shape_coverage(p)[..., None]
    image += alpha * (shape_colour - image)
    image += style.noise_std * noise
    np.clip(image, 0.0, 1.0, out=image)
    return np.floor(image * 255.0 + 0.5).astype(np.uint8)


def generate(
    num_examples: int, seed: int, style: str | Style = "medium"
) -> tuple[np.ndarray, np.ndarray]:
    """Generates the shapes10 dataset (or an easier or harder variant of it).

    Labels follow the pattern ``i % 10`` shuffled with the seed, so classes are
    exactly balanced when ``num_examples`` is a multiple of 10. Use different
    seeds for different splits (e.g. 0 for train, 1 for test).

    Args:
        num_examples: Number of images N (>= 0).
        seed: Non-negative integer seed; output is a pure function of
            ``(num_examples, seed, style)``, identical on every machine.
        style: ``"medium"`` (shapes10), ``"easy"``, ``"hard"`` (see ``STYLES``) or a
            :class:`Style`.

    Returns:
        ``(images, labels)``: uint8 array [N, 32, 32, 3] and int32 array [N]
        with values in ``range(10)`` indexing ``CLASS_NAMES``.
    """
    style = _style(style)
    params = _draw_params(num_examples, np.random.default_rng(seed), style)
    images = np.empty((num_examples,) + IMAGE_SHAPE, dtype=np.uint8)
    for start in range(0, num_examples, _CHUNK_SIZE):
        stop = min(start + _CHUNK_SIZE, num_examples)
        normals = _pixel_normals(seed, start, stop)
        images[start:stop] = _render(params.take(slice(start, stop)), normals, style)
    return images, params.labels


def _style(style: str | Style) -> Style:
    if isinstance(style, Style):
        return style
    if style not in STYLES:
        raise ValueError(f"unknown shapes style {style!r}; choose from {', '.join(STYLES)}")
    return STYLES[style]


def save_npz(
    path: str | os.PathLike,
    style: str | Style = "medium",
    num_train: int = 20_000,
    num_test: int = 5_000,
    seed: int = 0,
) -> str:
    """Writes a shapes dataset as an ``npz:`` dataset file (``x_train, y_train, x_test,
    y_test``), e.g. an easier or harder variant to try the tools on data other than
    shapes10. Train uses seed ``2 * seed``, test ``2 * seed + 1``, as ``data.load`` does.

    Returns:
        The file's path.
    """
    x_train, y_train = generate(num_train, 2 * seed, style)
    x_test, y_test = generate(num_test, 2 * seed + 1, style)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return os.fspath(path)
