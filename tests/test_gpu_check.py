"""The GPU check (benchmarks/gpu_check) run whole on the CPU at a tiny scale, in bfloat16 as on a GPU,
so it cannot rot where no GPU is: every part runs and every check passes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_part_on_the_cpu_at_a_tiny_scale(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--scale", "tiny", "--device", "cpu",
                           "--dtype", "bfloat16", "--workdir", str(tmp_path), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "DIFFLLAMA_LENS_MODEL_DIRS": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert {row["part"] for row in rows} == {"setup", "exact", "forward", "views", "streaming", "study", "zerogpu", "quantized"}
    assert not [row for row in rows if row["ok"] is False]
    exact = [row["what"] for row in rows if row["part"] == "exact" and row["ok"]]
    for kind in ("diff", "a1", "a2"):
        assert any(what.startswith(f"diffllama map {kind} ") for what in exact)
    assert any(what.startswith("llama map softmax ") for what in exact)
    assert any("λ layer" in what for what in exact) and any("contributions sum" in what for what in exact)
    assert [row for row in rows if row["part"] == "exact" and "tolerance" in row and row["tolerance"] > 1e-5]  # bfloat16's measured allowance
    assert len([row for row in rows if row["part"] == "forward"]) == 6  # three lengths × two models
    zerogpu = [row for row in rows if row["part"] == "zerogpu"]
    assert len(zerogpu) >= 10 and all(row["ok"] for row in zerogpu)
