"""Cameras of the procedural data set: a fixed scene, viewpoint preference and image degradation each.

A camera's character is drawn once from ``(seed, camera)`` within the family of its domain (``DOMAINS``:
"a" a sunlit campus, "b" dim indoor halls under warm light, for cross-domain experiments): the scene behind
the people (walls, floor, facades, trees, poles), which sides of a person it tends to see (front, back, left,
right), its colour cast and gain, blur, effective resolution and sensor noise. Every image adds its own jitter on top.
All drawing happens at render size (twice the output size); ``degrade`` brings it to the output size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

if TYPE_CHECKING:
    from reidkit.data.synthetic import SyntheticSpec

RGB = tuple[int, int, int]
VIEWS = ("front", "back", "left", "right")
CAMERA_STREAM = 3  # random stream of camera characters: ``default_rng([seed, CAMERA_STREAM, camera])``
RENDER_SCALE = 2  # people are drawn at this multiple of the output size, then reduced (anti-aliasing)
_SCENE_WIDTHS = 6  # the scene panorama is this many crops wide and
_SCENE_HEIGHTS = 1.25  # this many crops high; each image crops a random window of it


@dataclass(frozen=True)
class Camera:
    """Fixed character of one camera; intensities are in 0..255 units, sizes in output pixels."""

    index: int  # 1-based camera number
    view_probs: tuple[float, float, float, float]  # probability of seeing the front, back, left, right
    gains: tuple[float, float, float]  # per-channel gain: white balance times brightness
    saturation: float  # 1 keeps colours, < 1 washes them out
    jitter: float  # standard deviation of the per-image relative gain change
    blur_sigma: float  # Gaussian blur in output pixels
    resolution: float  # fraction of the output size the camera really resolves (1 = sharp)
    noise: Image.Image | None = field(compare=False, repr=False)  # luminance noise + 128, twice the output size
    light_side: float  # strength and direction (sign) of the left-right shading on people
    jpeg_quality: int
    clutter: float  # mean number of extra random shapes per image
    palette: tuple[RGB, ...]  # colours of the scene, reused for clutter and occluders
    crop_size: tuple[int, int]  # render size of one image (width, height)
    scene: Image.Image = field(compare=False, repr=False)  # panorama at render size


# Colours shared by all cameras (one campus): cameras differ in layout and mixture, not in exotic hues.
_GROUND_COLOURS: tuple[RGB, ...] = ((128, 126, 122), (150, 144, 132), (104, 104, 108), (170, 160, 140), (118, 108, 98))
_BUILDING_COLOURS: tuple[RGB, ...] = (
    (196, 190, 178), (166, 98, 82), (150, 150, 156), (210, 200, 170), (96, 104, 120), (122, 140, 150),
    (180, 170, 160), (92, 82, 76), (62, 98, 72), (200, 206, 210), (226, 222, 214), (140, 120, 96),
)


# Indoor halls (domain "b"): tiled and carpeted floors, shop fronts and painted plaster under warm lamps.
_INDOOR_GROUND_COLOURS: tuple[RGB, ...] = (
    (176, 150, 112), (120, 84, 70), (196, 184, 160), (92, 70, 88), (150, 128, 96))
_INDOOR_WALL_COLOURS: tuple[RGB, ...] = (
    (232, 200, 150), (180, 60, 64), (210, 170, 90), (120, 60, 110), (90, 40, 36), (240, 220, 180),
    (200, 120, 60), (60, 50, 70), (150, 110, 140), (220, 150, 120), (110, 90, 50), (250, 236, 200),
)


@dataclass(frozen=True)
class CameraFamily:
    """What all cameras of one synthetic domain share: scene colours and the light they see by."""

    ground: tuple[RGB, ...]  # floor colours (the last one is the grass or carpet of some zones)
    buildings: tuple[RGB, ...]  # wall, facade and prop colours
    tint: tuple[float, float, float]  # per-channel gain of the light (white = 1, 1, 1)
    brightness: float  # overall gain of the light
    blur: float  # factor on the spec's blur (dim light: longer exposures)


DOMAINS: dict[str, CameraFamily] = {
    "a": CameraFamily(_GROUND_COLOURS + ((84, 118, 66),), _BUILDING_COLOURS, (1.0, 1.0, 1.0), 1.0, 1.0),
    "b": CameraFamily(_INDOOR_GROUND_COLOURS + ((70, 96, 120),), _INDOOR_WALL_COLOURS, (1.12, 0.97, 0.74), 0.8, 1.5),
}


def _muted(rng: np.random.Generator, low: int = 50, high: int = 200) -> RGB:
    base = rng.uniform(low, high)
    return tuple(int(np.clip(base + rng.normal(0, 14), 0, 255)) for _ in range(3))


def _varied(rng: np.random.Generator, colours: tuple[RGB, ...]) -> RGB:
    colour = colours[int(rng.integers(len(colours)))]
    return tuple(int(np.clip(c * rng.uniform(0.85, 1.15), 0, 255)) for c in colour)


def _draw_scene(rng: np.random.Generator, size: tuple[int, int], palette: tuple[RGB, ...],
                clutter: float, ground: tuple[RGB, ...]) -> Image.Image:
    """Paint a camera's panorama: wall or facades above a horizon, a paved floor below, props in between."""
    width, height = size
    horizon = int(height * rng.uniform(0.45, 0.75))
    scene = Image.new("RGB", size, palette[0])
    draw = ImageDraw.Draw(scene)
    crop_width = width // _SCENE_WIDTHS
    x = -crop_width
    while x < width:  # paving zones, lawns and road, with slanted borders
        zone, slant = int(rng.uniform(0.4, 1.5) * crop_width), int(rng.normal(0, 0.5) * crop_width)
        colour = palette[1] if rng.random() < 0.4 else _varied(rng, ground)
        draw.polygon([(x, horizon), (x + zone, horizon), (x + zone + slant, height), (x + slant, height)], fill=colour)
        x += zone
    x = 0
    while x < width:  # facades or shop fronts with windows
        block_width = int(rng.uniform(0.3, 1.2) * crop_width)
        top = int(horizon * rng.uniform(0.0, 0.4))
        colour = palette[int(rng.integers(2, len(palette)))]
        draw.rectangle((x, top, x + block_width, horizon), fill=colour)
        if rng.random() < 0.6:
            window = _muted(rng, 20, 120) if rng.random() < 0.5 else _muted(rng, 150, 240)
            step = int(rng.uniform(0.08, 0.16) * height)
            for wx in range(x + step // 3, x + block_width - step // 2, step):
                for wy in range(top + step // 3, horizon - step // 2, step):
                    draw.rectangle((wx, wy, wx + step // 2, wy + step // 2), fill=window)
        x += block_width
    for _ in range(int(rng.integers(2, 7))):  # paving lines
        y = int(rng.uniform(horizon, height))
        draw.line((0, y, width, y + int(rng.normal(0, 20))), fill=_muted(rng), width=int(rng.integers(1, 4)))
    for _ in range(rng.poisson(4 * max(clutter, 0.0))):  # trees, poles, bins
        px = int(rng.uniform(0, width))
        if rng.random() < 0.5:
            trunk = int(rng.uniform(0.02, 0.05) * height)
            draw.rectangle((px, int(horizon * 0.5), px + trunk, horizon + trunk), fill=(70, 52, 36))
            radius = int(rng.uniform(0.1, 0.25) * height)
            leaves = (int(rng.uniform(30, 80)), int(rng.uniform(90, 150)), int(rng.uniform(30, 70)))
            crown_y = int(horizon * 0.5)
            draw.ellipse((px - radius, crown_y - radius, px + radius, crown_y + radius), fill=leaves)
        else:
            box = (px, int(horizon - rng.uniform(0.05, 0.3) * height), px + int(rng.uniform(0.02, 0.2) * height),
                   int(horizon + rng.uniform(0.02, 0.1) * height))
            draw.rectangle(box, fill=palette[int(rng.integers(len(palette)))])
    return scene


def _noise_bank(rng: np.random.Generator, size: tuple[int, int], std: float) -> Image.Image | None:
    """Gaussian luminance noise (standard deviation ``std``) around 128; each image adds a random window."""
    if std <= 0:
        return None
    noise = Image.fromarray(np.clip(128.0 + rng.normal(0.0, std, size[::-1]), 0, 255).astype(np.uint8))
    return Image.merge("RGB", (noise, noise, noise))


def make_camera(spec: SyntheticSpec, seed: int, index: int) -> Camera:
    """Draw the fixed character of camera ``index`` (1-based) from ``(seed, index)``, the spec's knobs and the
    camera family of ``spec.domain``."""
    family = DOMAINS[spec.domain]
    rng = np.random.default_rng([seed, CAMERA_STREAM, index])
    views = rng.dirichlet((0.6, 0.6, 0.6, 0.6)) * 0.8 + 0.05
    cast = 1.0 + spec.colour_cast * rng.uniform(-1.0, 1.0, 3)
    brightness = (1.0 + spec.illumination * rng.uniform(-1.0, 1.0)) * family.brightness
    # sky or back wall, main ground, five facade and prop colours
    palette = (_varied(rng, family.buildings), _varied(rng, family.ground[:-1]),
               *(_varied(rng, family.buildings) for _ in range(5)))
    crop_size = (spec.width * RENDER_SCALE, spec.height * RENDER_SCALE)
    scene_size = (crop_size[0] * _SCENE_WIDTHS, round(crop_size[1] * _SCENE_HEIGHTS))
    return Camera(
        index=index,
        view_probs=tuple(float(v) for v in views / views.sum()),
        gains=tuple(float(g * brightness * tint) for g, tint in zip(cast, family.tint)),
        saturation=float(np.clip(1.0 + spec.colour_cast * rng.uniform(-2.0, 0.5), 0.2, 1.5)),
        jitter=0.3 * spec.illumination,
        blur_sigma=float(spec.blur * family.blur * rng.uniform(0.0, 1.0)),
        resolution=float(1.0 - spec.resolution_drop * rng.uniform(0.0, 1.0)),
        noise=_noise_bank(rng, (2 * spec.width, 2 * spec.height), spec.noise * rng.uniform(0.3, 1.0)),
        light_side=float(rng.uniform(-0.25, 0.25)),
        jpeg_quality=int(rng.integers(80, 96)),
        clutter=spec.clutter,
        palette=palette,
        crop_size=crop_size,
        scene=_draw_scene(rng, scene_size, palette, spec.clutter, family.ground),
    )


def _random_window(image: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    left = int(rng.integers(0, image.width - size[0] + 1))
    top = int(rng.integers(0, image.height - size[1] + 1))
    return image.crop((left, top, left + size[0], top + size[1]))


def scene_crop(camera: Camera, rng: np.random.Generator) -> Image.Image:
    """A random window of the camera's scene at render size, with its own lighting and random clutter."""
    width, height = camera.crop_size
    crop = _random_window(camera.scene, camera.crop_size, rng)
    change = rng.uniform(-0.2, 0.2)  # darker (towards black) or hazier (towards white) than the panorama
    crop = Image.blend(crop, Image.new("RGB", crop.size, (0, 0, 0) if change < 0 else (255, 255, 255)), abs(change))
    draw = ImageDraw.Draw(crop)
    for _ in range(rng.poisson(camera.clutter)):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.05, 0.3) * width, rng.uniform(0.02, 0.15) * height
        colour = camera.palette[int(rng.integers(len(camera.palette)))]
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x, y, x + w, y + h), fill=colour)
    return crop


def draw_occluder(image: Image.Image, camera: Camera, rng: np.random.Generator,
                  person_colours: tuple[RGB, ...]) -> None:
    """Cover part of the person in place with a pole, a low object (bench, car, bin) or another passer-by."""
    width, height = image.size
    draw = ImageDraw.Draw(image)
    kind = rng.choice(3)
    if kind == 0:  # pole or sign post
        x = rng.uniform(0.1, 0.9) * width
        bar = rng.uniform(0.08, 0.2) * width
        colour = camera.palette[int(rng.integers(2, len(camera.palette)))]
        draw.rectangle((x - bar / 2, 0, x + bar / 2, height), fill=colour)
    elif kind == 1:  # low object hiding the legs
        top = rng.uniform(0.6, 0.85) * height
        left, right = sorted(rng.uniform(-0.3, 1.3, 2) * width)
        right = max(right, left + 0.5 * width)
        colour = tuple(int(c) for c in rng.integers(20, 236, 3))
        draw.rounded_rectangle((left, top, right, height + 10), radius=int(0.05 * width), fill=colour)
    else:  # part of another pedestrian in front, at the left or right edge
        side = -1 if rng.random() < 0.5 else 1
        centre = width / 2 + side * rng.uniform(0.45, 0.75) * width
        half = rng.uniform(0.15, 0.25) * width
        top = rng.uniform(0.15, 0.35) * height
        draw.rectangle((centre - half, top, centre + half, top + 0.35 * height), fill=person_colours[0])
        draw.rectangle((centre - half * 0.8, top + 0.35 * height, centre + half * 0.8, height), fill=person_colours[1])
        draw.ellipse((centre - half * 0.55, top - 0.14 * height, centre + half * 0.55, top), fill=person_colours[2])


def degrade(image: Image.Image, camera: Camera, rng: np.random.Generator) -> Image.Image:
    """Bring a render-size image to output size through the camera: resolution, blur, colour, noise.

    Args:
        image: RGB image at ``RENDER_SCALE`` times the output size.
        camera: the camera whose character to apply.
        rng: per-image randomness (jitter of gain, resolution and blur).

    Returns:
        The RGB output image.
    """
    image = image.reduce(RENDER_SCALE)
    width, height = image.size
    scale = min(1.0, camera.resolution * rng.uniform(0.9, 1.1))
    if scale < 0.97:
        small = (max(4, round(width * scale)), max(4, round(height * scale)))
        image = image.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    sigma = camera.blur_sigma * rng.uniform(0.6, 1.4)
    if sigma > 0.15:
        image = image.filter(ImageFilter.GaussianBlur(sigma))
    gains = np.asarray(camera.gains) * (1.0 + camera.jitter * rng.normal(0.0, 1.0, 3))
    desaturate = np.full((3, 3), (1.0 - camera.saturation) / 3) + camera.saturation * np.eye(3)
    colour = desaturate * gains[None, :]
    image = image.convert("RGB", tuple(float(v) for row in colour for v in (*row, 0.0)))
    if camera.noise is None:
        return image
    return ImageChops.add(image, _random_window(camera.noise, (width, height), rng), offset=-128)
