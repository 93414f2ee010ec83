"""benchmark/stage1_levels.py end to end at a tiny budget: a prior rung and the behaviour-cloning anchor trained on the
same demonstrations, scored on the same evaluation states, written as result files and a table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def run(results: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "benchmark.stage1_levels", "--results-dir", str(results), "--seeds", "1"]
    cmd += ["--num-episodes", "60", "--eval-episodes", "20", "--rollouts", "6", "--levels", "train,heldout", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_stage1_levels_prior_and_bc_anchor(tmp_path):
    alone = run(tmp_path / "alone", "--rungs", "bc-mlp")  # the anchor alone collects the same demos as stage 1
    proc = run(tmp_path, "--rungs", "tiny-random,bc-mlp")
    assert proc.returncode == 0, proc.stderr[-3000:]
    prior = json.loads((tmp_path / "stage1" / "tiny-random__60ep__seed1.json").read_text())
    bc = json.loads((tmp_path / "stage1" / "bc-mlp__60ep__seed1.json").read_text())
    for result in (prior, bc):
        assert set(result["top1"]) == set(result["success"]["greedy"]) == set(result["success"]["sampled"])
        assert set(result["top1"]) == {"train", "heldout"}
        assert result["heldout_nll"] == min(h["eval"] for h in result["history"])  # early stopping kept the best
    # both are scored on the same evaluation states: a fraction of them
    n = len(np.load(next((tmp_path / "demos").glob("*__train__20ep__expert__seed10001.npz")))["actions"])
    for result in (prior, bc):
        agree = result["top1"]["train"] * n
        assert n > 20 and abs(agree - round(agree)) < 1e-6
    table = (tmp_path / "table.md").read_text()
    assert "| bc-mlp | 60 | 1 | top-1 % |" in table and "| tiny-random | 60 | 1 | top-1 % |" in table
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert alone.returncode == 0, alone.stderr[-3000:]
    for name in os.listdir(tmp_path / "demos"):  # byte for byte: the same data whichever rung collects it
        assert (tmp_path / "demos" / name).read_bytes() == (tmp_path / "alone" / "demos" / name).read_bytes(), name
    assert json.loads((tmp_path / "alone" / "stage1" / "bc-mlp__60ep__seed1.json").read_text())["top1"] == bc["top1"]
    again = run(tmp_path, "--rungs", "tiny-random,bc-mlp")  # finished results are kept, not recomputed
    assert json.loads((tmp_path / "stage1" / "bc-mlp__60ep__seed1.json").read_text()) == bc and again.returncode == 0
