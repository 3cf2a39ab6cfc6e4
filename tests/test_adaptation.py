"""Clustering-based domain adaptation: Jaccard graph against a brute-force reference, DBSCAN on a hand-made
matrix, the cluster memory by hand, pseudo-label scores, the folder loader and the config checks."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

pytest.importorskip("sklearn")
pytest.importorskip("faiss")

from reidkit.config import load_config  # noqa: E402
from reidkit.data.unlabeled import load_unlabeled_folder  # noqa: E402
from reidkit.engine.adaptation import check_adaptation_config  # noqa: E402
from reidkit.engine.clustering import cluster_means, dbscan_labels  # noqa: E402
from reidkit.errors import ConfigError, DatasetError  # noqa: E402
from reidkit.losses.cluster_memory import ClusterMemoryLoss, cluster_memory_loss, momentum_update  # noqa: E402
from reidkit.metrics.jaccard import jaccard_distance_graph  # noqa: E402
from reidkit.metrics.pseudo_labels import pseudo_label_quality  # noqa: E402


def brute_force_jaccard(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """The k-reciprocal Jaccard distance by its definition, dense, in float64, one item at a time."""
    units = features / np.linalg.norm(features, axis=1, keepdims=True)
    n = len(units)
    d = ((units[:, None, :] - units[None, :, :]) ** 2).sum(-1)
    rank = np.argsort(d, axis=1, kind="stable")

    def reciprocal(i, k):
        return [j for j in rank[i, :k + 1] if i in rank[j, :k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        core = reciprocal(i, k1)
        expanded = set(core)
        for j in core:
            half = reciprocal(j, round(k1 / 2))
            if len(set(half) & set(core)) > 2 / 3 * len(half):
                expanded |= set(half)
        members = sorted(expanded)
        weight = np.exp(-d[i, members])
        v[i, members] = weight / weight.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(0) for i in range(n)])
    shared = np.array([[np.minimum(v[i], v[j]).sum() for j in range(n)] for i in range(n)])
    return 1 - shared / (2 - shared)


def clustered_features(seed: int = 0) -> np.ndarray:
    """40 float32 features in 5 loose groups of 8 (no tied distances)."""
    rng = np.random.default_rng(seed)
    return np.concatenate([c + 0.4 * rng.normal(size=(8, 8)) for c in rng.normal(size=(5, 8))]).astype(np.float32)


@pytest.mark.parametrize("k1, k2", [(6, 3), (4, 1), (20, 6)])
def test_jaccard_graph_matches_the_brute_force_definition(k1, k2):
    features = clustered_features()
    expected = brute_force_jaccard(features.astype(np.float64), k1, k2)
    graph = jaccard_distance_graph(features, k1, k2, max_distance=1.0, chunk_size=7)
    dense = np.ones_like(expected)
    coo = graph.tocoo()
    dense[coo.row, coo.col] = coo.data
    # float32 distances and weights, sums of <= 40 terms: agreement to ~1e-6; pairs sharing nothing are 1
    np.testing.assert_allclose(dense, expected, atol=2e-6)
    # J(i, i) = 0 up to the float32 rounding of the row sums of V (1 ± a few ulp)
    assert (graph.diagonal() < 1e-6).all() and graph.nnz == int((expected < 1 - 1e-9).sum())


def test_jaccard_graph_keeps_only_entries_within_max_distance():
    features = clustered_features(1)
    full = jaccard_distance_graph(features, 6, 3).tocoo()
    cut = jaccard_distance_graph(features, 6, 3, max_distance=0.5)
    kept = full.data <= 0.5
    assert cut.nnz == kept.sum() and 0 < kept.sum() < full.nnz
    np.testing.assert_array_equal(cut.toarray()[full.row[kept], full.col[kept]], full.data[kept])
    assert (cut.data <= 0.5).all() and (cut.diagonal() < 1e-6).all()


def test_jaccard_graph_refuses_a_single_item():
    with pytest.raises(ValueError, match="N >= 2"):
        jaccard_distance_graph(np.ones((1, 4), np.float32))


def hand_made_graph() -> sp.csr_matrix:
    """7 points: 0, 1, 2 within 0.2 of each other (1–2 at distance 0, stored), 3 within 0.3 of 2 only,
    4 alone, 5–6 a pair at 0.1; only entries <= 0.35 are stored."""
    entries = {(0, 1): 0.1, (0, 2): 0.2, (1, 2): 0.0, (2, 3): 0.3, (5, 6): 0.1}
    rows, cols, values = list(range(7)), list(range(7)), [0.0] * 7
    for (a, b), value in entries.items():
        rows += [a, b]
        cols += [b, a]
        values += [value, value]
    return sp.csr_matrix((values, (rows, cols)), shape=(7, 7))


@pytest.mark.parametrize("eps, min_samples, expected", [
    (0.35, 3, [0, 0, 0, 0, -1, -1, -1]),  # 3 is a border point of the core 0, 1, 2; the pair is too small
    (0.35, 2, [0, 0, 0, 0, -1, 1, 1]),
    (0.15, 2, [0, 0, 0, -1, -1, 1, 1]),  # 2 joins through its stored distance 0 to 1; 3 is now too far
])
def test_dbscan_on_a_hand_made_distance_graph(eps, min_samples, expected):
    assert dbscan_labels(hand_made_graph(), eps, min_samples).tolist() == expected


def test_cluster_means_leave_outliers_out():
    features = np.array([[1.0, 0.0], [3.0, 2.0], [9.0, 9.0], [0.0, 4.0]])
    np.testing.assert_array_equal(cluster_means(features, np.array([0, 0, -1, 1])), [[2.0, 1.0], [0.0, 4.0]])


def test_cluster_memory_loss_known_answer():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = cluster_memory_loss(torch.tensor([[3.0, 0.0]]), torch.tensor([0]), centroids, temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2.0)), rel=1e-6)  # logits 2 and 0


def test_momentum_update_by_hand():
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[0.0, 2.0], [3.0, 4.0], [5.0, 0.0]])  # unit: [0, 1], [0.6, 0.8], [1, 0]
    labels = torch.tensor([0, 0, 1])
    updated = momentum_update(centroids, features, labels, momentum=0.5)
    # cluster 0, in batch order: [0.5, 0.5] → [1/√2, 1/√2]; then 0.5·that + 0.5·[0.6, 0.8], normalised
    first = [0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)]
    second = [0.5 * first[0] + 0.3, 0.5 * first[1] + 0.4]
    norm = math.hypot(*second)
    np.testing.assert_allclose(updated[0].numpy(), [second[0] / norm, second[1] / norm], rtol=1e-6)
    np.testing.assert_allclose(updated[1].numpy(), [1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-6)
    # hard: cluster 0 moves towards its least similar sample only ([0, 1]: similarity 0 against 0.6)
    hard = momentum_update(centroids, features, labels, momentum=0.5, hard=True)
    np.testing.assert_allclose(hard[0].numpy(), [1 / math.sqrt(2), 1 / math.sqrt(2)], rtol=1e-6)
    assert torch.equal(centroids, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # out of place


def test_cluster_memory_module_updates_in_training_only_and_reloads_any_size():
    memory = ClusterMemoryLoss(0, 2, temperature=0.1, momentum=0.0)
    memory.reset(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    features = torch.tensor([[0.0, 1.0]], requires_grad=True)
    memory.eval()
    memory(features, torch.tensor([0]))
    assert torch.equal(memory.memory, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    memory.train()
    loss = memory(features, torch.tensor([0]))
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert torch.equal(memory.memory, torch.tensor([[0.0, 1.0], [0.0, 1.0]]))  # momentum 0: replaced
    other = ClusterMemoryLoss(5, 2)
    other.load_state_dict(memory.state_dict())  # a checkpoint of another round's size
    assert torch.equal(other.memory, memory.memory)
    with pytest.raises(ValueError, match="has no centroid"):
        memory(features, torch.tensor([2]))


def test_pseudo_label_quality_known_answers():
    perfect = pseudo_label_quality([0, 0, 1, 1], [3, 3, 9, 9])
    assert perfect == {"clusters": 2, "outliers": 0, "clustered": 1.0, "purity": 1.0, "nmi": 1.0, "ari": 1.0}
    mixed = pseudo_label_quality([0, 0, 1, 1, -1], [5, 5, 5, 7, 7])
    assert mixed["clusters"] == 2 and mixed["outliers"] == 1 and mixed["clustered"] == 0.8
    assert mixed["purity"] == 0.75  # cluster 0: 2 of 2 of identity 5; cluster 1: 1 of 2
    assert mixed["ari"] == pytest.approx(0.0)  # pairs: 1 agreeing of 2 same-cluster, chance level here
    assert pseudo_label_quality([-1, -1], [1, 2])["purity"] == 0.0


def test_unlabelled_folder_reads_cameras_from_market_names(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("0001_c2s1_000001_00.jpg", "a/0007_c3_f0001.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    samples = load_unlabeled_folder(tmp_path)
    assert [(s[0].removeprefix(str(tmp_path)), s[1], s[2]) for s in samples] == [
        ("/0001_c2s1_000001_00.jpg", -1, 1), ("/a/0007_c3_f0001.png", -1, 2)]
    (tmp_path / "crop.jpg").write_bytes(b"")  # one name without a camera: every camera is 0
    assert [s[2] for s in load_unlabeled_folder(tmp_path)] == [0, 0, 0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_unlabeled_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="is not a folder"):
        load_unlabeled_folder(tmp_path / "missing")


def test_adaptation_refuses_terms_with_per_identity_weights():
    with pytest.raises(ConfigError, match="adapt.source is empty"):
        check_adaptation_config(load_config(None, ["loss.cluster_memory.weight=1"]))
    with pytest.raises(ConfigError, match="loss.id has one weight per identity"):
        check_adaptation_config(load_config(None, ["adapt.source=run", "loss.cluster_memory.weight=1"]))
    check_adaptation_config(load_config(None, ["adapt.source=run", "loss.id.weight=0", "loss.cluster_memory.weight=1"]))


def test_train_refuses_the_cluster_memory(tmp_path):
    from reidkit.engine.trainer import train

    with pytest.raises(ConfigError, match="only `reidkit adapt` makes"):
        train(load_config(None, ["loss.cluster_memory.weight=1"]), tmp_path / "run")


@pytest.mark.slow  # two spawned gloo ranks (a few seconds); still run by make test
def test_every_rank_keeps_the_memory_of_the_concatenated_global_batch(tmp_path):
    import _adapt_dist_worker as worker
    from _dist_worker import spawn_ranks

    spawn_ranks(worker.memory_worker, (2, str(tmp_path / "rendezvous"), str(tmp_path)))
    centroids, features, labels = worker.batches()
    expected = momentum_update(torch.nn.functional.normalize(centroids, dim=1), features.reshape(10, 4),
                               labels.reshape(10), momentum=0.3)
    for rank in (0, 1):  # the same sequential updates in the same order: bitwise equal
        assert torch.equal(torch.load(tmp_path / f"memory_{rank}.pt"), expected)


def adapt_command(source, data, out, *extra):
    """`reidkit adapt` of the run `source` on the gallery images of the tiny synthetic set as an unlabelled
    folder (evaluated on that set), one clustering round for the two epochs."""
    return ["--quiet", "adapt", "--source", str(source), "--config", "configs/adapt/cluster_contrast.yaml",
            "--out", str(out), "data.dataset=synthetic", f"data.root={data}", "data.synthetic_identities=16",
            "data.synthetic_cameras=3", "data.p=4", "data.k=4", "data.workers=0", "train.device=cpu",
            "train.epochs=2", "train.eval_every=1", "eval.batch_size=64", "eval.ranked_queries=2", "adapt.every=2",
            "adapt.k1=10", "adapt.k2=3", "adapt.min_samples=2", f"adapt.unlabeled_folders=['{data}/bounding_box_test']",
            *extra]


@pytest.mark.slow  # three short adaptation runs of an untrained tiny model (~30 s on 2 cores)
def test_adapt_writes_a_run_and_a_rewound_run_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch):
    import json
    import shutil
    import sys
    from pathlib import Path

    from reidkit.cli import main
    from reidkit.engine.checkpoint import load_weights

    monkeypatch.chdir(Path(__file__).parent.parent)
    sys.path.insert(0, str(Path(__file__).parent))
    from _untrained_run import write_untrained_run

    source, _, _, _ = write_untrained_run(tmp_path)
    data = tmp_path / "data"
    assert main(adapt_command(source, data, tmp_path / "adapted")) == 0
    out = capsys.readouterr().out
    assert "direct transfer (the source model): rank-1" in out and "target BatchNorm statistics" in out
    run = tmp_path / "adapted"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["direct_transfer"]) >= {"rank1", "mAP", "mINP"}
    # AdaBN changed the source model's features before any training step: another evaluation
    assert metrics["target_bn"]["mAP"] != metrics["direct_transfer"]["mAP"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rounds = [record for record in records if record["kind"] == "cluster"]
    assert [record["epoch"] for record in rounds] == [1] and rounds[0]["cluster/clusters"] >= 4
    assert [record["epoch"] for record in records if record["kind"] == "eval"] == [0, 0, 1, 2]  # before/after AdaBN
    assert "Clustering rounds" in (run / "report.html").read_text()
    # Rewind a copy to the end of epoch 1: the resumed epoch 2 needs the round's labels and memory from the
    # checkpoint (no round is due), and must end with the same weights, bitwise (CPU, same process).
    rewound = tmp_path / "rewound"
    shutil.copytree(run, rewound)
    (rewound / "checkpoints" / "last.json").write_text(json.dumps({"name": "epoch_001"}))
    assert main(["--quiet", "adapt", "--resume", str(rewound)]) == 0
    expected, resumed = load_weights(run / "model.safetensors")[0], load_weights(rewound / "model.safetensors")[0]
    assert all(torch.equal(expected[key], resumed[key]) for key in expected)
    assert [r["epoch"] for r in map(json.loads, (rewound / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "cluster"] == [1]


def test_adapt_refuses_a_missing_source_in_one_line(tmp_path, capsys):
    from reidkit.cli import main

    assert main(["adapt", "--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("reidkit: error: ") and "is not a run folder" in error and len(error.splitlines()) == 1
    assert main(["adapt", "--out", str(tmp_path / "run")]) == 2
    assert "adapt needs --source RUN_DIR" in capsys.readouterr().err


def test_adaptation_recipes_load_and_pass_the_adaptation_checks():
    from pathlib import Path

    recipes = sorted((Path(__file__).parent.parent / "configs" / "adapt").glob("*.yaml"))
    assert [path.stem for path in recipes] == ["cluster_contrast", "cluster_contrast_hard"]
    for path in recipes:
        config = load_config(path, ["adapt.source=runs/source"])
        check_adaptation_config(config)
        assert config.loss.cluster_memory.weight > 0


class _TinyBatchNormNet(torch.nn.Module):
    """conv → BN2d → ReLU → pool → linear → BN1d, returning a dict as reidkit models do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn2d = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, momentum=0.3)
        self.fc, self.bn1d = torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5)

    def forward(self, images):
        pooled = torch.relu(self.bn2d(self.conv(images))).mean(dim=(2, 3))
        return {"bn_features": self.bn1d(self.fc(pooled))}


def test_batchnorm_statistics_are_the_average_of_each_batch_statistics_on_the_new_images():
    from reidkit.engine.batchnorm_statistics import reestimate_batchnorm

    torch.manual_seed(0)
    model = _TinyBatchNormNet().double().eval()
    weights = {key: value.clone() for key, value in model.state_dict().items() if "running" not in key
               and "num_batches" not in key}
    batches = [{"images": 2.0 + 3.0 * torch.randn(size, 3, 6, 5, dtype=torch.float64)} for size in (5, 5, 3)]
    # Brute force: each layer's input per batch in a training-mode pass of a copy, its mean over everything
    # but the channels and its unbiased variance, averaged over the batches.
    reference, inputs = _TinyBatchNormNet().double(), {"bn2d": [], "bn1d": []}
    reference.load_state_dict(model.state_dict())
    reference.train()
    for name in inputs:
        getattr(reference, name).register_forward_hook(lambda module, args, out, name=name: inputs[name].append(args[0]))
    with torch.no_grad():
        for batch in batches:
            reference(batch["images"])
    expected = {}
    for name, values in inputs.items():
        dims = [0, 2, 3] if values[0].dim() == 4 else [0]
        expected[name] = (torch.stack([v.mean(dim=dims) for v in values]).mean(0),
                          torch.stack([v.var(dim=dims, unbiased=True) for v in values]).mean(0))

    assert reestimate_batchnorm(model, batches, torch.device("cpu")) == 2
    for name, (mean, variance) in expected.items():
        layer = getattr(model, name)
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(layer.running_var, variance, rtol=1e-12, atol=1e-12)
        assert int(layer.num_batches_tracked) == 3
    assert model.bn2d.momentum == 0.3 and model.bn1d.momentum == 0.1 and not model.training  # restored
    assert all(torch.equal(model.state_dict()[key], value) for key, value in weights.items())  # weights untouched
    assert abs(float(model.bn2d.running_mean.mean())) > 0.1  # the new images' statistics, not the defaults


def test_batchnorm_statistics_of_a_model_without_batchnorm_change_nothing():
    from reidkit.engine.batchnorm_statistics import reestimate_batchnorm

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    assert reestimate_batchnorm(model, [{"images": torch.randn(2, 3, 2, 2)}], torch.device("cpu")) == 0
    assert all(torch.equal(model.state_dict()[key], before[key]) for key in before)


def test_the_adapted_run_keeps_the_source_input_size_and_interpolation(tmp_path):
    from pathlib import Path

    from reidkit.engine.adaptation import adaptation_config

    recipe = Path(__file__).parent.parent / "configs" / "adapt" / "cluster_contrast.yaml"
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.yaml").write_text("data: {height: 96, width: 48, interpolation: bicubic}\n"
                                        "model: {backbone: resnet18, weights: imagenet}\n")
    config = adaptation_config(load_config(recipe), source)
    assert (config.data.height, config.data.width, config.data.interpolation) == (96, 48, "bicubic")
    assert (config.model.backbone, config.model.weights, config.adapt.source) == ("resnet18", "", str(source))
