"""`train.compile=true` against eager training. Not marked `numerics`: torch.compile's inductor generates C++ for
the CPU it detects, and fails to build it when `make test-other-kernels` forces ATen's generic kernels
(ATEN_CPU_CAPABILITY=default: ‘at::vec’ has not been declared), which says nothing about reidkit."""

from __future__ import annotations

import pytest


@pytest.mark.slow  # torch.compile on CPU: about a minute
def test_train_compile_gives_the_eager_losses(tmp_path) -> None:
    """`train.compile=true` (torch.compile of the training forward, inductor on CPU) trains the same steps:
    losses equal to float32 rounding."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tiny = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
    records = {}
    for compiled in (False, True):
        run = tmp_path / f"compile_{compiled}"
        result = subprocess.run([sys.executable, "-m", "reidkit", "--quiet", "train", "--config", str(tiny),
                                 "--out", str(run), f"data.root={tmp_path / 'data'}", "train.epochs=1",
                                 f"train.compile={str(compiled).lower()}"], capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        records[compiled] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    eager, compiled = records[False], records[True]
    assert [r["step"] for r in eager] == [r["step"] for r in compiled] and len(eager) >= 5
    for a, b in zip(eager, compiled):
        for key in ("loss", "loss/id", "loss/trihard"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
