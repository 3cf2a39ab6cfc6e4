"""Knowledge distillation: the losses against hand-worked values and brute-force loops, the teacher in
training (frozen, evaluation mode, its own preprocessing), the config's refusals, and a tiny distillation run
from the command line with a teacher trained in a fixture."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from _cli import reidkit
from torchvision.transforms.v2 import functional as TF

from reidkit.config import load_config
from reidkit.engine.teacher import Preprocessing, Teacher, WithTeacher, convert_batch, load_teacher, with_teacher
from reidkit.errors import ConfigError
from reidkit.losses.cross_rank import CrossRankDistillation
from reidkit.losses.distillation import (RKDAngleLoss, logit_distillation_loss, rkd_angle_loss, rkd_distance_loss,
                                         similarity_preserving_loss)
from reidkit.losses.objective import build_objective
from reidkit.models.reid import build_model

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "configs" / "tiny.yaml"
# Values O(1) after a few dozen float32 operations: relative error well under 1e-5 (float32 eps 1.2e-7).
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-12}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64])


def huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


# Logit distillation


@DTYPES
def test_logit_distillation_hand_worked(dtype) -> None:
    # T = 2: teacher softmax([2 ln 3, 0] / 2) = [3/4, 1/4], student softmax([0, 0]) = [1/2, 1/2];
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2), times T² = 4; the second sample agrees with its teacher (0): mean over 2.
    student = torch.tensor([[0.0, 0.0], [1.0, 3.0]], dtype=dtype)
    teacher = torch.tensor([[2 * math.log(3), 0.0], [6.0, 8.0]], dtype=dtype)  # second: student + 5 per row
    expected = 4 * (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert logit_distillation_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected,
                                                                                              rel=TOLERANCE[dtype])


def test_logit_distillation_is_the_definition_on_random_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 7, generator=generator, dtype=torch.float64), \
        torch.randn(5, 7, generator=generator, dtype=torch.float64)
    temperature = 3.0
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        s_norm = math.log(sum(math.exp(v / temperature) for v in s_row))
        t_norm = math.log(sum(math.exp(v / temperature) for v in t_row))
        total += sum(math.exp(t / temperature - t_norm) * ((t / temperature - t_norm) - (s / temperature - s_norm))
                     for s, t in zip(s_row, t_row))
    expected = temperature ** 2 * total / 5
    assert logit_distillation_loss(student, teacher, temperature).item() == pytest.approx(expected, rel=1e-12)


def test_logit_distillation_refuses_other_classes_and_bad_temperature() -> None:
    with pytest.raises(ValueError, match="same shape"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        logit_distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


# Similarity-preserving


@DTYPES
def test_similarity_preserving_hand_worked(dtype) -> None:
    # Student G = I (rows already unit); teacher G = all ones → rows (1/√2, 1/√2).
    # ‖Ĝ_t − Ĝ_s‖² = 2 (1/√2 − 1)² + 2 · 1/2 = 4 − 2√2; over N² = 4.
    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=dtype)
    assert similarity_preserving_loss(student, teacher).item() == pytest.approx((4 - 2 * math.sqrt(2)) / 4,
                                                                                rel=TOLERANCE[dtype])


def test_similarity_preserving_ignores_scale_and_rotation() -> None:
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    teacher = torch.randn(6, 9, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=generator, dtype=torch.float64))
    base = similarity_preserving_loss(student, teacher)
    assert base.item() > 0.01
    assert similarity_preserving_loss(3.0 * student @ rotation, 0.5 * teacher).item() == pytest.approx(base.item(),
                                                                                                       rel=1e-12)
    assert similarity_preserving_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-15)


# RKD


@DTYPES
def test_rkd_distance_hand_worked(dtype) -> None:
    # Student 0, 1, 2: distances 1, 2, 1, mean 4/3 → ψ 3/4, 3/2, 3/4. Teacher 0, 1, 3: distances 1, 3, 2, mean 2 →
    # ψ 1/2, 3/2, 1. Differences ±1/4 (huber 1/32) on two pairs, 0 on one; each pair twice, over 6 ordered pairs.
    student = torch.tensor([[0.0], [1.0], [2.0]], dtype=dtype)
    teacher = torch.tensor([[0.0, 5.0], [1.0, 5.0], [3.0, 5.0]], dtype=dtype)
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(1 / 48, rel=TOLERANCE[dtype])


@DTYPES
def test_rkd_angle_hand_worked(dtype) -> None:
    # Student: right triangle (0,0), (1,0), (0,1): cosines at its apexes 0, 1/√2, 1/√2. Teacher: collinear 0, 1, 2:
    # cosines 1, −1, 1. Huber of the differences 1/2, 1/2 + 1/√2, 3/4 − 1/√2 sum to 7/4; each apex has two ordered
    # triplets: mean over 6 = 7/12.
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=dtype)
    teacher = torch.tensor([[0.0], [1.0], [2.0]], dtype=dtype)
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(7 / 12, rel=TOLERANCE[dtype])


def _random_pair(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return torch.randn(n, 3, generator=generator, dtype=torch.float64), \
        torch.randn(n, 4, generator=generator, dtype=torch.float64)


def test_rkd_losses_are_their_definitions_over_every_pair_and_triplet() -> None:
    student, teacher = _random_pair()
    s, t = student.tolist(), teacher.tolist()
    pairs = list(itertools.permutations(range(5), 2))
    mu_s = sum(math.dist(s[i], s[j]) for i, j in pairs) / len(pairs)
    mu_t = sum(math.dist(t[i], t[j]) for i, j in pairs) / len(pairs)
    distance = sum(huber(math.dist(s[i], s[j]) / mu_s - math.dist(t[i], t[j]) / mu_t) for i, j in pairs) / len(pairs)

    def cosine(x, i, j, k):
        u = [a - b for a, b in zip(x[j], x[i])]
        v = [a - b for a, b in zip(x[k], x[i])]
        return sum(a * b for a, b in zip(u, v)) / (math.hypot(*u) * math.hypot(*v))

    triplets = list(itertools.permutations(range(5), 3))
    angle = sum(huber(cosine(s, *ijk) - cosine(t, *ijk)) for ijk in triplets) / len(triplets)
    assert rkd_distance_loss(student, teacher).item() == pytest.approx(distance, rel=1e-12)
    assert rkd_angle_loss(student, teacher).item() == pytest.approx(angle, rel=1e-12)


def test_rkd_losses_ignore_scale_and_translation_of_either_side() -> None:
    student, teacher = _random_pair()
    for loss in (rkd_distance_loss, rkd_angle_loss):
        base = loss(student, teacher).item()
        assert base > 1e-3
        assert loss(2.0 * student + 1.0, 0.1 * teacher - 3.0).item() == pytest.approx(base, rel=1e-10)


def test_degenerate_batches_give_zero_or_finite_gradients() -> None:
    one = torch.ones(1, 3, dtype=torch.float64, requires_grad=True)
    two = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    for loss, features in ((rkd_distance_loss, one), (rkd_angle_loss, two)):
        value = loss(features, features.detach())
        value.backward()
        assert value.item() == 0.0 and torch.equal(features.grad, torch.zeros_like(features))
    # coincident points (zero distances, zero directions) and zero features (zero similarity rows)
    coincident = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, -1.0]], dtype=torch.float64,
                              requires_grad=True)
    teacher = torch.randn(4, 5, dtype=torch.float64)
    for loss in (rkd_distance_loss, rkd_angle_loss, similarity_preserving_loss):
        coincident.grad = None
        loss(coincident, teacher).backward()
        assert torch.isfinite(coincident.grad).all(), loss.__name__
    everything_equal = torch.ones(4, 2, dtype=torch.float64, requires_grad=True)
    value = rkd_distance_loss(everything_equal, teacher)  # μ = 0: ψ = 0, no division by zero
    value.backward()
    assert math.isfinite(value.item()) and torch.isfinite(everything_equal.grad).all()


@pytest.mark.parametrize("loss", [logit_distillation_loss, similarity_preserving_loss, rkd_distance_loss,
                                  rkd_angle_loss])
def test_gradients_match_finite_differences(loss) -> None:
    student, teacher = _random_pair()
    if loss is logit_distillation_loss:
        teacher = teacher[:, :3]
    student.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: loss(s, teacher), (student,))


def test_the_teacher_side_is_a_target_and_half_precision_is_computed_in_float32() -> None:
    student, teacher = _random_pair()
    teacher.requires_grad_(True)
    rkd_angle_loss(student.requires_grad_(True), teacher).backward()
    assert teacher.grad is None and student.grad is not None
    value = rkd_distance_loss(student.bfloat16(), teacher.detach().bfloat16())
    assert value.dtype == torch.float32


def test_cross_rank_distillation_is_the_wrapped_loss_in_a_single_process() -> None:
    student, teacher = _random_pair()
    assert CrossRankDistillation(RKDAngleLoss())(student, teacher).item() == rkd_angle_loss(student, teacher).item()


def test_the_objective_gives_distillation_terms_their_teacher_output() -> None:
    config = load_config(None, ["model.teacher=runs/t", "loss.logit_kd.weight=0.5", "loss.rkd_angle.weight=2",
                                "loss.rkd_angle.cross_rank=true", "loss.trihard.weight=0"])
    objective = build_objective(config.loss, num_classes=3, embedding_dim=4)
    assert objective.input_keys == {"id": "logits", "logit_kd": "logits", "rkd_angle": "bn_features"}
    assert objective.target_keys == {"id": None, "logit_kd": "teacher_logits", "rkd_angle": "teacher_features"}
    assert isinstance(objective.terms["rkd_angle"], CrossRankDistillation)
    generator = torch.Generator().manual_seed(3)
    outputs = {"logits": torch.randn(4, 3, generator=generator), "bn_features": torch.randn(4, 4, generator=generator),
               "teacher_logits": torch.randn(4, 3, generator=generator),
               "teacher_features": torch.randn(4, 6, generator=generator)}
    labels = torch.tensor([0, 0, 1, 2])
    total, terms = objective(outputs, labels)
    assert terms["logit_kd"].item() == logit_distillation_loss(outputs["logits"], outputs["teacher_logits"]).item()
    assert terms["rkd_angle"].item() == rkd_angle_loss(outputs["bn_features"], outputs["teacher_features"]).item()
    assert total.item() == pytest.approx(terms["id"].item() + 0.5 * terms["logit_kd"].item()
                                         + 2 * terms["rkd_angle"].item(), rel=1e-6)


# The teacher in training


def test_convert_batch_renormalises_and_resizes_as_the_teacher_would() -> None:
    generator = torch.Generator().manual_seed(4)
    pixels = torch.rand(2, 3, 8, 4, generator=generator)
    student = Preprocessing(8, 4, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    teacher = Preprocessing(16, 8)  # ImageNet normalisation, twice the size
    normalise = lambda x, p: (x - torch.tensor(p.mean)[:, None, None]) / torch.tensor(p.std)[:, None, None]  # noqa: E731
    converted = convert_batch(normalise(pixels, student), student, teacher)
    expected = TF.resize(normalise(pixels, teacher), [16, 8], antialias=True)
    # a few float32 operations on values below 3 in magnitude: differences of a few ulps
    assert converted.shape == (2, 3, 16, 8) and torch.allclose(converted, expected, atol=1e-5, rtol=0)
    same = normalise(pixels, student)
    assert convert_batch(same, student, student) is same
    bicubic = Preprocessing(16, 8, interpolation="bicubic")  # a fast-reid teacher's
    expected = TF.resize(normalise(pixels, teacher), [16, 8], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    converted = convert_batch(normalise(pixels, student), student, bicubic)
    assert torch.allclose(converted, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(converted, convert_batch(normalise(pixels, student), student, teacher), atol=1e-3)


@pytest.fixture(scope="module")
def tiny_models() -> tuple:
    torch.manual_seed(0)
    student = build_model("osnet_x0_25", num_classes=4, last_stride=2)
    teacher = Teacher(build_model("resnet18", num_classes=4, last_stride=2), "bn_features", Preprocessing(64, 32))
    return student, teacher


def test_the_teacher_stays_frozen_in_evaluation_mode_and_sees_its_own_size(tiny_models) -> None:
    student, teacher = tiny_models
    wrapped = WithTeacher(student, teacher, Preprocessing(32, 16)).train()
    assert student.training and not any(module.training for module in teacher.model.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    seen = []
    handle = teacher.model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    images = torch.randn(4, 3, 32, 16)
    outputs = wrapped(images)
    handle.remove()
    assert seen == [(4, 3, 64, 32)]
    assert set(outputs) >= {"features", "bn_features", "logits", "teacher_features", "teacher_logits"}
    assert outputs["teacher_features"].shape == (4, 512) and outputs["bn_features"].shape[1] != 512
    assert not outputs["teacher_features"].requires_grad and outputs["bn_features"].requires_grad
    with torch.no_grad():
        direct = teacher.model(convert_batch(images, Preprocessing(32, 16), teacher.preprocessing))
    assert torch.equal(outputs["teacher_features"], direct["bn_features"])  # eval mode: same computation


# Config refusals and a run from the command line


def test_a_teacher_term_without_a_teacher_and_a_teacher_without_a_term_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"loss.rkd_distance distils a teacher, but model.teacher is empty; set "
                                          r"model.teacher=RUN"):
        load_config(TINY, ["loss.rkd_distance.weight=1"])
    with pytest.raises(ConfigError, match="model.teacher=runs/t is set but no loss term reads the teacher"):
        load_config(TINY, ["model.teacher=runs/t"])
    with pytest.raises(ConfigError, match=r"loss.logit_kd.temperature: 0.0 is not allowed"):
        load_config(TINY, ["model.teacher=runs/t", "loss.logit_kd.weight=1", "loss.logit_kd.temperature=0"])


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny ResNet-18 run (configs/tiny.yaml, one epoch) and its data folder."""
    root = tmp_path_factory.mktemp("distill")
    result = reidkit("train", "--config", str(TINY), "--out", str(root / "teacher"), f"data.root={root / 'data'}",
                     "train.epochs=1", "train.checkpoint_every_steps=0")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "teacher", root / "data"


def test_a_tiny_student_is_distilled_from_the_command_line(teacher_run, tmp_path) -> None:
    teacher, data = teacher_run
    run = tmp_path / "student"
    result = reidkit("train", "--config", str(TINY), "--out", str(run), f"data.root={data}", "train.epochs=1",
                     "train.checkpoint_every_steps=0", "model.backbone=osnet_x0_25", "data.height=32",
                     "data.width=16", f"model.teacher={teacher}", "loss.logit_kd.weight=1",
                     "loss.similarity_preserving.weight=1", "loss.rkd_distance.weight=1", "loss.rkd_angle.weight=2")
    assert result.returncode == 0, result.stderr[-3000:]
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [record for record in steps if record["kind"] == "train"]
    names = ("loss/logit_kd", "loss/similarity_preserving", "loss/rkd_distance", "loss/rkd_angle")
    assert steps and all(math.isfinite(record[name]) and record[name] > 0 for record in steps for name in names)
    assert (run / "model.safetensors").is_file() and 0 <= json.loads((run / "metrics.json").read_text())["mAP"] <= 1
    assert load_config(run / "config.yaml").model.teacher == str(teacher)


def test_a_missing_teacher_is_one_error_line_before_any_work(teacher_run, tmp_path) -> None:
    _, data = teacher_run
    result = reidkit("train", "--config", str(TINY), "--out", str(tmp_path / "s"), f"data.root={data}",
                     f"model.teacher={tmp_path / 'nothing'}", "loss.rkd_distance.weight=1")
    assert result.returncode == 2 and not (tmp_path / "s").exists()  # refused before the run folder is made
    assert result.stderr.strip().splitlines() == [
        f"reidkit: error: model.teacher={tmp_path / 'nothing'}: {tmp_path / 'nothing'} is not a run folder (no "
        "config.yaml); pass the --out of `reidkit train`"]


def test_logit_distillation_from_a_teacher_of_other_classes_is_refused(teacher_run) -> None:
    teacher, _ = teacher_run
    config = load_config(TINY, [f"model.teacher={teacher}", "loss.logit_kd.weight=1"])
    loaded = load_teacher(teacher, torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"loss.logit_kd needs the teacher's classes to be the student's: the teacher "
                                          r".* has \d+ classes, this training set 5; use a teacher trained on the same"):
        with_teacher(torch.nn.Identity(), loaded, config, 5)
    features_only = load_config(TINY, [f"model.teacher={teacher}", "loss.rkd_distance.weight=1"])
    assert isinstance(with_teacher(torch.nn.Identity(), loaded, features_only, 5), WithTeacher)
    assert isinstance(with_teacher(torch.nn.Identity(), loaded, config, loaded.num_classes), WithTeacher)
