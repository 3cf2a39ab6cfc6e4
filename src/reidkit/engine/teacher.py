"""A teacher for knowledge distillation: a finished run, frozen, computing its outputs beside the student's.

The teacher is loaded as `reidkit eval` loads a run (`reidkit.engine.saved_runs`), so a run of `reidkit train`
and a Torchreid / fast-reid checkpoint made into a run by `reidkit import` serve alike. `WithTeacher` wraps the
student (or its DDP / compiled wrapper): its forward returns the student's output dict plus `teacher_features`
(the teacher run's `eval.feature`, the feature it retrieves with) and `teacher_logits`, which distillation loss
terms read like any other output key. The teacher runs in evaluation mode without gradients, inside the
trainer's autocast block; it sees the student's augmented batch converted on the device to its own
preprocessing (size and normalisation), so a teacher trained at 256×128 teaches a student at 128×64.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reidkit.config import Config
from reidkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from reidkit.engine.saved_runs import load_run_config, load_run_model
from reidkit.errors import ConfigError, ReidkitError
from reidkit.models.reid import ReidModel


@dataclass(frozen=True)
class Preprocessing:
    """What a model expects of its input images: size, per-channel normalisation (RGB, [0, 1] scale) and the
    resize interpolation (`data.interpolation`)."""

    height: int
    width: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"


def run_preprocessing(config: Config) -> Preprocessing:
    """The preprocessing a run's model was trained with: its data size and interpolation (the normalisation is
    ImageNet's)."""
    return Preprocessing(config.data.height, config.data.width, interpolation=config.data.interpolation)


def convert_batch(images: Tensor, source: Preprocessing, target: Preprocessing) -> Tensor:
    """A normalised batch of `source` preprocessing as `target` would have made it, on the images' device.

    x_target = (x_source · std_s + mean_s − mean_t) / std_t per channel, then an antialiased resize to the
    target size with the target's interpolation (bilinear or bicubic: `torch.nn.functional.interpolate`, as
    torchvision's tensor Resize); each step only where the two differ, so equal preprocessing returns `images`
    itself. (The student's batch was already resized once from the image file: the teacher sees a resize of
    that, not of the file.)

    Args:
        images: `[N, 3, H_s, W_s]` float, normalised as `source` says.

    Returns:
        `[N, 3, H_t, W_t]`.
    """
    if (source.mean, source.std) != (target.mean, target.std):
        scale = torch.tensor(source.std) / torch.tensor(target.std)
        shift = (torch.tensor(source.mean) - torch.tensor(target.mean)) / torch.tensor(target.std)
        images = images * scale.to(images)[None, :, None, None] + shift.to(images)[None, :, None, None]
    if (source.height, source.width) != (target.height, target.width):
        images = F.interpolate(images, size=(target.height, target.width), mode=target.interpolation,
                               align_corners=False, antialias=True)
    return images


class Teacher(nn.Module):
    """A frozen model in evaluation mode: `forward(images, camids)` → {"teacher_features", "teacher_logits"}.

    Args:
        model: the teacher network (its parameters are frozen here).
        feature: the output key it retrieves with (its run's `eval.feature`), given as `teacher_features`.
        preprocessing: what the model expects; batches are converted to it from the student's.
    """

    def __init__(self, model: ReidModel, feature: str, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.feature, self.preprocessing = feature, preprocessing
        self.num_classes, self.uses_camids = model.num_classes, model.uses_camids

    def train(self, mode: bool = True) -> Teacher:
        """Stay in evaluation mode (BatchNorm statistics and dropout of the trained teacher), whatever is asked."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: Tensor, camids: Tensor | None = None) -> dict[str, Tensor]:
        outputs = self.model(images, camids)
        return {"teacher_features": outputs[self.feature], "teacher_logits": outputs["logits"]}


class WithTeacher(nn.Module):
    """The student's outputs plus its teacher's: `forward(images [N, 3, H, W], camids [N] | None)` → the
    student's dict with `teacher_features` and `teacher_logits` added.

    Args:
        student: the student model, or its DDP / compiled wrapper (called as it is).
        teacher: the frozen teacher.
        student_preprocessing: how the batches are made (the student's run config).
    """

    def __init__(self, student: nn.Module, teacher: Teacher, student_preprocessing: Preprocessing) -> None:
        super().__init__()
        self.student, self.teacher, self.student_preprocessing = student, teacher, student_preprocessing

    def forward(self, images: Tensor, camids: Tensor | None = None) -> dict:
        outputs = self.student(images, camids) if camids is not None else self.student(images)
        teacher_images = convert_batch(images, self.student_preprocessing, self.teacher.preprocessing)
        return {**outputs, **self.teacher(teacher_images, camids)}


def load_teacher(run_dir: str | Path, device: torch.device) -> Teacher:
    """The frozen teacher of the run folder `run_dir` (`model.teacher`), on `device`.

    Raises:
        ConfigError: `run_dir` is not a finished run folder, or its model does not load; the message names
            model.teacher.
    """
    try:
        config = load_run_config(run_dir)
        model = load_run_model(run_dir, config)
    except ReidkitError as error:
        raise ConfigError(f"model.teacher={run_dir}: {error}") from error
    model = model.to(device).to(memory_format=torch.channels_last)  # as the student's batches
    return Teacher(model, config.eval.feature, run_preprocessing(config))


def with_teacher(student: nn.Module, teacher: Teacher, config: Config, num_classes: int) -> WithTeacher:
    """`student` wrapped with `teacher` (loaded from `config.model.teacher`), checked against the run's terms.

    Args:
        student: the model the trainer calls (the student, or its DDP / compiled wrapper).
        num_classes: identities of the training set (logit distillation needs the teacher to have as many).

    Raises:
        ConfigError: loss.logit_kd is enabled and the teacher's classifier has another number of classes.
    """
    if config.loss.logit_kd.weight > 0 and teacher.num_classes != num_classes:
        raise ConfigError(f"loss.logit_kd needs the teacher's classes to be the student's: the teacher "
                          f"{config.model.teacher} has {teacher.num_classes} classes, this training set "
                          f"{num_classes}; use a teacher trained on the same training set, or set "
                          "loss.logit_kd.weight=0 (the feature-level terms need no shared classes)")
    return WithTeacher(student, teacher, run_preprocessing(config))
