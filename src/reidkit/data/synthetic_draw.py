"""Drawing of procedural pedestrians seen by a camera, with PIL ImageDraw and numpy.

A person is drawn from body-height units onto a transparent layer: legs and lower garment, a textured upper
garment, arms, head and hair, accessories. The viewpoint decides what is visible: the face, chest logo and
backpack straps from the front; the back of the head, a large backpack and long hair from behind; a narrow
profile with one arm and scissoring legs from the side. ``render_person`` places the layer in the camera's
scene with a (mis)aligned box, may occlude it, and passes the result through the camera's degradation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageOps

from reidkit.data.synthetic_camera import VIEWS, Camera, degrade, draw_occluder, scene_crop
from reidkit.data.synthetic_identity import UPPER_COLOURS, Identity

if TYPE_CHECKING:
    from reidkit.data.synthetic import SyntheticSpec

RGB = tuple[int, int, int]
_ANKLE = 0.955  # ankle height; the soles are at 1.0


@dataclass(frozen=True)
class Placement:
    """Where the person stands in the crop, as fractions of the crop size."""

    centre_x: float  # horizontal centre of the body
    top: float  # top of the head
    height: float  # head-to-sole height


@dataclass(frozen=True)
class Pose:
    """Per-image body pose, each in -1..1."""

    stride: float  # leg phase: which leg is forward and how far
    arm_swing: float  # arm phase


def _darker(colour: RGB, factor: float = 0.72) -> RGB:
    return tuple(int(c * factor) for c in colour)


class _Canvas:
    """Maps body units (x right of the body axis, y down from the top of the head) to layer pixels."""

    def __init__(self, size: tuple[int, int], placement: Placement):
        self.layer = Image.new("RGBA", size, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.layer)
        self.unit = placement.height * size[1]
        self.origin = (placement.centre_x * size[0], placement.top * size[1])

    def point(self, x: float, y: float) -> tuple[float, float]:
        return self.origin[0] + x * self.unit, self.origin[1] + y * self.unit

    def box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
        return (*self.point(min(x0, x1), min(y0, y1)), *self.point(max(x0, x1), max(y0, y1)))

    def polygon(self, points: list[tuple[float, float]], fill: RGB, draw: ImageDraw.ImageDraw | None = None) -> None:
        (draw or self.draw).polygon([self.point(x, y) for x, y in points], fill=fill)

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: RGB,
                draw: ImageDraw.ImageDraw | None = None) -> None:
        (draw or self.draw).ellipse(self.box(x0, y0, x1, y1), fill=fill)

    def rectangle(self, x0: float, y0: float, x1: float, y1: float, fill: RGB) -> None:
        self.draw.rectangle(self.box(x0, y0, x1, y1), fill=fill)

    def limb(self, start: tuple[float, float], end: tuple[float, float], widths: tuple[float, float], fill: RGB,
             draw: ImageDraw.ImageDraw | None = None) -> None:
        """A tapered segment with rounded ends (an arm, a leg, a strap)."""
        length = max(math.hypot(end[0] - start[0], end[1] - start[1]), 1e-6)
        nx, ny = (start[1] - end[1]) / length, (end[0] - start[0]) / length
        w0, w1 = widths[0] / 2, widths[1] / 2
        corners = [(start[0] + nx * w0, start[1] + ny * w0), (end[0] + nx * w1, end[1] + ny * w1),
                   (end[0] - nx * w1, end[1] - ny * w1), (start[0] - nx * w0, start[1] - ny * w0)]
        self.polygon(corners, fill, draw)
        for (x, y), w in ((start, w0), (end, w1)):
            self.ellipse(x - w, y - w, x + w, y + w, fill, draw)


def _texture_pixels(identity: Identity, canvas: _Canvas, bbox: tuple[int, int, int, int]) -> np.ndarray:
    """RGB pixels [h, w, 3] of the upper garment's pattern over ``bbox`` (layer pixels)."""
    texture = identity.texture
    ys, xs = np.mgrid[bbox[1]:bbox[3], bbox[0]:bbox[2]].astype(np.float32)
    u = (xs - canvas.origin[0]) / (canvas.unit * texture.period)
    v = (ys - canvas.origin[1]) / (canvas.unit * texture.period)
    if texture.kind == "stripes":
        pattern = np.mod(u * np.cos(texture.angle) + v * np.sin(texture.angle), 1.0) < texture.duty
    elif texture.kind == "plaid":
        pattern = (np.mod(u, 1.0) < texture.duty) | (np.mod(v, 1.0) < texture.duty)
    else:  # dots
        pattern = (np.mod(u, 1.0) - 0.5) ** 2 + (np.mod(v, 1.0) - 0.5) ** 2 < (texture.duty / 2) ** 2
    return np.where(pattern[..., None], np.uint8(texture.colour), np.uint8(identity.upper_rgb)).astype(np.uint8)


def _draw_logo(identity: Identity, canvas: _Canvas, chest_y: float) -> None:
    logo = identity.logo
    s, y = logo.size / 2, chest_y
    if logo.shape == "circle":
        canvas.ellipse(-s, y - s, s, y + s, logo.colour)
    elif logo.shape == "square":
        canvas.rectangle(-s, y - s, s, y + s, logo.colour)
    elif logo.shape == "triangle":
        canvas.polygon([(0, y - s), (s, y + s), (-s, y + s)], logo.colour)
    elif logo.shape == "diamond":
        canvas.polygon([(0, y - s), (s, y), (0, y + s), (-s, y)], logo.colour)
    elif logo.shape == "cross":
        canvas.limb((-s, y), (s, y), (s / 2, s / 2), logo.colour)
        canvas.limb((0, y - s), (0, y + s), (s / 2, s / 2), logo.colour)
    else:  # a bar, like a printed word
        canvas.rectangle(-1.4 * s, y - s / 3, 1.4 * s, y + s / 3, logo.colour)


@dataclass(frozen=True)
class _Frame:
    """Landmarks of one drawing in body units, as seen from the view (side views are narrower)."""

    side: bool  # a left or right profile
    head: float  # head height (the head spans y in 0..head)
    half_head: float
    shoulder_y: float
    hip_y: float
    knee_y: float
    shoulder: float  # half-width of the shoulders as seen
    hip: float  # half-width of the hips as seen
    carry: int  # side of the carried bags as seen (mirrored from behind)


def _frame(identity: Identity, view: str) -> _Frame:
    side = view in ("left", "right")
    shoulder_y = identity.head + 0.03
    hip_y = shoulder_y + identity.torso
    return _Frame(
        side=side, head=identity.head, half_head=0.4 * identity.head, shoulder_y=shoulder_y, hip_y=hip_y,
        knee_y=(hip_y + _ANKLE) / 2 + 0.01, shoulder=identity.shoulder * (0.55 if side else 1.0),
        hip=identity.hip * (0.75 if side else 1.0), carry=identity.carry_side * (-1 if view == "back" else 1),
    )


Arm = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]  # shoulder joint, elbow, wrist


def _arms(frame: _Frame, pose: Pose) -> list[Arm]:
    """One swinging arm in profile, two hanging arms from the front or back."""
    if frame.side:
        swing = pose.arm_swing * 0.45
        root = (0.0, frame.shoulder_y + 0.03)
        elbow = (root[0] + 0.16 * math.sin(swing), root[1] + 0.16 * math.cos(swing))
        wrist = (elbow[0] + 0.15 * math.sin(swing + 0.25), elbow[1] + 0.15 * math.cos(swing + 0.25))
        return [(root, elbow, wrist)]
    lift, out = 0.02 * abs(pose.arm_swing), 0.008 * pose.arm_swing
    return [((s * (frame.shoulder - 0.02), frame.shoulder_y + 0.025),
             (s * (frame.shoulder + 0.012 + out), frame.shoulder_y + 0.16),
             (s * (frame.shoulder + 0.004), frame.shoulder_y + 0.3 - lift)) for s in (-1, 1)]


def _draw_behind_body(identity: Identity, frame: _Frame, view: str, canvas: _Canvas) -> None:
    """What the body hides partly: a backpack seen in profile, long hair seen from the front or side."""
    f = frame
    if f.side and identity.backpack is not None:
        canvas.polygon([(-f.shoulder - 0.075, f.shoulder_y + 0.02), (-f.shoulder + 0.01, f.shoulder_y + 0.02),
                        (-f.shoulder + 0.01, f.shoulder_y + 0.25), (-f.shoulder - 0.08, f.shoulder_y + 0.24)],
                       identity.backpack)
    if identity.long_hair and view != "back":
        left, right = (-f.half_head * 1.1, 0.0) if f.side else (-f.half_head * 1.15, f.half_head * 1.15)
        canvas.rectangle(left, f.head / 2, right, f.shoulder_y + 0.08, identity.hair_colour)


def _draw_legs(identity: Identity, frame: _Frame, pose: Pose, canvas: _Canvas) -> None:
    """Legs (bare under shorts and skirts), trousers or a dress, and shoes; the far leg darker in profile."""
    f = frame
    if f.side:
        hips = [(0.0, f.hip_y), (0.0, f.hip_y)]
        feet = [(-pose.stride * 0.13, _ANKLE, 0.8), (pose.stride * 0.13, _ANKLE, 1.0)]
    else:
        hips = [(s * f.hip * 0.5, f.hip_y) for s in (-1, 1)]
        feet = [(s * (f.hip * 0.45 + 0.012), _ANKLE - 0.02 * max(0.0, s * pose.stride), 1.0) for s in (-1, 1)]
    bare_legs = identity.dress or not identity.long_lower
    for (hx, hy), (fx, fy, light) in zip(hips, feet):
        knee = ((hx + fx) / 2 + (0.02 if f.side else 0.0), f.knee_y)
        if bare_legs:
            canvas.limb((hx, hy), knee, (0.095, 0.075), _darker(identity.skin, light))
            canvas.limb(knee, (fx, fy), (0.075, 0.058), _darker(identity.skin, light))
        if not identity.dress:
            trousers = _darker(identity.lower_rgb, light)
            hem = knee if identity.long_lower else (hx + (knee[0] - hx) * 0.7, hy + (knee[1] - hy) * 0.7)
            canvas.limb((hx, hy), hem, (0.108, 0.09 if identity.long_lower else 0.103), trousers)
            if identity.long_lower:
                canvas.limb(knee, (fx, fy), (0.09, 0.07), trousers)
        canvas.ellipse(fx - 0.028, fy - 0.012, fx + (0.06 if f.side else 0.025), 1.0, _darker(identity.shoes, light))
    if identity.dress:
        hem_y = _ANKLE - 0.05 if identity.long_lower else f.knee_y - 0.02
        flare = 0.05 if identity.long_lower else 0.035
        canvas.polygon([(-f.hip * 0.95, f.hip_y - 0.04), (f.hip * 0.95, f.hip_y - 0.04), (f.hip + flare, hem_y),
                        (-f.hip - flare, hem_y)], identity.lower_rgb)
    else:
        canvas.rectangle(-f.hip, f.hip_y - 0.03, f.hip, f.hip_y + 0.05, identity.lower_rgb)


def _draw_upper_garment(identity: Identity, frame: _Frame, arms: list[Arm], view: str, canvas: _Canvas) -> None:
    """Neck, then torso and sleeves as one shape filled with the garment's texture, then the chest logo."""
    f = frame
    canvas.limb((0, f.head - 0.01), (0, f.shoulder_y + 0.02), (0.05, 0.05), identity.skin)
    textured = identity.texture.kind != "plain"
    mask = Image.new("L", canvas.layer.size, 0) if textured else None
    draw = ImageDraw.Draw(mask) if textured else canvas.draw
    fill = 255 if textured else identity.upper_rgb
    canvas.polygon([(-f.shoulder, f.shoulder_y + 0.005), (f.shoulder, f.shoulder_y + 0.005),
                    (f.hip * 0.98, f.hip_y + 0.025), (-f.hip * 0.98, f.hip_y + 0.025)], fill, draw)
    for root, elbow, wrist in arms:
        canvas.ellipse(root[0] - 0.03, root[1] - 0.03, root[0] + 0.03, root[1] + 0.03, fill, draw)
        canvas.limb(root, elbow, (0.06, 0.055), fill, draw)
        if identity.long_sleeves:
            canvas.limb(elbow, wrist, (0.055, 0.046), fill, draw)
    bbox = mask.getbbox() if textured else None
    if bbox is not None:
        canvas.layer.paste(Image.fromarray(_texture_pixels(identity, canvas, bbox)), bbox[:2], mask.crop(bbox))
    if view == "front" and identity.logo is not None:
        _draw_logo(identity, canvas, f.shoulder_y + 0.085)


def _draw_bags_and_hands(identity: Identity, frame: _Frame, arms: list[Arm], view: str, canvas: _Canvas) -> None:
    """Backpack (a big patch from behind, straps otherwise), shoulder bag, bare forearms and hands, handbag."""
    f = frame
    if identity.backpack is not None and view == "back":
        top, bottom, pocket = f.shoulder_y + 0.02, f.shoulder_y + 0.24, f.shoulder_y + 0.14
        canvas.polygon([(-f.shoulder * 0.8, top), (f.shoulder * 0.8, top), (f.shoulder * 0.85, bottom),
                        (-f.shoulder * 0.85, bottom)], identity.backpack)
        canvas.rectangle(-f.shoulder * 0.55, pocket, f.shoulder * 0.55, bottom - 0.02, _darker(identity.backpack))
    elif identity.backpack is not None:
        for x in ((-f.shoulder * 0.5, f.shoulder * 0.5) if view == "front" else (-f.shoulder * 0.3,)):
            strap = _darker(identity.backpack, 0.8)
            canvas.limb((x, f.shoulder_y), (x * 0.9, f.shoulder_y + 0.17), (0.02, 0.02), strap)
    if identity.bag is not None:
        bag_x = 0.0 if f.side else f.carry * (f.hip + 0.04)
        canvas.limb((-f.carry * f.shoulder * 0.7, f.shoulder_y), (bag_x, f.hip_y - 0.02), (0.014, 0.014),
                    _darker(identity.bag, 0.8))
        canvas.rectangle(bag_x - 0.045, f.hip_y - 0.04, bag_x + 0.045, f.hip_y + 0.06, identity.bag)
    for _, elbow, wrist in arms:
        if not identity.long_sleeves:
            canvas.limb(elbow, wrist, (0.048, 0.04), identity.skin)
        canvas.ellipse(wrist[0] - 0.025, wrist[1] - 0.01, wrist[0] + 0.025, wrist[1] + 0.038, identity.skin)
    if identity.handbag is not None:
        x, y = arms[0][2] if f.side or f.carry < 0 else arms[1][2]
        canvas.polygon([(x - 0.04, y + 0.03), (x + 0.04, y + 0.03), (x + 0.05, y + 0.1), (x - 0.05, y + 0.1)],
                       identity.handbag)


def _draw_head(identity: Identity, frame: _Frame, view: str, canvas: _Canvas) -> None:
    """Hair cap, face and eyes (none from behind), long hair over the back, hat with a brim."""
    f, eye = frame, (40, 30, 28)
    canvas.ellipse(-f.half_head * 1.06, -0.006, f.half_head * 1.06, f.head, identity.hair_colour)
    if view == "front":
        canvas.ellipse(-f.half_head * 0.92, f.head * 0.3, f.half_head * 0.92, f.head, identity.skin)
        for s in (-1, 1):
            x = s * 0.35 * f.half_head
            canvas.ellipse(x - 0.006, f.head * 0.52, x + 0.006, f.head * 0.58, eye)
    elif f.side:
        canvas.ellipse(-f.half_head * 0.1, f.head * 0.3, f.half_head * 1.05, f.head, identity.skin)
        canvas.ellipse(f.half_head * 0.6, f.head * 0.5, f.half_head * 0.6 + 0.01, f.head * 0.57, eye)
    elif identity.long_hair:
        canvas.polygon([(-f.half_head * 1.1, f.head / 2), (f.half_head * 1.1, f.head / 2),
                        (f.half_head, f.shoulder_y + 0.1), (-f.half_head, f.shoulder_y + 0.1)], identity.hair_colour)
    if identity.hat is not None:
        canvas.ellipse(-f.half_head * 1.12, -0.015, f.half_head * 1.12, f.head * 0.62, identity.hat)
        left, right = (0.0, f.half_head * 2.0) if f.side else (-f.half_head * 1.15, f.half_head * 1.15)
        brim = _darker(identity.hat, 0.85) if view != "back" else identity.hat
        canvas.rectangle(left, f.head * 0.28, right, f.head * 0.36, brim)


def draw_person(identity: Identity, view: str, pose: Pose, size: tuple[int, int], placement: Placement) -> Image.Image:
    """Draw ``identity`` seen from ``view`` (one of ``VIEWS``) on a transparent RGBA layer.

    Args:
        identity: the person.
        view: "front", "back", "left" or "right"; profiles are drawn facing right, "left" is mirrored.
        pose: leg and arm phase.
        size: layer size (width, height) in render pixels.
        placement: where the body stands in the layer.

    Returns:
        RGBA layer, transparent outside the person.
    """
    if view == "left":
        placement = Placement(1.0 - placement.centre_x, placement.top, placement.height)
    canvas = _Canvas(size, placement)
    frame = _frame(identity, view)
    arms = _arms(frame, pose)
    _draw_behind_body(identity, frame, view, canvas)
    _draw_legs(identity, frame, pose, canvas)
    _draw_upper_garment(identity, frame, arms, view, canvas)
    _draw_bags_and_hands(identity, frame, arms, view, canvas)
    _draw_head(identity, frame, view, canvas)
    return ImageOps.mirror(canvas.layer) if view == "left" else canvas.layer


def _lit_person(layer: Image.Image, light_side: float, placement: Placement) -> tuple[Image.Image, tuple[int, int]]:
    """The person cut from ``layer`` and lit from one side (darker away from the light), with its offset."""
    bbox = layer.getbbox() or (0, 0, 1, 1)
    person = layer.crop(bbox)
    xs = (np.arange(bbox[0], bbox[2], dtype=np.float32) / layer.width - placement.centre_x) / 0.15
    ramp = np.clip(255.0 * (1.0 - abs(light_side) * (1.0 - np.sign(light_side) * xs) / 2), 140, 255)
    light = Image.fromarray(np.broadcast_to(ramp.astype(np.uint8), (person.height, person.width)).copy())
    opaque = Image.new("L", person.size, 255)
    return ImageChops.multiply(person, Image.merge("RGBA", (light, light, light, opaque))), bbox[:2]


def sample_placement(rng: np.random.Generator, misalignment: float) -> Placement:
    """A detector-like box around the person: centred, ~88% of the crop height, shifted and scaled by
    up to ``misalignment`` (fraction of the crop)."""
    return Placement(
        centre_x=0.5 + misalignment * rng.uniform(-1.0, 1.0),
        top=0.07 + 0.5 * misalignment * rng.uniform(-1.0, 1.0),
        height=0.88 * (1.0 + misalignment * rng.uniform(-1.0, 1.0)) * rng.uniform(0.97, 1.03),
    )


def render_person(identity: Identity, camera: Camera, spec: SyntheticSpec, rng: np.random.Generator,
                  view: str | None = None, placement: Placement | None = None) -> Image.Image:
    """One camera image of ``identity``.

    Args:
        identity: the person to draw.
        camera: the camera that sees them (scene, viewpoint preference, degradation).
        spec: data set spec; ``occlusion_prob`` and ``misalignment`` are read.
        rng: per-image randomness (view, pose, placement, occlusion, jitter).
        view: one of ``VIEWS``; drawn from the camera's preference when None.
        placement: box placement; drawn from ``spec.misalignment`` when None.

    Returns:
        RGB image of ``spec.width`` × ``spec.height`` pixels.
    """
    if view is None:
        view = VIEWS[int(rng.choice(len(VIEWS), p=camera.view_probs))]
    if placement is None:
        placement = sample_placement(rng, spec.misalignment)
    pose = Pose(stride=float(rng.uniform(-1.0, 1.0)), arm_swing=float(rng.uniform(-1.0, 1.0)))
    image = scene_crop(camera, rng)
    layer = draw_person(identity, view, pose, image.size, placement)
    person, offset = _lit_person(layer, camera.light_side * rng.uniform(0.5, 1.5), placement)
    image.paste(person, offset, person)
    if rng.random() < spec.occlusion_prob:
        passer_by = tuple(tuple(int(c) for c in colour) for colour in rng.permutation(list(UPPER_COLOURS.values()))[:3])
        draw_occluder(image, camera, rng, passer_by)
    return degrade(image, camera, rng)


def render_scene(camera: Camera, rng: np.random.Generator) -> Image.Image:
    """A camera image with nobody in it (false detections: junk or distractor boxes)."""
    return degrade(scene_crop(camera, rng), camera, rng)
