"""Runs in chunks, in both PPO scripts: --stop-after-minutes writes runs/{run}/checkpoint.pt and exits with code 75;
--resume continues the same run (agent, optimizer, learning-rate schedule, counters, random streams; the continuous
script's observation and reward statistics) to the end, deterministically; other flags are refused."""

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import script_runs  # noqa: E402
from test_ppo_correctness import CONTINUOUS, DISCRETE, run_in_process  # noqa: E402

# 3 iterations of 2 envs x 32 steps, 2 minibatches, 1 epoch
CLEVR = "--kl-coef 0 --num-envs 2 --num-steps 32 --total-timesteps 192 --num-minibatches 2 --update-epochs 1"
CLEVR = [*CLEVR.split(), "--eval-episodes", "2", "--save-model"]
# 2 iterations of 2 envs x 40 steps
REACH = "--kl-coef 0 --num-envs 2 --num-steps 40 --total-timesteps 160 --num-minibatches 2 --update-epochs 1"
REACH = [*REACH.split(), "--eval-episodes", "0", "--max-episode-steps", "16", "--save-model"]


def stop_after_first_iteration(script, flags, cwd, monkeypatch):
    """Run with --stop-after-minutes 0 (stops after iteration 1); the checkpoint's path."""
    cwd.mkdir()
    with pytest.raises(SystemExit) as e:
        run_in_process(script, [*flags, "--stop-after-minutes", "0"], cwd, monkeypatch)
    assert e.value.code == 75
    run_dir = Path(script_runs.run_dir(str(cwd)))
    assert not (run_dir / "eval.json").exists()
    return run_dir / "checkpoint.pt"


def test_discrete_run_in_chunks_continues_the_run(tmp_path, monkeypatch):
    (tmp_path / "whole").mkdir()
    run_in_process(DISCRETE, CLEVR, tmp_path / "whole", monkeypatch)
    whole = script_runs.scalars(script_runs.run_dir(str(tmp_path / "whole")))

    checkpoint_path = stop_after_first_iteration(DISCRETE, CLEVR, tmp_path / "chunks", monkeypatch)
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    assert (checkpoint["iteration"], checkpoint["global_step"]) == (1, 64)
    first = script_runs.scalars(str(checkpoint_path.parent))
    for tag in ("losses/value_loss", "losses/policy_loss", "losses/approx_kl"):  # the same run up to the checkpoint
        assert first[tag] == whole[tag][:1]
    shutil.copytree(tmp_path / "chunks", tmp_path / "again")

    resume = [*CLEVR, "--resume", str(checkpoint_path.relative_to(tmp_path / "chunks"))]  # runs/{run}/checkpoint.pt
    g = run_in_process(DISCRETE, resume, tmp_path / "chunks", monkeypatch)
    run_dir = checkpoint_path.parent
    assert json.loads((run_dir / "eval.json").read_text())["global_step"] == 192
    chunked = script_runs.scalars(str(run_dir))
    assert chunked["charts/learning_rate"] == whole["charts/learning_rate"]  # the schedule went on, not restarted
    assert g["optimizer"].state_dict()["state"][0]["step"] == 3 * 2  # Adam's state too: 3 iterations x 2 minibatches

    run_in_process(DISCRETE, resume, tmp_path / "again", monkeypatch)
    resumed, resumed_again = (
        torch.load(tmp_path / d / "runs" / run_dir.name / "lago_ppo_discrete.cleanrl_model")
        for d in ("chunks", "again")
    )
    assert all(torch.equal(resumed[k], resumed_again[k]) for k in resumed)  # a resume is deterministic


def test_resume_refuses_other_flags_and_other_files(tmp_path, monkeypatch):
    checkpoint_path = stop_after_first_iteration(DISCRETE, CLEVR, tmp_path / "run", monkeypatch)
    other = [*CLEVR, "--num-steps", "16", "--resume", str(checkpoint_path)]
    with pytest.raises(SystemExit) as e:
        run_in_process(DISCRETE, other, tmp_path, monkeypatch)
    assert str(e.value.code).startswith("error: --resume continues a run with its own flags; it had --num-steps 32")
    not_a_checkpoint = checkpoint_path.parent / "notes.txt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(SystemExit) as e:
        run_in_process(DISCRETE, [*CLEVR, "--resume", str(not_a_checkpoint)], tmp_path, monkeypatch)
    assert str(e.value.code).startswith(f"error: --resume {not_a_checkpoint}: not a checkpoint.pt this script wrote")


def test_continuous_resume_restores_the_normalisation(tmp_path, monkeypatch):
    checkpoint_path = stop_after_first_iteration(CONTINUOUS, REACH, tmp_path / "run", monkeypatch)
    checkpoint = torch.load(checkpoint_path, weights_only=False)
    assert len(checkpoint["return_rms"]) == 2 and all(rms.count > 40 for rms in checkpoint["return_rms"])
    run_in_process(CONTINUOUS, [*REACH, "--resume", str(checkpoint_path)], tmp_path / "run", monkeypatch)
    saved = torch.load(checkpoint_path.parent / "lago_ppo_continuous.cleanrl_model")
    # the observation statistics went on from the checkpoint's: + the reset's 2 rows + 40 steps x 2 envs
    assert saved["obs_rms"]["count"] == pytest.approx(checkpoint["obs_rms"].count + 2 + 80)
