"""Distributed metric learning: rank helpers, gather with gradient, DistributedPKSampler, cross-rank
mining and the class-sharded classifier.

The multi-process tests spawn 2 gloo ranks on CPU once (module fixture, float64) and compare DDP
training with single-process training on the concatenated global batch: loss values, embedding
gradients (W·∂L/∂e on each rank, the convention of `reidkit.distributed`) and weights after SGD steps.
"""

from __future__ import annotations

import copy
from pathlib import Path

import _dist_worker as toy
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reidkit import distributed
from reidkit.data.samplers import DistributedPKSampler, PKSampler
from reidkit.losses import TriHardLoss, cross_entropy_label_smooth, trihard_loss
from reidkit.losses.cross_rank import CrossRankLoss
from reidkit.losses.sharded import ShardedLinearCrossEntropy, _initial_rows, shard_classes

pytestmark = pytest.mark.numerics  # cross-rank losses and gradients vs one process

SPAWN_DEADLINE_S = 120.0
TOLERANCE = {"rtol": 1e-9, "atol": 1e-11}  # float64 on both sides


def _spawn(tmp_dir: Path) -> list[dict]:
    """Run `toy.worker` on WORLD_SIZE ranks and read what each wrote."""
    toy.spawn_ranks(toy.worker, (toy.WORLD_SIZE, str(tmp_dir / "rendezvous"), str(tmp_dir)), deadline_s=SPAWN_DEADLINE_S)
    return [torch.load(tmp_dir / f"rank{rank}.pt") for rank in range(toy.WORLD_SIZE)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory, reference: dict) -> list[dict]:
    tmp_dir = tmp_path_factory.mktemp("dist")
    torch.save(reference["sharded"]["gathered"], tmp_dir / "single_process_state.pt")  # for the 1 → 2 load
    return _spawn(tmp_dir)


@pytest.fixture(scope="module")
def reference() -> dict:
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return {mode: toy.train(mode, reference=True) for mode in toy.MODES}
    finally:
        torch.set_default_dtype(default)


def _rank_slice(rank: int, rows: int) -> slice:
    per_rank = rows // toy.WORLD_SIZE
    return slice(rank * per_rank, (rank + 1) * per_rank)


# Single process: every helper is a no-op.


def test_helpers_in_a_single_process() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main_process()) == (0, 1, True)
    distributed.barrier()
    x = torch.randn(5, 3, requires_grad=True)
    assert distributed.all_gather_with_grad(x) is x
    gathered = distributed.all_gather_tensors(x)
    assert torch.equal(gathered, x) and not gathered.requires_grad
    assert torch.equal(distributed.gather_to_main(x), x)
    assert distributed.all_reduce_with_grad(x) is x
    with pytest.raises(ValueError, match="leading batch dimension"):
        distributed.all_gather_with_grad(torch.tensor(1.0))
    with pytest.raises(ValueError, match="dst must be a rank"):
        distributed.gather_to_main(x, dst=1)


def test_cross_rank_loss_is_the_wrapped_loss_in_a_single_process() -> None:
    embeddings = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.arange(4).repeat_interleave(3)
    wrapped = CrossRankLoss(TriHardLoss(margin=0.3))(embeddings, labels)
    (grad_wrapped,) = torch.autograd.grad(wrapped, embeddings)
    plain = trihard_loss(embeddings, labels, margin=0.3)
    (grad_plain,) = torch.autograd.grad(plain, embeddings)
    assert torch.equal(wrapped, plain) and torch.equal(grad_wrapped, grad_plain)
    with pytest.raises(ValueError, match="labels"):
        distributed.global_batch_loss(trihard_loss, embeddings, labels[:-1])


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sharded_classifier_in_a_single_process_is_linear_plus_smoothed_cross_entropy(
    epsilon: float, dtype: torch.dtype
) -> None:
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-12}
    torch.manual_seed(0)
    module = ShardedLinearCrossEntropy(7, 5, label_smoothing=epsilon, std=1.0).to(dtype)
    assert (module.start, module.end) == (0, 7) and module.weight.shape == (7, 5)
    features = (10 * torch.randn(9, 5, dtype=dtype)).requires_grad_()  # large logits: the max shift matters
    labels = torch.randint(0, 7, (9,))
    loss = module(features, labels)
    grads = torch.autograd.grad(loss, [features, module.weight])
    weight = module.weight.detach().clone().requires_grad_()
    expected = cross_entropy_label_smooth(F.linear(features, weight), labels, epsilon)
    expected_grads = torch.autograd.grad(expected, [features, weight])
    torch.testing.assert_close(loss, expected, **tolerance)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad, **tolerance)


def test_sharded_classifier_validates_inputs() -> None:
    module = ShardedLinearCrossEntropy(4, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        module(torch.randn(2, 3), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="expected features"):
        module(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epsilon"):
        ShardedLinearCrossEntropy(4, 3, label_smoothing=1.0)
    with pytest.raises(ValueError, match="fewer classes than ranks"):
        shard_classes(2, 0, 3)
    full = torch.randn(4, 3)
    module.load_full_weight(full)
    assert torch.equal(module.full_weight(), full)


def test_shards_are_contiguous_near_equal_and_their_initial_rows_do_not_depend_on_the_split() -> None:
    for num_classes, world_size in [(13, 2), (751, 4), (3000, 8), (5, 5)]:
        ranges = [shard_classes(num_classes, rank, world_size) for rank in range(world_size)]
        assert ranges[0][0] == 0 and ranges[-1][1] == num_classes
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        sizes = [end - start for start, end in ranges]
        assert max(sizes) - min(sizes) <= 1
    full = _initial_rows(0, 2500, 3, std=0.5, seed=7)  # crosses the 1024-class init blocks
    for start, end in [(0, 1), (1000, 1030), (1024, 2048), (2047, 2500)]:
        assert torch.equal(_initial_rows(start, end, 3, std=0.5, seed=7), full[start:end])
    assert not torch.equal(_initial_rows(0, 10, 3, std=0.5, seed=8), full[:10])


# DistributedPKSampler: pure functions of (pids, P, K, seed, epoch, rank, W); no processes needed.


def _pids(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 11, size=30)
    return rng.permutation(np.repeat(rng.choice(500, size=30, replace=False), counts)).tolist()


@pytest.mark.parametrize("epoch_length", ["pk", "images"])
@pytest.mark.parametrize(("p", "k", "world_size"), [(4, 2, 2), (6, 3, 3), (8, 4, 4), (4, 1, 2)])
def test_distributed_pk_sampler_splits_each_global_batch_by_whole_identities(
    p: int, k: int, world_size: int, epoch_length: str
) -> None:
    pids = _pids(p * k)
    single = PKSampler(pids, p, k, seed=5, epoch_length=epoch_length)
    samplers = [DistributedPKSampler(pids, p, k, seed=5, epoch_length=epoch_length, rank=r, world_size=world_size)
                for r in range(world_size)]
    for epoch in (0, 3):
        single.set_epoch(epoch)
        for sampler in samplers:
            sampler.set_epoch(epoch)
        per_rank = [list(sampler) for sampler in samplers]
        assert {len(sampler) for sampler in samplers} == {len(single)}
        assert all(len(batches) == len(single) for batches in per_rank)
        for step, global_batch in enumerate(single):
            local_batches = [batches[step] for batches in per_rank]
            assert sum(local_batches, []) == global_batch  # rank order concatenates to the global batch
            identities = [{pids[index] for index in batch} for batch in local_batches]
            assert all(len(batch) == (p // world_size) * k for batch in local_batches)
            assert all(len(ids) == p // world_size for ids in identities)
            assert len(set().union(*identities)) == p  # no identity on two ranks in the same step


def test_distributed_pk_sampler_with_one_rank_is_pk_sampler() -> None:
    pids = _pids(1)
    single, distributed_single = PKSampler(pids, 4, 3, seed=2), DistributedPKSampler(pids, 4, 3, seed=2)
    for epoch in (0, 1):
        single.set_epoch(epoch)
        distributed_single.set_epoch(epoch)
        assert list(distributed_single) == list(single) and len(distributed_single) == len(single)


def test_distributed_pk_sampler_refuses_ranks_with_fewer_than_two_identities() -> None:
    pids = _pids(2)
    with pytest.raises(ValueError, match=r"P=4 .* W=4 ranks leaves P_local=1 < 2: .*raise data.p or lower nproc"):
        DistributedPKSampler(pids, 4, 2, rank=0, world_size=4)
    with pytest.raises(ValueError, match="multiple of nproc"):
        DistributedPKSampler(pids, 6, 2, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank must be in"):
        DistributedPKSampler(pids, 4, 2, rank=2, world_size=2)


# Two gloo ranks against single-process training on the global batch.


@pytest.mark.slow  # two spawned ranks, shared by these tests (~20 s); still run by make test
def test_rank_helpers_and_collectives_on_two_ranks(ranks: list[dict]) -> None:
    world_size = toy.WORLD_SIZE
    expected_rows = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    for rank, result in enumerate(r["helpers"] for r in ranks):
        assert (result["rank"], result["world_size"]) == (rank, world_size)
        assert result["is_distributed"] and result["is_main_process"] == (rank == 0)
        assert torch.equal(result["all_gather_tensors"], expected_rows)
        assert (result["gather_to_main"] is None) == (rank != 0)
        # uneven sizes (1 and 2 rows): rank order, and the gradient of L = Σ w·gathered is W·w[own rows]
        expected = torch.tensor([[0.0, 1.0], [10.0, 11.0], [12.0, 13.0]], dtype=torch.float64)
        assert torch.equal(result["all_gather_with_grad"], expected)
        weights = torch.arange(6.0, dtype=torch.float64).reshape(3, 2)
        own_rows = slice(0, 1) if rank == 0 else slice(1, 3)
        assert torch.equal(result["all_gather_with_grad_grad"], world_size * weights[own_rows])
        assert result["all_reduce_with_grad"].item() == 3.0 and result["all_reduce_with_grad_grad"].item() == 6.0
    assert torch.equal(ranks[0]["helpers"]["gather_to_main"], expected_rows)


@pytest.mark.slow
@pytest.mark.parametrize("mode", toy.MODES)
def test_ddp_training_equals_single_process_training_on_the_global_batch(
    mode: str, ranks: list[dict], reference: dict
) -> None:
    expected = reference[mode]
    results = [r[mode] for r in ranks]
    assert len(expected["losses"]) == toy.STEPS
    for step in range(toy.STEPS):
        # the global batch is the rank-order concatenation of the local ones
        assert sum((r["batches"][step] for r in results), []) == expected["batches"][step]
        # DDP averages gradients, so the single-process loss is the mean of the rank losses; global
        # losses are the same on every rank
        mean_loss = np.mean([r["losses"][step] for r in results])
        assert mean_loss == pytest.approx(expected["losses"][step], rel=1e-10)
        if mode in ("cross_rank", "sharded", "sync_bn"):
            assert results[0]["losses"][step] == pytest.approx(results[1]["losses"][step], rel=1e-12)
        rows = expected["embedding_grads"][step].shape[0]
        for rank, result in enumerate(results):
            reference_grad = expected["embedding_grads"][step][_rank_slice(rank, rows)]
            torch.testing.assert_close(result["embedding_grads"][step], toy.WORLD_SIZE * reference_grad, **TOLERANCE)
    for rank, result in enumerate(results):
        for name, value in expected["model"].items():
            torch.testing.assert_close(result["model"][name], value, **TOLERANCE)
        start, end = result["classifier_range"]
        torch.testing.assert_close(result["classifier"], expected["classifier"][start:end], **TOLERANCE)
        torch.testing.assert_close(result["full_classifier"], expected["classifier"], **TOLERANCE)


@pytest.mark.slow
def test_cross_rank_mining_differs_from_per_rank_mining(ranks: list[dict], reference: dict) -> None:
    local, cross_rank = reference["local"]["losses"], reference["cross_rank"]["losses"]
    assert abs(local[0] - cross_rank[0]) > 1e-3  # same initial model, same batch: only the mining differs
    assert [r["cross_rank"]["losses"][0] for r in ranks] == pytest.approx([cross_rank[0]] * 2, rel=1e-10)
    assert [r["local"]["losses"][0] for r in ranks] != pytest.approx([cross_rank[0]] * 2, rel=1e-6)
    model_local, model_cross = ranks[0]["local"]["model"], ranks[0]["cross_rank"]["model"]
    assert any(not torch.allclose(model_local[name], model_cross[name]) for name in model_local)


@pytest.mark.slow
def test_sharded_checkpoints_hold_the_full_classifier_and_load_into_any_world_size(
    ranks: list[dict], reference: dict
) -> None:
    """gather_sharded_state writes the full weight and momentum whatever the world size; load_sharded_state
    gives each rank its rows: 2 → 2, 1 → 2 (in the ranks) and 2 → 1 (here)."""
    full_weight = reference["sharded"]["classifier"]
    objective_state, optimizer_state = reference["sharded"]["gathered"]
    index = len(list(toy.make_model().parameters()))  # the classifier's place in the optimiser (after the model's)
    full_momentum = optimizer_state["state"][index]["momentum_buffer"]
    assert full_momentum.shape == full_weight.shape and full_momentum.abs().sum() > 0
    torch.testing.assert_close(objective_state["weight"], full_weight, **TOLERANCE)
    for rank, result in enumerate(ranks):
        gathered_objective, gathered_optimizer = result["sharded"]["gathered"]
        torch.testing.assert_close(gathered_objective["weight"], full_weight, **TOLERANCE)
        torch.testing.assert_close(gathered_optimizer["state"][index]["momentum_buffer"], full_momentum, **TOLERANCE)
        for loaded in (result["load_own"], result["load_single"]):
            start, end = loaded["range"]
            assert (start, end) == shard_classes(toy.NUM_IDENTITIES, rank, toy.WORLD_SIZE)
            torch.testing.assert_close(loaded["weight"], full_weight[start:end], **TOLERANCE)
            torch.testing.assert_close(loaded["momentum"], full_momentum[start:end], **TOLERANCE)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        single = toy.load_sharded(ranks[0]["sharded"]["gathered"])  # 2 → 1
    finally:
        torch.set_default_dtype(default)
    assert single["range"] == (0, toy.NUM_IDENTITIES)
    torch.testing.assert_close(single["weight"], full_weight, **TOLERANCE)
    torch.testing.assert_close(single["momentum"], full_momentum, **TOLERANCE)


def test_a_shard_saved_by_an_older_version_is_refused_with_the_fix() -> None:
    from reidkit.losses.sharded import load_sharded_state

    classifier = ShardedLinearCrossEntropy(6, 3)
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(3, 3\), not the full classifier \[6, 3\].*older reidkit"):
        load_sharded_state(classifier, optimizer, {"weight": torch.zeros(3, 3)}, optimizer.state_dict())


@pytest.mark.slow
def test_shards_split_the_classifier_between_the_ranks(ranks: list[dict]) -> None:
    ranges = [r["sharded"]["classifier_range"] for r in ranks]
    assert ranges == [shard_classes(toy.NUM_IDENTITIES, rank, toy.WORLD_SIZE) for rank in range(toy.WORLD_SIZE)]
    assert ranges == [(0, 7), (7, 13)]


def test_two_process_cli_training_and_distributed_evaluation(tmp_path):
    """`reidkit train --nproc 2` (torchrun, gloo): rank 0 writes the run folder, and the metrics of the
    distributed evaluation (sharded extraction, gathered on rank 0) equal a single-process evaluation of
    the saved weights."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tiny = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "reidkit", "--quiet", "train", "--nproc", "2", "--config", tiny,
               "--out", str(run), f"data.root={tmp_path / 'data'}", "train.epochs=1", "loss.trihard.cross_rank=true"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("run folder:") == 1  # printed by rank 0 only
    trained = json.loads((run / "metrics.json").read_text())
    evaluated = subprocess.run([sys.executable, "-m", "reidkit", "--quiet", "eval", "--run", str(run)],
                               capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr
    single = json.loads((run / "eval" / "synthetic" / "metrics.json").read_text())  # eval/<test set>/
    for key in ("rank1", "mAP", "mINP", "num_valid_queries"):
        assert single[key] == pytest.approx(trained[key], abs=1e-6), key


def test_cpu_sync_batchnorm_is_batchnorm_in_one_process_and_conversion_keeps_the_state() -> None:
    from reidkit.models.sync_batchnorm import CpuSyncBatchNorm, convert_sync_batchnorm

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 4 * 4, 5), torch.nn.BatchNorm1d(5))
    model[4].weight.requires_grad_(False)
    reference = {name: value.clone() for name, value in model.state_dict().items()}
    plain = copy.deepcopy(model)  # conversion reuses the parameter tensors
    converted = convert_sync_batchnorm(model, torch.device("cpu"))
    assert converted is model and isinstance(model[1], CpuSyncBatchNorm) and isinstance(model[4], CpuSyncBatchNorm)
    assert list(model.state_dict()) == list(reference) and not model[4].weight.requires_grad
    x = torch.randn(6, 3, 6, 6)
    for mode in (True, False):
        model.train(mode), plain.train(mode)
        torch.testing.assert_close(model(x), plain(x))
    for name, value in plain.state_dict().items():  # running statistics updated as BatchNorm does
        torch.testing.assert_close(model.state_dict()[name], value)
