"""scripts/gpu_check.sh's logic on the CPU: every CUDA part is skipped with its reason, the CPU timings are written,
and the script finishes with exit status 0 (so it is ready for the first user with a GPU)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_check_skips_cuda_cleanly_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check"
    env = {**os.environ, "QUICK": "1", "PYTHON": sys.executable, "DATA": str(tmp_path / "no-such-data"),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["devices_run"] == ["cpu"]
    assert "CUDA is not available" in summary["devices_skipped"]["cuda"]
    assert summary["parts"]["timings"] == "timings.json"
    assert summary["parts"]["full"].startswith("skipped: CUDA is not available")
    rows = json.loads((out / "timings.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"datadam", "mtt", "evaluator"}
    assert all(r["device"] == "cpu" and "error" not in r for r in rows), rows
    assert all(r["seconds_per_iteration_median"] > 0 for r in rows if r["method"] != "evaluator")
    ev = next(r for r in rows if r["method"] == "evaluator")
    assert ev["batched"]["mode"] is True and ev["sequential"]["wall_seconds"] > 0
    pytest_log = (out / "pytest_gpu.txt").read_text()
    assert "skipped" in pytest_log and "exit status: 0" in pytest_log
    assert "full run skipped: no data" in (out / "gpu_check.log").read_text()
