"""--async-envs (gymnasium's AsyncVectorEnv, envs in subprocesses) changes where the envs step, not what they do:
a seeded run gives the same trajectories, losses and final agent as with the default SyncVectorEnv."""

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import script_runs  # noqa: E402

RUNS = {
    "discrete": ("lago_ppo_discrete.py", "lago_ppo_discrete", ["--num-steps", "64", "--total-timesteps", "384"]),
    "continuous": (
        "lago_ppo_continuous.py",
        "lago_ppo_continuous",
        ["--num-steps", "48", "--total-timesteps", "288", "--max-episode-steps", "40"],
    ),
}


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_async_envs_give_the_same_run(kind, tmp_path):
    script, name, budget = RUNS[kind]
    results = {}
    for mode in ("sync", "async"):
        cwd = tmp_path / mode
        cwd.mkdir()
        flags = [
            "--kl-coef",
            "0",
            "--num-envs",
            "3",
            "--num-minibatches",
            "2",
            "--update-epochs",
            "2",
            "--eval-episodes",
            "2",
            "--save-model",
            *budget,
        ] + (["--async-envs"] if mode == "async" else [])
        script_runs.run_script(str(REPO / script), flags, cwd)
        rdir = script_runs.run_dir(str(cwd))
        logs = script_runs.scalars(rdir)
        model = torch.load(Path(rdir, f"{name}.cleanrl_model"))
        results[mode] = (logs, model.get("agent", model))
    (logs, agent), (async_logs, async_agent) = results["sync"], results["async"]
    assert len(logs["charts/episodic_length"]) >= 3  # episodes ended (and were reset) during the run
    for tag in ("charts/episodic_return", "charts/episodic_length", "losses/value_loss", "losses/policy_loss"):
        assert async_logs[tag] == logs[tag], tag
    for key in agent:
        assert torch.equal(async_agent[key], agent[key]), key
