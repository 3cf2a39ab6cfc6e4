"""Faults found by an adversarial probe (issue 15), each with the test that failed before: ceilings on
sizes and workers, decompression bombs, weights headers checked against their tensors, resuming on a
training set that changed, a full disk under every writer (`_full_disk` injects it), EXIF orientation
applied by every reader, and one clear line for bad output folders, seeds, configs and indexes."""

from __future__ import annotations

import errno
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from _full_disk import full_disk, run_cli_on_full_disk, size_limit_works
from PIL import ExifTags, Image

from reidkit.config import load_config
from reidkit.data.images import read_rgb, to_rgb
from reidkit.data.loading import ImageDataset
from reidkit.data.transforms import build_test_transform
from reidkit.errors import ConfigError, DatasetError, ReidkitError
from reidkit.outputs import append_line, write_file

TINY = str(Path(__file__).parent.parent / "configs" / "tiny.yaml")


@pytest.mark.parametrize("override, message", [
    ("data.height=100000", r"data.height: 100000 is not allowed; use 16 to 1024 pixels"),
    ("data.width=5000", r"data.width: 5000 is not allowed; use 8 to 1024 pixels"),
    ("data.workers=100000", r"data.workers: 100000 is not allowed; use 0 .* to 128"),
])
def test_sizes_and_workers_have_ceilings(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TINY, [override])


def test_a_decompression_bomb_is_an_unreadable_image_named_or_skipped(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 10,000 pixels > 2 × the limit: PIL refuses it
    with pytest.raises(ValueError, match="decompression bomb.*MAX_IMAGE_PIXELS"):
        read_rgb(path)
    samples = [(str(path), 0, 1)]
    with pytest.raises(DatasetError, match=r"cannot read image .*bomb.png .*decompression bomb"):
        ImageDataset(samples, build_test_transform(32, 16))[0]
    assert ImageDataset(samples, build_test_transform(32, 16), skip_bad_images=True)[0] is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from reidkit.cli import main

    root = tmp_path_factory.mktemp("hardening")
    run = root / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={root / 'data'}",
                 "train.epochs=1", "eval.ranked_queries=0"]) == 0
    return run


@pytest.mark.parametrize("header, problem", [
    ({"num_classes": "abc"}, "num_classes 'abc'"),
    ({"num_classes": "-5"}, "num_classes '-5'"),
    ({"num_classes": "10000000"}, "num_classes '10000000' for a classifier of shape (8, 512)"),
    ({"attributes": "{not json"}, "attributes"),
    ({"attributes": json.dumps({"gender": 2})}, "attributes"),
    ({"attributes": json.dumps(["gender"])}, "attributes"),
    ({"pair_head": "true"}, "pair_head 'true'"),
])
def test_a_weights_header_is_checked_against_its_tensors_before_building(trained, tmp_path, header, problem):
    from safetensors.torch import save_file

    from reidkit.engine.checkpoint import load_weights
    from reidkit.engine.saved_runs import load_run_config, load_run_model

    state, metadata = load_weights(trained / "model.safetensors")
    edited = tmp_path / "edited.safetensors"
    save_file(state, str(edited), metadata={**metadata, **header})
    with pytest.raises(ReidkitError, match=re.escape(f"damaged header ({problem}")):
        load_run_model(trained, load_run_config(trained), edited)
    assert load_run_model(trained, load_run_config(trained)).num_classes == 8  # the real header loads


@pytest.fixture
def real_builds(monkeypatch):
    """The num_classes of each model `load_run_model` builds off the meta device; one over 10⁶ classes fails the
    test instead of allocating gigabytes."""
    from reidkit.engine import saved_runs

    built, build = [], saved_runs.build_model

    def spy(**kwargs):
        if torch.empty(0).device.type != "meta":
            assert kwargs["num_classes"] <= 10**6, f"allocates a classifier of {kwargs['num_classes']} rows"
            built.append(kwargs["num_classes"])
        return build(**kwargs)

    monkeypatch.setattr(saved_runs, "build_model", spy)
    return built


@pytest.mark.parametrize("rows, columns, problem", [
    (100_000, 0, "head.classifier.weight [100000, 0] where the model has [100000, 512]"),
    (100_000, 1, "head.classifier.weight [100000, 1] where the model has [100000, 512]"),
    (2**31, 0, "damaged header (num_classes '2147483648'"),  # 10 digits: not even an id (at most 9)
    (10_000_000, 0, "num_classes 10000000 is over the ceiling of 1,000,000 classes"),
])
def test_a_consistent_but_lying_header_is_refused_before_the_model_is_built(trained, tmp_path, real_builds, rows,
                                                                            columns, problem):
    from safetensors.torch import save_file

    from reidkit.engine.checkpoint import load_weights
    from reidkit.engine.saved_runs import load_run_config, load_run_model

    state, metadata = load_weights(trained / "model.safetensors")
    state["head.classifier.weight"] = torch.zeros(rows, columns)  # header and tensor agree: both lie
    edited = tmp_path / "lying.safetensors"
    save_file(state, str(edited), metadata={**metadata, "num_classes": str(rows)})
    with pytest.raises(ReidkitError) as info:
        load_run_model(trained, load_run_config(trained), edited)
    assert problem in str(info.value) and str(edited) in str(info.value) and "\n" not in str(info.value)
    assert real_builds == []  # refused from the shapes alone: no model was allocated
    assert load_run_model(trained, load_run_config(trained)).num_classes == 8 and real_builds == [8]


def test_a_unicode_digit_in_the_header_is_a_damaged_header(trained, tmp_path):
    from safetensors.torch import save_file

    from reidkit.engine.checkpoint import load_weights
    from reidkit.engine.saved_runs import load_run_config, load_run_model

    state, metadata = load_weights(trained / "model.safetensors")
    edited = tmp_path / "unicode.safetensors"
    save_file(state, str(edited), metadata={**metadata, "num_classes": "８"})  # "８".isdigit(), int("８") == 8
    with pytest.raises(ReidkitError, match=re.escape("damaged header (num_classes '８'")):
        load_run_model(trained, load_run_config(trained), edited)


@pytest.mark.parametrize("counts", [{"num_classes": 10**7}, {"num_classes": 8, "attributes": {"age": 10**7}}])
def test_build_model_refuses_more_classes_than_the_ceiling(counts):
    from reidkit.models.reid import build_model

    with torch.device("meta"), pytest.raises(ConfigError, match="over the ceiling of 1,000,000 classes"):
        build_model(backbone="resnet18", **counts)


def test_resuming_after_the_training_set_changed_is_refused_without_force(tmp_path, capsys):
    from reidkit.cli import main

    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["--quiet", "train", "--config", TINY, "--out", str(run), f"data.root={data}", "train.epochs=1",
                 "eval.ranked_queries=0"]) == 0
    state = torch.load(run / "checkpoints" / "epoch_001.state.pt", weights_only=True)
    assert len(state["train_set"]) == 64  # a SHA-256 of names, identities and cameras
    assert main(["--quiet", "train", "--resume", str(run)]) == 0  # the same set: resumes (nothing left to train)
    victim = next(path for path in sorted((data / "bounding_box_train").glob("*.jpg")) if "_c1s" in path.name)
    victim.rename(victim.with_name(victim.name.replace("_c1s", "_c2s")))  # another camera now
    capsys.readouterr()
    assert main(["--quiet", "train", "--resume", str(run)]) == 2
    assert "the training set differs from the one the checkpoint was trained on" in capsys.readouterr().err
    assert main(["--quiet", "train", "--resume", str(run), "--force"]) == 0  # the user's call
    other = next(path for path in sorted((data / "bounding_box_train").glob("*.jpg")) if path != victim)
    other.rename(other.with_name("0999" + other.name[4:]))  # a ninth identity: the classifier cannot fit
    assert main(["--quiet", "train", "--resume", str(run), "--force"]) == 2
    assert "does not fit this model" in capsys.readouterr().err


# --- Full disk (issue 15, item 2): every writer through reidkit.outputs.write_file -----------------------------

def _one_error_line(err: str, path: Path) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reidkit: error: "), err
    assert str(path) in lines[0] and "Traceback" not in err, err
    return lines[0]


def _temporary_files(*folders: Path) -> list[Path]:
    return [path for folder in folders for path in folder.rglob("*.tmp")]


@pytest.fixture(scope="module")
def feature_files(trained, tmp_path_factory):
    from reidkit.cli import main

    folder = tmp_path_factory.mktemp("features")
    for split in ("query", "gallery"):
        assert main(["--quiet", "extract", "--run", str(trained), "--split", split,
                     "--out", str(folder / f"{split}.safetensors")]) == 0
    return folder


@pytest.mark.parametrize("command, output, limit", [
    ("index", "index.safetensors", 512),
    ("eval", "eval/metrics.json", 512),
    ("report", "report.html", 1_000_000),  # its scratch pictures (< 0.5 MB each) fit; the page does not
    ("rerank", "distances.npy", 512),
    ("export", "model.onnx", 512),
    ("extract", "query.safetensors", 512),
])
def test_a_full_disk_is_one_line_and_leaves_the_previous_output(trained, feature_files, tmp_path, monkeypatch,
                                                                capsys, command, output, limit):
    from reidkit.cli import main

    run, out = str(trained), tmp_path / output
    args = {"index": ["--run", run, "--gallery", str(trained.parent / "data" / "bounding_box_test")],
            "eval": ["--run", run], "report": ["--run", run], "export": ["--run", run],
            "rerank": ["--query", str(feature_files / "query.safetensors"),
                       "--gallery", str(feature_files / "gallery.safetensors")],
            "extract": ["--run", run, "--split", "query"]}[command]
    args += ["--out", str(out.parent if command == "eval" else out)]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"the previous output")
    capsys.readouterr()
    with full_disk(monkeypatch, limit):
        code = main(["--quiet", command, *args])
    line = _one_error_line(capsys.readouterr().err, out)
    assert code == 2 and "--out" in line
    assert out.read_bytes() == b"the previous output"  # untouched, never truncated
    assert _temporary_files(tmp_path, trained) == []


def test_a_full_disk_while_training_keeps_the_last_checkpoint(trained, tmp_path, monkeypatch, capsys):
    import shutil

    from reidkit.cli import main

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    checkpoints = run / "checkpoints"
    before = {path.name: path.read_bytes() for path in checkpoints.iterdir()}
    assert json.loads(before["last.json"]) == {"name": "epoch_001"}
    capsys.readouterr()
    with full_disk(monkeypatch, 1_000_000):  # the log and config fit; a 45 MB checkpoint does not
        code = main(["--quiet", "train", "--resume", str(run), "--force", "train.epochs=2"])
    line = _one_error_line(capsys.readouterr().err, checkpoints)
    assert code == 2 and "earlier checkpoints" in line and "--resume" in line
    assert {path.name: path.read_bytes() for path in checkpoints.iterdir()} == before  # nothing half-written
    assert _temporary_files(run) == []


def test_a_full_disk_while_synthesising_leaves_no_complete_marker(tmp_path, monkeypatch, capsys):
    from reidkit.cli import main

    out = tmp_path / "synthetic"
    with full_disk(monkeypatch):
        code = main(["--quiet", "synth", "--out", str(out), "--identities", "4", "--cameras", "2"])
    _one_error_line(capsys.readouterr().err, out)
    assert code == 2 and not (out / "synthetic.json").exists() and _temporary_files(out) == []
    assert all(path.read_bytes().endswith(b"\xff\xd9") for path in out.rglob("*.jpg"))  # only whole JPEGs


@pytest.mark.skipif(not size_limit_works(), reason="needs RLIMIT_FSIZE")
def test_the_cli_survives_the_file_size_signal(tmp_path):
    """Past `ulimit -f` the kernel sends SIGXFSZ, whose default action kills the process with a core dump;
    the CLI ignores it, so the write fails with EFBIG and is reported in one line."""
    result = run_cli_on_full_disk(["synth", "--out", str(tmp_path / "s"), "--identities", "4", "--cameras", "2"])
    assert result.returncode == 2, (result.returncode, result.stderr)
    line = _one_error_line(result.stderr, tmp_path / "s")
    assert "file too large" in line and "choose another --out" in line


@pytest.mark.parametrize("error, message", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device writing {}: free space or choose "
                                                       "another --out"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system writing {}: choose another --out"),
    # issue 23, item 9: an OS error with another cause names it, not "the disk may be full" (/proc gives ENOENT)
    (OSError(errno.ENOENT, "No such file or directory"), "could not write {} (no such file or directory): choose "
                                                         "another --out"),
    (RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: \"No space left "
                  "on device\" })"), "no space left on device writing {}: free space or choose another --out"),
    (RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\nmore"),
     "could not write {} (RuntimeError: [enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0): "
     "free space (the disk may be full) or choose another --out"),
])
def test_write_errors_name_the_file_the_cause_and_the_fix(tmp_path, error, message):
    def fail(path: Path) -> None:
        path.write_bytes(b"partial")
        raise error

    with pytest.raises(ReidkitError) as caught:
        write_file(tmp_path / "out.bin", fail)
    assert str(caught.value) == message.format(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_append_leaves_the_log_as_it_was(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1}\n')
    with full_disk(monkeypatch, limit=40), pytest.raises(ReidkitError, match="metrics.jsonl"):
        append_line(log, json.dumps({"step": 2, "loss": list(range(20))}))  # crosses the limit mid-line
    if size_limit_works():  # (the fsync fallback does not touch appends)
        assert log.read_text() == '{"step": 1}\n'
    append_line(log, '{"step": 2}')
    assert log.read_text() == '{"step": 1}\n{"step": 2}\n'


# --- EXIF orientation (issue 15, item 6): one rule, applied by every reader ---------------------------------------

def _sideways_jpeg(folder: Path) -> tuple[Path, Path]:
    """A JPEG stored sideways (24 wide, 48 high) with EXIF orientation 6 ("turn 90° clockwise to view"), and
    a PNG of the same decoded pixels turned by numpy: what every reader should see."""
    stored = np.random.default_rng(0).integers(0, 256, (48, 24, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    tagged = folder / "0001_c1s1_000001_00.jpg"
    Image.fromarray(stored).save(tagged, format="JPEG", quality=95, exif=exif)
    with Image.open(tagged) as image:
        decoded = np.asarray(image.convert("RGB"))  # the stored pixels, orientation not applied
    assert decoded.shape == (48, 24, 3)
    upright = folder / "0001_c2s1_000001_00.png"
    Image.fromarray(np.rot90(decoded, k=-1)).save(upright)  # clockwise: 48 wide, 24 high
    return tagged, upright


def test_every_reader_applies_the_exif_orientation(trained, tmp_path):
    from reidkit.data.cache import decode_images
    from reidkit.engine.indexing import embed_images
    from reidkit.export import preprocess_images

    tagged, upright = _sideways_jpeg(tmp_path)
    expected = np.asarray(Image.open(upright))
    np.testing.assert_array_equal(np.asarray(read_rgb(tagged)), expected)  # the shared reader
    with Image.open(io.BytesIO(tagged.read_bytes())) as upload:  # an upload to `serve`
        np.testing.assert_array_equal(np.asarray(to_rgb(upload)), expected)
    samples = [(str(tagged), 1, 0), (str(upright), 1, 1)]
    dataset = ImageDataset(samples, build_test_transform(32, 16))  # training without a cache, eval, extract
    assert torch.equal(dataset[0]["images"], dataset[1]["images"])
    cached, _ = decode_images(samples, 32, 16, progress=False)  # training from the decoded cache
    assert torch.equal(cached[0], cached[1])
    batch = preprocess_images([tagged, upright], 32, 16)  # ONNX extraction
    np.testing.assert_array_equal(batch[0], batch[1])
    features = embed_images(trained, [str(tagged), str(upright)])  # index and search
    torch.testing.assert_close(features[0], features[1])


# --- One clear line (issue 15, item 8) ---------------------------------------------------------------------------

@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux /proc and /sys")
@pytest.mark.parametrize("out, problem", [
    ("/proc/reidkit_synthetic", "cannot create the synthetic data set in /proc/reidkit_synthetic ("),
    ("/sys/reidkit_synthetic", "cannot create the synthetic data set in /sys/reidkit_synthetic ("),
])
def test_synth_into_proc_or_sys_is_one_line(out, problem, capsys):
    from reidkit.cli import main

    assert main(["--quiet", "synth", "--out", out, "--identities", "4", "--cameras", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reidkit: error: {problem}") and err.count("\n") == 1


def test_synth_under_a_file_or_on_a_read_only_file_system_is_one_line(tmp_path, monkeypatch, capsys):
    from reidkit.cli import main

    (tmp_path / "file").write_text("")
    assert main(["--quiet", "synth", "--out", str(tmp_path / "file" / "sub")]) == 2
    assert f"{tmp_path / 'file' / 'sub'} lies under the file {tmp_path / 'file'}" in capsys.readouterr().err

    def read_only(self, *args, **kwargs):  # a real read-only mount needs privileges a test does not have
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(["--quiet", "synth", "--out", str(tmp_path / "new")]) == 2
    assert capsys.readouterr().err == (f"reidkit: error: cannot create the synthetic data set in {tmp_path / 'new'} "
                                       "(Read-only file system); choose a writable folder\n")


def test_a_negative_synthetic_seed_is_refused(tmp_path, capsys):
    from reidkit.cli import main
    from reidkit.data.synthetic import generate_dataset

    with pytest.raises(SystemExit):
        main(["--quiet", "synth", "--out", str(tmp_path), "--seed", "-1"])
    assert "argument --seed: -1 is not in 0.." in capsys.readouterr().err
    with pytest.raises(ValueError, match="seed must be 0 or more, got -1"):
        generate_dataset(tmp_path, seed=-1)


def test_search_with_an_index_of_another_dimension_is_one_line(trained, tmp_path, capsys):
    from reidkit.cli import main
    from reidkit.retrieval import GalleryIndex

    index = tmp_path / "index.safetensors"  # an index that names the run but predates digests, of 8-d features
    GalleryIndex(torch.ones(3, 8), [1, 2, 3], [0, 0, 1], ["a.jpg", "b.jpg", "c.jpg"], run_dir=str(trained)).save(index)
    query = next((trained.parent / "data" / "query").glob("*.jpg"))
    assert main(["--quiet", "search", "--index", str(index), str(query), "--trust-features"]) == 2
    assert capsys.readouterr().err == (f"reidkit: error: the model of {trained} gives 512-d features but this index "
                                       f"holds 8-d ones, so another model built it; rebuild it with `reidkit index "
                                       f"--run {trained} --gallery DIR`\n")


@pytest.mark.parametrize("text, message", [
    (b"train:\n  lr: 1e300\n", "train.lr: 1e+300 is not allowed; use a number > 0 and at most 10"),
    (b"train:\n  lr: .inf\n", "train.lr: inf is not allowed; use a finite number"),
    (b"train:\n  lr: .nan\n", "train.lr: nan is not allowed; use a finite number"),
    (b"loss:\n  trihard:\n    margin: .inf\n", "loss.trihard.margin: inf is not allowed; use a finite number"),
    (b"train:\n  weight_decay: 1e3\n", "train.weight_decay: 1000.0 is not allowed; use a number in [0, 1]"),
    (b"train:\n  lr: 1e-4\n", None),  # YAML 1.1 reads this as a string; it is a float where one is expected
    (b"train:\n  lr: caf\xe9\n", "c.yaml is not UTF-8 text (byte 0xe9 at position 16); save it as UTF-8"),
    (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "c.yaml nests too deeply to be a config (at most 16 levels)"),
    (b"train:\n  milestones: " + b"[" * 30 + b"]" * 30 + b"\n", "c.yaml nests 32 levels deep, more than a config's 16"),
])
def test_absurd_or_unreadable_config_values_are_one_line(tmp_path, text, message):
    (tmp_path / "c.yaml").write_bytes(text)
    if message is None:
        assert load_config(tmp_path / "c.yaml").train.lr == 1e-4
        return
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("path, problem", [
    ("/dev/zero", "config file /dev/zero is not a regular file (a device, pipe or socket); give a YAML file"),
    (".", "config file . is a folder, not a YAML file"),
    ("missing.yaml", "config file missing.yaml does not exist"),
])
def test_a_config_that_is_not_a_file_says_what_it_is(path, problem, tmp_path, capsys):
    from reidkit.cli import main

    if path == "/dev/zero" and not Path(path).exists():
        pytest.skip("no /dev/zero on this platform")
    assert main(["--quiet", "train", "--config", path, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"reidkit: error: {problem}") and err.count("\n") == 1
