"""What every export format shares: the names of the exported function's input and output, the metadata an
exported file carries, optional-package imports, and image preprocessing without torch.

Every exported model maps normalised images ``[N, 3, H, W]`` float32 (input ``images``, dynamic batch axis)
to the retrieval feature ``[N, D]`` float32 (output ``features``): the model output named by the run's
``eval.feature``, averaged with the output of the mirrored image when ``eval.flip`` is set, i.e. exactly what
``reidkit extract`` computes. H and W are fixed at export time. Nothing here imports torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidkit.data.images import read_rgb
from reidkit.errors import ReidkitError

INPUT_NAME, OUTPUT_NAME = "images", "features"
EXTRAS = {"onnx": "export", "onnxruntime": "export", "onnxscript": "export", "openvino": "openvino"}
# The normalisation of reidkit.data.transforms (ImageNet statistics), restated here so that importing this
# package and running exported models never imports torch; a test checks that both agree.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}  # data.interpolation


@dataclass(frozen=True)
class ModelInfo:
    """What an exported file says about itself: its format, the model output it computes (`feature`, or None
    for an ONNX file not written by reidkit), whether that is flip-averaged, its input size and the resize
    interpolation of its run (`data.interpolation`; "bilinear" for files that do not say)."""

    format: str
    feature: str | None
    flip: bool | None
    height: int
    width: int
    interpolation: str = "bilinear"

    def as_strings(self) -> dict[str, str]:
        """The metadata as string pairs (ONNX model properties, OpenVINO rt_info, a JSON file)."""
        return {"format": self.format, "feature": str(self.feature), "flip": str(self.flip),
                "height": str(self.height), "width": str(self.width), "interpolation": self.interpolation}

    @classmethod
    def from_strings(cls, values: dict[str, str], format: str, height: int, width: int) -> ModelInfo:
        """Read `as_strings` output; missing keys give `format`, `height`, `width`, None and "bilinear".

        Raises:
            ReidkitError: an interpolation reidkit does not resize with.
        """
        flip, interpolation = values.get("flip"), values.get("interpolation", "bilinear")
        if interpolation not in RESAMPLING:
            raise ReidkitError(f"the exported model says its images are resized with {interpolation!r}; reidkit "
                               f"resizes with {' or '.join(RESAMPLING)}: export the run again")
        return cls(format=values.get("format", format), feature=values.get("feature"),
                   flip=None if flip is None else flip == "True", height=int(values.get("height", height)),
                   width=int(values.get("width", width)), interpolation=interpolation)


def require(module: str, purpose: str):
    """Import an optional module, or raise a ReidkitError naming `purpose` and the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module.split(".")[0])
        fix = f'pip install "reidkit[{extra}]"' if extra else f"pip install {module.split('.')[0]}"
        raise ReidkitError(f"{module} is not installed; {purpose} needs it: {fix}") from error


def preprocess_images(image_paths: Sequence[str | Path], height: int, width: int,
                      interpolation: str = "bilinear") -> np.ndarray:
    """Images as a normalised float32 batch [N, 3, height, width], without torch.

    Same steps as `build_test_transform`: RGB, resize (PIL's `interpolation`, "bilinear" or "bicubic", which
    antialias), float32 0–255 pixels, (pixels − 255·mean) / (255·std) with the ImageNet mean/std.

    Raises:
        ReidkitError: an image that cannot be read.
        ValueError: an unknown interpolation.
    """
    if interpolation not in RESAMPLING:
        raise ValueError(f"interpolation must be one of {', '.join(RESAMPLING)}, got {interpolation!r}")
    mean = np.array([255 * value for value in IMAGENET_MEAN], np.float32)
    std = np.array([255 * value for value in IMAGENET_STD], np.float32)
    batch = np.empty((len(image_paths), 3, height, width), np.float32)
    for index, path in enumerate(image_paths):
        try:
            resized = read_rgb(path).resize((width, height), RESAMPLING[interpolation])
        except (OSError, ValueError) as error:
            raise ReidkitError(f"cannot read image {path} ({error})") from error
        pixels = np.asarray(resized, dtype=np.float32)
        batch[index] = ((pixels - mean) / std).transpose(2, 0, 1)
    return batch
