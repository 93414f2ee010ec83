"""Evaluate an agent saved by the PPO scripts (`--save-model`) on each CLEVR-Robot level or Meta-World task: the
benchmark's evaluation (the scripts stay CleanRL-plain and only log training episodes).

    python -m benchmark.evaluate runs/RUN/lago_ppo_discrete.cleanrl_model --levels train,heldout --episodes 100
    python -m benchmark.evaluate runs/RUN/lago_ppo_continuous.cleanrl_model --env-id reach-v3 --episodes 20 \\
        --max-episode-steps 200

The agent is the script's own `Agent`, imported from `lago_ppo_discrete` / `lago_ppo_continuous` and loaded from the
saved state dict. Its actions are sampled from its distribution (as in training), drawn from a torch generator seeded
with the env's seed (`seed + 100_000`, + i for the i-th Meta-World task): the same draws as `torch.manual_seed` and
the script's `get_action_and_value` would give, without touching torch's global random state (the harness evaluates
in threads), so a call is reproducible and the levels' results do not depend on each other.

- Discrete (`lago_ppo_discrete.py`; CLEVR-Robot): each level separately on `gym.make(env_id, goal_split=level,
  goal_slots=<the agent's>)`, the first reset seeded with `seed + 100_000`; an episode succeeds if `info["success"]`
  holds at its end. The agent's goal slots are read from its input size (24 dims: 1, 38: 2, 52: 3), so an agent trained
  without "compose" in --goal-split cannot be evaluated on "compose". Other discrete envs: one entry, the env id.
- Continuous (`lago_ppo_continuous.py`; Meta-World): task i of `env_id` (a task, MT10, MT50 or a comma list) on
  `envs.metaworld.make_env(task, seed=seed + 100_000 + i, max_episode_steps=...)` with ClipAction and the raw reward,
  the policy reading `normalize_obs(obs_rms, obs)` with the statistics saved next to it; an episode succeeds if
  `info["success"]` held at any step (`info["episode"]["success"]`).

Returns (and the CLI prints as JSON) {level or task: {"episodes", "episodic_return", "success_rate"}}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the scripts and envs/ live at the repository root
    sys.path.insert(0, str(REPO))

EVAL_SEED_OFFSET = 100_000
"""the evaluation's seeds are the run's seed + this: never a training seed"""
DEFAULT_LEVELS = ("train", "heldout")
NOT_THREAD_SAFE = threading.Lock()
"""held for what parallel in-process evaluations (the harness's threads) must not do at once: build Meta-World envs
(they draw their goals from numpy's global RNG), load a prior (benchmark/prior_alone.py: it changes torch's default
dtype for a while on CUDA), build an agent (its layers take that default dtype)"""


def load_model(model_path: str | Path) -> tuple[str, dict, dict | None]:
    """(kind "discrete" or "continuous", the agent's state dict, the observation statistics or None) of a file the
    PPO scripts' --save-model wrote: discrete, `agent.state_dict()`; continuous, {"agent", "obs_rms"}."""
    import torch

    saved = torch.load(str(model_path), map_location="cpu", weights_only=True)
    if isinstance(saved, dict) and set(saved) == {"agent", "obs_rms"}:
        return "continuous", saved["agent"], saved["obs_rms"]
    if isinstance(saved, dict) and "actor.0.weight" in saved:
        return "discrete", saved, None
    raise ValueError(f"{model_path} is not an agent saved by lago_ppo_discrete.py / lago_ppo_continuous.py")


def _spaces(observation_space, action_space) -> SimpleNamespace:
    """What the scripts' `Agent(envs)` reads from a vector env."""
    return SimpleNamespace(single_observation_space=observation_space, single_action_space=action_space)


def _sample(dist, generator):
    """dist.sample() with `generator` instead of torch's global one: the same draws under the same seed (Categorical:
    torch.multinomial over the probabilities; the continuous script's Independent(Normal): torch.normal)."""
    import torch
    from torch.distributions import Categorical

    if isinstance(dist, Categorical):
        return torch.multinomial(dist.probs.reshape(-1, dist.probs.shape[-1]), 1, True, generator=generator)[:, 0]
    base = dist.base_dist
    return torch.normal(base.loc, base.scale, generator=generator)


def _episodes(env, policy, episodes: int, first, success_of) -> dict:
    """Run `episodes` episodes from `first`, the (obs, info) of a seeded reset, `policy(obs, info)` acting; mean
    return and success (None if the env has none). The later resets are unseeded: the env's random stream goes on."""
    returns, successes = [], []
    episodic_return = 0.0
    obs, info = first
    while len(returns) < episodes:
        obs, reward, terminated, truncated, info = env.step(policy(obs, info))
        episodic_return += float(reward)
        if terminated or truncated:
            returns.append(episodic_return)
            success = success_of(info)
            if success is not None:
                successes.append(float(success))
            episodic_return = 0.0
            obs, info = env.reset()
    env.close()
    return {
        "episodes": episodes,
        "episodic_return": float(np.mean(returns)) if returns else None,
        "success_rate": float(np.mean(successes)) if successes else None,
    }


def evaluate_discrete(
    model_path: str | Path,
    episodes: int,
    seed: int,
    levels: Sequence[str] = DEFAULT_LEVELS,
    env_id: str = "CLEVR-Robot-v0",
    max_episode_steps: int | None = None,
    residual_prior: str | Path | None = None,
) -> dict:
    """A lago_ppo_discrete.py agent on each CLEVR-Robot level (other envs: on the env, keyed by its id), with the
    agent's goal slots (read from its input size); `max_episode_steps` None: the env's own (50). `residual_prior`:
    the prior a --residual-policy agent was trained with (its logits add the prior's at info["instruction"])."""
    import gymnasium as gym
    import torch

    import lago_ppo_discrete

    kind, state_dict, _ = load_model(model_path)
    if kind != "discrete":
        raise ValueError(f"{model_path} holds a lago_ppo_continuous.py agent: evaluate it with evaluate_continuous")
    from benchmark.plot import read_hyperparameters

    residual = read_hyperparameters(Path(model_path).parent).get("residual_policy")  # the run's own record, if any
    if residual == "True" and residual_prior is None:
        raise ValueError(f"{model_path} was trained with --residual-policy: pass --residual-prior PRIOR_DIR")
    if residual == "False" and residual_prior is not None:
        raise ValueError(f"{model_path} was trained without --residual-policy: it takes no residual prior")
    in_dim = state_dict["actor.0.weight"].shape[1]
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    clevr = env_id.startswith("CLEVR-Robot")
    if clevr:
        from envs.clevr_robot import OBS_DIM, STATE_DIM

        goal_dim = OBS_DIM - STATE_DIM
        if in_dim - STATE_DIM not in (goal_dim, 2 * goal_dim, 3 * goal_dim):
            raise ValueError(f"{model_path}: an agent of {in_dim} inputs is no {env_id} agent (24, 38 or 52 inputs)")
        kwargs["goal_slots"] = (in_dim - STATE_DIM) // goal_dim  # as in training: 3 with hard, 2 with compose
        composed = [level for level in levels if "compose" in level.split("+")]
        if composed and kwargs["goal_slots"] == 1:
            raise ValueError(
                f"{model_path}: the agent reads one goal slot ({in_dim} inputs), so it cannot be evaluated on "
                f"{composed[0]!r} (two relations at once): train with compose in --goal-split for that"
            )
    prior = None
    if residual_prior is not None:
        from finetune_prior import load_prior

        with NOT_THREAD_SAFE:
            prior = load_prior(str(residual_prior))
    results = {}
    for level in levels if clevr else (None,):
        env = gym.make(env_id, **kwargs, **({} if level is None else {"goal_split": level}))
        if env.observation_space.shape != (in_dim,):
            raise ValueError(
                f"{model_path}: the agent reads {in_dim} inputs, {env_id} observes {env.observation_space}"
            )
        with NOT_THREAD_SAFE:  # built with torch's default dtype, which loading a prior changes for a while
            agent = lago_ppo_discrete.Agent(_spaces(env.observation_space, env.action_space))
            agent.load_state_dict(state_dict)
        generator = torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET)
        dummy = torch.zeros(1, dtype=torch.long)

        def policy(obs, info, agent=agent, generator=generator, dummy=dummy):
            with torch.inference_mode():
                obs = torch.tensor(obs, dtype=torch.float32)[None]
                prior_logits = None if prior is None else prior(obs, [str(info["instruction"])]).float()
                dist = agent.get_action_and_value(obs, dummy, prior_logits)[4]
                return _sample(dist, generator).item()

        first = env.reset(seed=seed + EVAL_SEED_OFFSET)
        results[env_id if level is None else level] = _episodes(
            env, policy, episodes, first, lambda info: info.get("success")
        )
    return results


def load_continuous_agent(model_path: str | Path, observation_space, action_space):
    """(agent, its observation statistics as .mean / .var) of a lago_ppo_continuous.py --save-model file."""
    import lago_ppo_continuous

    kind, state_dict, obs_rms = load_model(model_path)
    if kind != "continuous":
        raise ValueError(f"{model_path} holds a lago_ppo_discrete.py agent, not a lago_ppo_continuous.py one")
    agent = lago_ppo_continuous.Agent(_spaces(observation_space, action_space))
    agent.load_state_dict(state_dict)
    return agent, SimpleNamespace(mean=np.asarray(obs_rms["mean"]), var=np.asarray(obs_rms["var"]))


def evaluate_continuous(
    model_path: str | Path, env_id: str, episodes: int, seed: int, max_episode_steps: int = 500
) -> dict:
    """A lago_ppo_continuous.py agent on each Meta-World task of `env_id` (task i: env seed seed + 100_000 + i)."""
    import gymnasium as gym
    import torch

    import lago_ppo_continuous
    from envs.metaworld import make_env, resolve_tasks

    results = {}
    for i, task in enumerate(resolve_tasks(env_id)):
        env_seed = seed + EVAL_SEED_OFFSET + i
        with NOT_THREAD_SAFE:  # and the agent built with torch's default dtype, as above
            env = gym.wrappers.ClipAction(make_env(task, seed=env_seed, max_episode_steps=max_episode_steps))
            agent, obs_rms = load_continuous_agent(model_path, env.observation_space, env.action_space)
        generator = torch.Generator().manual_seed(env_seed)
        dummy = torch.zeros((1, *env.action_space.shape))

        def policy(obs, info, agent=agent, obs_rms=obs_rms, generator=generator, dummy=dummy):
            x = torch.tensor(lago_ppo_continuous.normalize_obs(obs_rms, obs), dtype=torch.float32)[None]
            with torch.inference_mode():
                return _sample(agent.get_action_and_value(x, dummy)[4], generator)[0].numpy()

        with NOT_THREAD_SAFE:  # reset(seed=) re-seeds Meta-World as gym.make(seed=) does
            first = env.reset(seed=env_seed)
        results[task] = _episodes(env, policy, episodes, first, lambda info: info["episode"]["success"])
    return results


def evaluate(
    model_path: str | Path,
    env_id: str,
    episodes: int,
    seed: int,
    levels: Sequence[str] | None = None,
    max_episode_steps: int | None = None,
    residual_prior: str | Path | None = None,
) -> dict:
    """Either evaluation, picked by what the file holds. `levels` (CLEVR-Robot) None: train and heldout;
    `max_episode_steps` None: the env's own (CLEVR-Robot 50, Meta-World 500); `residual_prior`: the prior of a
    lago_ppo_discrete.py --residual-policy agent."""
    kind, _, _ = load_model(model_path)
    if kind == "discrete":
        return evaluate_discrete(
            model_path, episodes, seed, levels or DEFAULT_LEVELS, env_id, max_episode_steps, residual_prior
        )
    if residual_prior is not None:
        raise ValueError("--residual-policy is a lago_ppo_discrete.py flag: a continuous agent has no residual prior")
    return evaluate_continuous(model_path, env_id, episodes, seed, max_episode_steps or 500)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="runs/{run_name}/{exp_name}.cleanrl_model, written by --save-model")
    parser.add_argument(
        "--env-id",
        default=None,
        help="the run's --env-id (default: CLEVR-Robot-v0 for a discrete agent; required for a continuous one)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the run's --seed (the evaluation adds 100,000)")
    parser.add_argument("--episodes", type=int, default=100, help="episodes on each level / task")
    parser.add_argument("--levels", default=",".join(DEFAULT_LEVELS), help="CLEVR-Robot levels, a comma list")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="the run's --max-episode-steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the agent is a small MLP)")
    parser.add_argument("--residual-prior", default=None, help="the --prior-path of a --residual-policy run")
    args = parser.parse_args(argv)
    import torch

    from finetune_prior import PriorError

    torch.set_num_threads(args.threads)
    try:
        kind, _, _ = load_model(args.model)
        if kind == "continuous" and args.env_id is None:
            raise ValueError("a lago_ppo_continuous.py agent needs --env-id (its Meta-World task)")
        levels = tuple(s.strip() for s in args.levels.split(",") if s.strip())
        result = evaluate(
            args.model,
            args.env_id or "CLEVR-Robot-v0",
            args.episodes,
            args.seed,
            levels,
            args.max_episode_steps,
            args.residual_prior,
        )
    except (OSError, ValueError, PriorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
