"""Identities of the procedural pedestrian data set and their Market-1501 attribute coding.

An identity is everything that stays fixed for one synthetic person across cameras: body shape, skin and
hair, clothing colours (from the small Market-1501 palette of 8 upper / 9 lower colours, so many people
share colours), clothing texture, shoes and accessories. ``Identity.attributes`` codes it the way the
Market-1501 attribute annotation does (Lin et al., "Improving person re-identification by attribute and
identity learning", Pattern Recognition 2019): 1/2 for binary attributes, age 1..4.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RGB = tuple[int, int, int]

# Market-1501 colour attributes, in the order of the annotation file.
UPPER_COLOURS: dict[str, RGB] = {
    "black": (24, 24, 27), "white": (232, 232, 228), "red": (186, 34, 40), "purple": (112, 54, 140),
    "yellow": (226, 196, 44), "gray": (126, 126, 129), "blue": (40, 72, 168), "green": (44, 128, 64),
}
LOWER_COLOURS: dict[str, RGB] = {
    "black": (24, 24, 27), "white": (232, 232, 228), "pink": (232, 150, 180), "purple": (112, 54, 140),
    "yellow": (226, 196, 44), "gray": (126, 126, 129), "blue": (40, 72, 168), "green": (44, 128, 64),
    "brown": (110, 72, 42),
}
# Rough Market-1501 frequencies: dark and neutral clothes dominate, so colour alone rarely identifies.
_UPPER_WEIGHTS = (0.24, 0.20, 0.09, 0.05, 0.06, 0.15, 0.13, 0.08)
_LOWER_WEIGHTS = (0.34, 0.07, 0.04, 0.03, 0.03, 0.15, 0.21, 0.05, 0.08)

ATTRIBUTE_NAMES: tuple[str, ...] = (
    "gender", "hair", "up", "down", "clothes", "hat", "backpack", "bag", "handbag", "age",
    *(f"up{name}" for name in UPPER_COLOURS), *(f"down{name}" for name in LOWER_COLOURS),
)

_SKIN_TONES: tuple[RGB, ...] = (
    (241, 204, 176), (224, 178, 140), (198, 146, 106), (170, 118, 82), (128, 84, 56), (92, 60, 42),
)
_HAIR_COLOURS: tuple[RGB, ...] = ((20, 16, 14), (48, 32, 22), (86, 58, 34), (150, 112, 60), (196, 160, 98))
_GREY_HAIR: tuple[RGB, ...] = ((150, 150, 150), (200, 200, 196), (118, 112, 108))
_SHOE_COLOURS: tuple[RGB, ...] = ((20, 20, 20), (236, 236, 236), (92, 60, 36), (110, 110, 116), (160, 40, 40))
_ACCESSORY_COLOURS: tuple[RGB, ...] = (
    (22, 22, 24), (70, 46, 30), (120, 120, 124), (30, 40, 80), (150, 36, 40), (190, 170, 130), (40, 90, 60),
)
TEXTURES = ("plain", "stripes", "plaid", "dots")
LOGO_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "bar")


@dataclass(frozen=True)
class Texture:
    """Pattern over the upper garment, in body-height units so it scales with the person."""

    kind: str  # one of TEXTURES
    colour: RGB  # colour of the pattern (the garment colour stays dominant)
    angle: float  # stripe orientation in radians
    period: float  # pattern period in body heights
    duty: float  # fraction of a period covered by the pattern colour (stripes) or dot diameter (dots)


@dataclass(frozen=True)
class Logo:
    """A chest print, visible from the front only."""

    shape: str  # one of LOGO_SHAPES
    colour: RGB
    size: float  # in body heights


@dataclass(frozen=True)
class Identity:
    """Everything that stays fixed for one person; lengths are fractions of the body height."""

    gender: int  # Market coding: 1 male, 2 female
    age: int  # 1 young, 2 teenager, 3 adult, 4 old
    head: float  # head height
    shoulder: float  # half shoulder width
    hip: float  # half hip width
    torso: float  # shoulder-to-hip length
    skin: RGB
    hair_colour: RGB
    long_hair: bool
    upper_colour: str  # key of UPPER_COLOURS
    upper_rgb: RGB  # identity-specific shade of that colour
    long_sleeves: bool
    texture: Texture
    logo: Logo | None
    lower_colour: str  # key of LOWER_COLOURS
    lower_rgb: RGB
    dress: bool  # dress or skirt instead of trousers
    long_lower: bool  # trousers / long dress rather than shorts / short skirt
    shoes: RGB
    hat: RGB | None  # colour when worn
    backpack: RGB | None
    bag: RGB | None  # shoulder bag
    handbag: RGB | None
    carry_side: int  # +1 or -1: the side (in the person's frame) of the handbag and shoulder bag

    def attributes(self) -> dict[str, int]:
        """Market-1501 attribute codes of this identity, keyed by ``ATTRIBUTE_NAMES``."""
        codes = {
            "gender": self.gender, "hair": 2 if self.long_hair else 1, "up": 2 if not self.long_sleeves else 1,
            "down": 1 if self.long_lower else 2, "clothes": 1 if self.dress else 2,
            "hat": _yes(self.hat), "backpack": _yes(self.backpack), "bag": _yes(self.bag),
            "handbag": _yes(self.handbag), "age": self.age,
        }
        codes.update({f"up{name}": 2 if name == self.upper_colour else 1 for name in UPPER_COLOURS})
        codes.update({f"down{name}": 2 if name == self.lower_colour else 1 for name in LOWER_COLOURS})
        return codes


def _yes(item: RGB | None) -> int:
    return 1 if item is None else 2


def _pick(rng: np.random.Generator, options: tuple, weights: tuple[float, ...] | None = None):
    probabilities = None if weights is None else np.asarray(weights) / np.sum(weights)
    return options[int(rng.choice(len(options), p=probabilities))]


def _shade(name: str, palette: dict[str, RGB], rng: np.random.Generator) -> RGB:
    """An identity-specific variant of ``palette[name]`` whose nearest palette colour is still ``name``."""
    colours = np.asarray(list(palette.values()), dtype=np.float64)
    target = list(palette).index(name)
    for _ in range(8):
        varied = np.clip(colours[target] * rng.uniform(0.86, 1.1) + rng.normal(0.0, 5.0, 3), 0, 255).astype(int)
        if np.argmin(((colours - varied) ** 2).sum(axis=1)) == target:
            return tuple(int(v) for v in varied)
    return palette[name]


def _sample_texture(rng: np.random.Generator, garment: RGB) -> Texture:
    kind = _pick(rng, TEXTURES, (0.45, 0.3, 0.13, 0.12))
    contrast_colours = (*UPPER_COLOURS.values(), tuple(int(c * 0.55) for c in garment))
    colour = _pick(rng, tuple(c for c in contrast_colours if c != garment))
    # The pattern covers at most about a third of the garment, so the garment colour stays dominant.
    duty = {"plain": 0.0, "stripes": rng.uniform(0.2, 0.35), "plaid": rng.uniform(0.1, 0.18),
            "dots": rng.uniform(0.4, 0.6)}[kind]
    angle = _pick(rng, (0.0, np.pi / 2, np.pi / 4, -np.pi / 4), (0.5, 0.25, 0.125, 0.125))
    return Texture(kind, colour, float(angle + rng.normal(0, 0.05)), float(rng.uniform(0.025, 0.07)), float(duty))


def _sample_logo(rng: np.random.Generator, upper_colour: str) -> Logo:
    colours = tuple(rgb for name, rgb in UPPER_COLOURS.items() if name != upper_colour)
    return Logo(_pick(rng, LOGO_SHAPES), _pick(rng, colours), float(rng.uniform(0.035, 0.07)))


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw one random person.

    Args:
        rng: source of randomness; the identity is a pure function of its state.

    Returns:
        An ``Identity`` whose attributes follow rough Market-1501 frequencies.
    """
    gender = 1 if rng.random() < 0.55 else 2
    age = int(rng.choice(4, p=(0.03, 0.25, 0.64, 0.08))) + 1
    build = rng.uniform(0.9, 1.15) * (0.9 if age == 1 else 1.0)
    female = gender == 2
    upper_colour = _pick(rng, tuple(UPPER_COLOURS), _UPPER_WEIGHTS)
    lower_colour = _pick(rng, tuple(LOWER_COLOURS), _LOWER_WEIGHTS)
    upper_rgb = _shade(upper_colour, UPPER_COLOURS, rng)
    dress = female and rng.random() < 0.3
    return Identity(
        gender=gender,
        age=age,
        head=float({1: 0.165, 2: 0.142, 3: 0.13, 4: 0.13}[age] + rng.normal(0, 0.005)),
        shoulder=float((0.128 if female else 0.15) * build),
        hip=float((0.124 if female else 0.112) * build),
        torso=float(rng.uniform(0.27, 0.31)),
        skin=_pick(rng, _SKIN_TONES),
        hair_colour=_pick(rng, _GREY_HAIR if age == 4 else _HAIR_COLOURS),
        long_hair=bool(rng.random() < (0.75 if female else 0.07)),
        upper_colour=upper_colour,
        upper_rgb=upper_rgb,
        long_sleeves=bool(rng.random() < 0.5),
        texture=_sample_texture(rng, upper_rgb),
        logo=_sample_logo(rng, upper_colour) if rng.random() < 0.3 else None,
        lower_colour=lower_colour,
        lower_rgb=_shade(lower_colour, LOWER_COLOURS, rng),
        dress=bool(dress),
        long_lower=bool(rng.random() < (0.5 if dress else 0.75)),
        shoes=_pick(rng, _SHOE_COLOURS),
        hat=_pick(rng, _ACCESSORY_COLOURS) if rng.random() < 0.1 else None,
        backpack=_pick(rng, _ACCESSORY_COLOURS) if rng.random() < 0.3 else None,
        bag=_pick(rng, _ACCESSORY_COLOURS) if rng.random() < 0.2 else None,
        handbag=_pick(rng, _ACCESSORY_COLOURS) if rng.random() < (0.25 if female else 0.07) else None,
        carry_side=1 if rng.random() < 0.5 else -1,
    )
