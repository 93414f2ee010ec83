"""benchmark/prior_wordings.py: the prior with each wording of a Meta-World task fixed, and the task it acts like."""

import pytest
import torch

from benchmark import prior_wordings
from envs.metaworld import DEMONSTRATED, INSTRUCTIONS, REPHRASED


class ByWords(torch.nn.Module):
    """A stand-in prior whose Gaussian mean depends on the words only: a task's instruction -> its index on every
    action dimension, anything else -> 2.4 (nearest: task 2, then 3)."""

    def forward(self, observations, instructions):
        index = {INSTRUCTIONS[t]: float(i) for i, t in enumerate(DEMONSTRATED)}
        mean = torch.tensor([index.get(s, 2.4) for s in instructions])[:, None].expand(-1, 4)
        return mean + 0 * observations[:, :1], torch.ones(len(instructions), 4)


def test_nearest_tasks_ranks_by_mean_squared_difference():
    ranked = prior_wordings.nearest_tasks(ByWords(), torch.zeros(3, 39), "an unknown wording")
    assert [t for t, _ in ranked[:3]] == [DEMONSTRATED[2], DEMONSTRATED[3], DEMONSTRATED[1]]
    assert [round(gap, 6) for _, gap in ranked[:3]] == [0.16, 0.36, 1.96]
    assert prior_wordings.nearest_tasks(ByWords(), torch.zeros(3, 39), INSTRUCTIONS["push-v3"])[0] == ("push-v3", 0.0)


def test_fixed_wording_replaces_every_instruction():
    mean, _ = prior_wordings.FixedWording(ByWords(), INSTRUCTIONS[DEMONSTRATED[5]])(torch.zeros(2, 39), ["a", "b"])
    assert mean.tolist() == [[5.0] * 4] * 2


def test_table_of_the_wordings_of_reach(tiny_reach_prior, capsys):
    argv = [tiny_reach_prior, "--task", "reach-v3", "--episodes", "1", "--max-episode-steps", "5"]
    assert prior_wordings.main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "%" not in line]
    assert [row.split(" | ")[0][2:] for row in rows] == [INSTRUCTIONS["reach-v3"], *REPHRASED["reach-v3"]]
    assert "| reach-v3 (0.000), " in rows[0]  # its own words: itself first, gap 0


def test_a_discrete_prior_is_refused_in_one_line(tiny_clevr_prior, capsys):
    with pytest.raises(SystemExit):
        prior_wordings.main([tiny_clevr_prior])
    assert "is a discrete (CLEVR-Robot) prior: give a Meta-World one" in capsys.readouterr().err


def save_constant_agent(path, value: float):
    """A lago_ppo_continuous.py agent file whose mean action is `value` on every dimension at every state."""
    import gymnasium as gym
    import numpy as np

    import lago_ppo_continuous
    from benchmark.evaluate import _spaces

    space = _spaces(gym.spaces.Box(-np.inf, np.inf, (39,)), gym.spaces.Box(-1, 1, (4,)))
    agent = lago_ppo_continuous.Agent(space)
    torch.nn.init.zeros_(agent.actor_mean[-1].weight)
    torch.nn.init.constant_(agent.actor_mean[-1].bias, value)
    obs_rms = {"mean": torch.zeros(39, dtype=torch.float64), "var": torch.ones(39, dtype=torch.float64), "count": 1.0}
    torch.save({"agent": agent.state_dict(), "obs_rms": obs_rms}, path)


def test_agent_gaps_to_each_wording_and_to_their_average(tmp_path):
    save_constant_agent(tmp_path / "agent.cleanrl_model", 0.5)
    gaps = prior_wordings.agent_gaps(tmp_path / "agent.cleanrl_model", ByWords(), "push-v3", 1, 1, 5)
    # push-v3's own words -> its index 1: (0.5 - 1)^2; every rewording and their average -> 2.4: (0.5 - 2.4)^2
    assert gaps[INSTRUCTIONS["push-v3"]] == pytest.approx(0.25)
    assert [gaps[w] for w in REPHRASED["push-v3"]] == pytest.approx([3.61] * 3)
    assert gaps["average of the rewordings"] == pytest.approx(3.61)
