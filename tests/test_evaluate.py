"""benchmark/evaluate.py: an agent saved by the PPO scripts, evaluated as the scripts' final evaluation did (sampled
actions, seed + 100,000, each CLEVR level / Meta-World task separately), reproducibly."""

import json
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers CLEVR-Robot-v0)
import lago_ppo_continuous
import lago_ppo_discrete
from benchmark import evaluate as ev
from envs.clevr_robot import OBS_DIM, STATE_DIM

TWO_SLOTS = STATE_DIM + 2 * (OBS_DIM - STATE_DIM)  # 38


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def spaces(obs_dim, action_space):
    return SimpleNamespace(
        single_observation_space=gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32),
        single_action_space=action_space,
    )


def discrete_agent(obs_dim=OBS_DIM, seed=0):
    torch.manual_seed(seed)
    return lago_ppo_discrete.Agent(spaces(obs_dim, gym.spaces.Discrete(40)))


def save_discrete(agent, path):
    torch.save(agent.state_dict(), path)  # what lago_ppo_discrete.py --save-model writes
    return path


def constant_agent(action, obs_dim=OBS_DIM):
    """A discrete agent whose actor always picks `action` (its other logits are -inf after the softmax)."""
    agent = discrete_agent(obs_dim)
    last = agent.actor[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-1e4)
        last.bias[action] = 1e4
    return agent


def by_hand(level, action, episodes, seed, max_episode_steps, goal_slots=1):
    """Step a seeded CLEVR env with one action; mean return and success at the episodes' ends."""
    env = gym.make("CLEVR-Robot-v0", goal_split=level, goal_slots=goal_slots, max_episode_steps=max_episode_steps)
    env.reset(seed=seed + 100_000)
    returns, successes, ret = [], [], 0.0
    while len(returns) < episodes:
        _, reward, terminated, truncated, info = env.step(action)
        ret += reward
        if terminated or truncated:
            returns.append(ret)
            successes.append(float(info["success"]))
            ret = 0.0
            env.reset()
    return {"episodes": episodes, "episodic_return": float(np.mean(returns)), "success_rate": float(np.mean(successes))}


def test_constant_action_agent_matches_stepping_the_env_by_hand(tmp_path):
    """An agent that always pushes one way, on two levels: the numbers of stepping the seeded env by hand, some
    episodes succeeding and some not; the same again on a second call; another seed, other episodes."""
    model = save_discrete(constant_agent(0), tmp_path / "agent.cleanrl_model")  # push the red ball right
    result = ev.evaluate(model, "CLEVR-Robot-v0", 12, seed=5, levels=("train", "heldout"), max_episode_steps=6)
    assert list(result) == ["train", "heldout"]
    for level in ("train", "heldout"):
        assert result[level] == by_hand(level, 0, 12, 5, 6)
        assert 0.0 < result[level]["success_rate"] < 1.0  # the comparison is not all zeros
    assert ev.evaluate(model, "CLEVR-Robot-v0", 12, seed=5, levels=("train", "heldout"), max_episode_steps=6) == result
    assert ev.evaluate(model, "CLEVR-Robot-v0", 12, seed=6, levels=("train",), max_episode_steps=6)["train"] == (
        by_hand("train", 0, 12, 6, 6)
    )


def old_style(agent, env, episodes, seed, act):
    """The scripts' old final evaluation: torch's global RNG seeded, agent.get_action_and_value(obs) sampling."""
    torch.manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    returns, successes, ret = [], [], 0.0
    while len(returns) < episodes:
        with torch.inference_mode():
            action = agent.get_action_and_value(act(obs))[0]
        obs, reward, terminated, truncated, info = env.step(action.item() if action.numel() == 1 else action[0].numpy())
        ret += float(reward)
        if terminated or truncated:
            returns.append(ret)
            successes.append(float(info["episode"]["success"] if "episode" in info else info["success"]))
            ret = 0.0
            obs, _ = env.reset()
    return {"episodes": episodes, "episodic_return": float(np.mean(returns)), "success_rate": float(np.mean(successes))}


def test_sampled_actions_are_the_old_evaluations(tmp_path):
    """A random (untrained) two-slot agent: each level's numbers are those of the scripts' old evaluation (torch
    seeded with seed + 100,000, actions sampled by get_action_and_value), whatever level came before; the goal slots
    are the agent's (38 inputs: two)."""
    agent = discrete_agent(TWO_SLOTS, seed=1)
    model = save_discrete(agent, tmp_path / "agent.cleanrl_model")
    result = ev.evaluate_discrete(model, 5, seed=2, levels=("compose", "train"), max_episode_steps=8)
    for level in ("compose", "train"):
        env = gym.make("CLEVR-Robot-v0", goal_split=level, goal_slots=2, max_episode_steps=8)
        expected = old_style(agent, env, 5, 100_002, lambda obs: torch.tensor(obs, dtype=torch.float32)[None])
        assert result[level] == expected, level
    assert ev.evaluate_discrete(model, 5, seed=2, levels=("train",), max_episode_steps=8)["train"] == result["train"]


def test_continuous_agent_reads_its_observation_statistics(tmp_path):
    """A lago_ppo_continuous.py file ({"agent", "obs_rms"}) on reach-v3: the old evaluation's numbers (ClipAction, raw
    reward, normalize_obs with the saved statistics, env seed + 100,000, Meta-World's success at any step)."""
    env = gym.wrappers.ClipAction(ev_make_env("reach-v3", 100_003, 20))
    torch.manual_seed(0)
    agent = lago_ppo_continuous.Agent(spaces(39, env.action_space))
    rng = np.random.default_rng(0)
    obs_rms = {"mean": torch.tensor(rng.normal(size=39)), "var": torch.tensor(rng.uniform(0.5, 2, 39)), "count": 9.0}
    model = tmp_path / "agent.cleanrl_model"
    torch.save({"agent": agent.state_dict(), "obs_rms": obs_rms}, model)
    result = ev.evaluate(model, "reach-v3", 3, seed=3, max_episode_steps=20)
    rms = SimpleNamespace(mean=obs_rms["mean"].numpy(), var=obs_rms["var"].numpy())
    expected = old_style(
        agent,
        env,
        3,
        100_003,
        lambda obs: torch.tensor(lago_ppo_continuous.normalize_obs(rms, obs), dtype=torch.float32)[None],
    )
    assert result == {"reach-v3": expected}
    assert ev.evaluate(model, "reach-v3", 3, seed=3, max_episode_steps=20) == result


def ev_make_env(task, seed, max_episode_steps):
    from envs.metaworld import make_env

    return make_env(task, seed=seed, max_episode_steps=max_episode_steps)


def test_refusals_and_cli(tmp_path, capsys):
    """A one-slot agent cannot play 'compose'; a file that is no saved agent is refused; the CLI prints the JSON."""
    model = save_discrete(constant_agent(0), tmp_path / "agent.cleanrl_model")
    with pytest.raises(ValueError, match="one goal slot .* 'compose'"):
        ev.evaluate_discrete(model, 2, seed=1, levels=("train", "compose"))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an agent saved by"):
        ev.load_model(tmp_path / "other.pt")
    assert ev.main([str(model), "--episodes", "2", "--levels", "heldout", "--max-episode-steps", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == ev.evaluate_discrete(model, 2, seed=1, levels=("heldout",), max_episode_steps=3)
    assert ev.main([str(tmp_path / "other.pt")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
