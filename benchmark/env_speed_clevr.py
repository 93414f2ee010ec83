"""Benchmark CLEVR-Robot-v0: env steps per second and the scripted expert's success rate.

    python -m benchmark.env_speed_clevr             # 5000 random steps, 200 expert episodes per split
    python -m benchmark.env_speed_clevr --episodes 50 --steps 2000

Prints (1) env steps/s with uniformly random actions in one process, for the raw env and
for `gymnasium.make` (wrappers included), wall clock and CPU time of this process (CPU time
is the fairer number on a machine shared with other jobs), next to the bare-physics ceiling
(40 mj_step calls per env step, no Python around them); (2) the expert's success rate,
mean episode length and time per expert call over `--episodes` episodes of the train and of
the held-out goal split (seeds 0..episodes-1, noise 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gymnasium as gym
import mujoco
import numpy as np
import tyro

import envs  # noqa: F401  (registers CLEVR-Robot-v0)
from envs.clevr_expert import expert_action
from envs.clevr_robot import DIRECTIONS, NUM_ACTIONS, PUSH_OFFSET, PUSH_PHYSICS_STEPS, ClevrRobotEnv


@dataclass
class Args:
    steps: int = 5000
    """random-action env steps for the speed measurement"""
    episodes: int = 200
    """expert episodes per goal split (train and heldout)"""
    max_episode_steps: int = 50
    """episode limit for the expert evaluation"""
    seed: int = 0
    """seed of the random actions and of the first episode"""


def random_steps_per_second(env: gym.Env, actions: list[int], seed: int) -> tuple[float, float]:
    """(wall, cpu) env steps per second of `env` fed `actions`, resetting when an episode ends."""
    env.reset(seed=seed)
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - t_wall), len(actions) / (time.process_time() - t_cpu)


def bare_physics_steps_per_second(actions: list[int], seed: int) -> tuple[float, float]:
    """The same pushes written directly against mjData: the ceiling for env.step."""
    env = ClevrRobotEnv(max_episode_steps=None)
    env.reset(seed=seed)
    m, d = env.model, env.data
    qadr, p = env._obj_qadr, env._pusher_q
    v = env._pusher_v
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    for a in actions:
        dx, dy = DIRECTIONS[a & 7]
        q = qadr[a >> 3]
        d.qpos[p] = d.qpos[q] - PUSH_OFFSET * dx
        d.qpos[p + 1] = d.qpos[q + 1] - PUSH_OFFSET * dy
        d.qvel[v] = d.qvel[v + 1] = 0.0
        d.ctrl[0], d.ctrl[1] = dx, dy
        mujoco.mj_step(m, d, PUSH_PHYSICS_STEPS)
    return len(actions) / (time.perf_counter() - t_wall), len(actions) / (time.process_time() - t_cpu)


def expert_success(goal_split: str, episodes: int, max_episode_steps: int) -> dict:
    """Success rate, mean length and seconds per expert call over `episodes` seeded episodes."""
    env = ClevrRobotEnv(goal_split=goal_split, max_episode_steps=max_episode_steps)
    successes, lengths, calls, t_expert = [], [], 0, 0.0
    for ep in range(episodes):
        _, info = env.reset(seed=ep)
        steps, done = 0, False
        while not done:
            t = time.perf_counter()
            a = expert_action(env)
            t_expert += time.perf_counter() - t
            calls += 1
            _, _, terminated, truncated, info = env.step(a)
            steps += 1
            done = terminated or truncated
        successes.append(bool(info["success"]))
        lengths.append(steps)
    return {
        "success_rate": float(np.mean(successes)),
        "mean_length": float(np.mean(lengths)),
        "ms_per_expert_call": 1e3 * t_expert / max(calls, 1),
    }


def main(args: Args) -> None:
    rng = np.random.default_rng(args.seed)
    actions = [int(a) for a in rng.integers(NUM_ACTIONS, size=args.steps)]
    raw = random_steps_per_second(ClevrRobotEnv(), actions, args.seed)
    made = random_steps_per_second(gym.make("CLEVR-Robot-v0"), actions, args.seed)
    bare = bare_physics_steps_per_second(actions, args.seed)
    print(f"random actions, {args.steps} steps, one process (wall clock | CPU time of this process):")
    print(f"  ClevrRobotEnv            {raw[0]:7.0f} | {raw[1]:7.0f} env steps/s")
    print(f"  gymnasium.make(...)      {made[0]:7.0f} | {made[1]:7.0f} env steps/s")
    print(f"  bare physics (ceiling)   {bare[0]:7.0f} | {bare[1]:7.0f} env steps/s")
    for split in ("train", "heldout"):
        r = expert_success(split, args.episodes, args.max_episode_steps)
        print(
            f"expert, goal_split={split!r}, {args.episodes} episodes: success {r['success_rate']:.3f}, "
            f"mean episode length {r['mean_length']:.2f}, {r['ms_per_expert_call']:.1f} ms per expert call"
        )


if __name__ == "__main__":
    main(tyro.cli(Args))
