"""Speed of envs.metaworld against bare gym.make, and success of Meta-World's scripted experts.

    python -m benchmark.env_speed_metaworld            # steps/s of make_env and of gym.make, reach + pick-place
    python -m benchmark.env_speed_metaworld --experts  # expert success, 10 episodes on each MT10 task
    python -m benchmark.env_speed_metaworld --experts --tasks MT50 --episodes 5 --noise-std 0.1
    python -m benchmark.env_speed_metaworld --experts --tasks reach-v3,reach-wall-v3 --max-episode-steps 100

Speed: both envs step the same uniform-random actions (resetting at the end of each 500-step episode, so resets
count too); measurements alternate between the two (bare first, then ours first, ...) so that load from other
processes hits both alike; the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import time
import warnings

import gymnasium as gym
import numpy as np

from envs.metaworld import MT10, collect_demos, make_env, resolve_tasks


def steps_per_second(env: gym.Env, actions: np.ndarray) -> float:
    env.reset()
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - start)


def bench_speed(tasks: list[str], steps: int, repeats: int, seed: int) -> None:
    print(f"env steps/s, random actions, {steps} steps x {repeats} interleaved repeats (median [min-max])")
    print(f"{'task':<18} {'gym.make':>22} {'envs.metaworld':>22} {'ratio':>6}")
    # bare gym.make keeps its env checker, which warns (once) that obs leave Meta-World's stale observation_space
    warnings.filterwarnings("ignore", module="gymnasium.utils.passive_env_checker")
    for task in tasks:
        bare = gym.make("Meta-World/MT1", env_name=task, seed=seed)
        ours = make_env(task, seed)
        actions = np.random.default_rng(seed).uniform(-1, 1, size=(steps, 4)).astype(np.float32)
        for env in (bare, ours):  # warm-up
            steps_per_second(env, actions[:200])
        results: dict[str, list[float]] = {"bare": [], "ours": []}
        for r in range(repeats):
            order = [("bare", bare), ("ours", ours)] if r % 2 == 0 else [("ours", ours), ("bare", bare)]
            for name, env in order:
                results[name].append(steps_per_second(env, actions))
        b, o = np.array(results["bare"]), np.array(results["ours"])
        cell = lambda x: f"{np.median(x):7.0f} [{x.min():.0f}-{x.max():.0f}]"  # noqa: E731
        print(f"{task:<18} {cell(b):>22} {cell(o):>22} {np.median(o) / np.median(b):6.3f}", flush=True)
        bare.close()
        ours.close()


def random_success(task: str, episodes: int, seed: int, max_episode_steps: int) -> float:
    """Success (at any step) of uniform random actions."""
    env = make_env(task, seed, max_episode_steps=max_episode_steps, terminate_on_success=True)
    rng = np.random.default_rng(seed)
    wins = 0
    for _ in range(episodes):
        env.reset()
        while True:
            _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, size=4).astype(np.float32))
            if terminated or truncated:
                break
        wins += info["success"]
    return wins / episodes


def bench_experts(tasks: list[str], episodes: int, noise_std: float, seed: int, max_episode_steps: int) -> None:
    print(
        f"success (at any step) of the scripted expert and of uniform random actions, {episodes} episodes per task, "
        f"{max_episode_steps}-step episodes, expert noise_std={noise_std}, seed={seed}"
    )
    print(f"{'task':<30} {'expert':>8} {'steps to success':>17} {'random':>8} {'seconds':>8}")
    rates, random_rates = [], []
    for k, task in enumerate(tasks):
        start = time.perf_counter()
        # steps_after_success=0: an episode ends at its first success, its length is the steps to success
        demos = collect_demos(
            [task],
            episodes,
            noise_std=noise_std,
            seed=seed + k,
            max_episode_steps=max_episode_steps,
            steps_after_success=0,
        )
        lengths = np.bincount(demos["episode_ids"] - demos["episode_ids"].min())
        ok = demos["episode_success"]
        rates.append(ok.mean())
        random_rates.append(random_success(task, episodes, seed + k, max_episode_steps))
        mean_len = f"{lengths[ok].mean():.0f}" if ok.any() else "-"
        seconds = time.perf_counter() - start
        print(f"{task:<30} {ok.mean():8.0%} {mean_len:>17} {random_rates[-1]:8.0%} {seconds:8.1f}", flush=True)
    print(f"{'mean':<30} {np.mean(rates):8.0%} {'':>17} {np.mean(random_rates):8.0%}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", action="store_true", help="measure expert success instead of speed")
    parser.add_argument(
        "--tasks", default=None, help="task spec (default: reach-v3,pick-place-v3 for speed, MT10 for experts)"
    )
    parser.add_argument("--steps", type=int, default=3000, help="env steps per speed measurement")
    parser.add_argument("--repeats", type=int, default=6, help="speed measurements per env (interleaved)")
    parser.add_argument("--episodes", type=int, default=10, help="expert episodes per task")
    parser.add_argument("--noise-std", type=float, default=0.0, help="Gaussian noise on the expert's actions")
    parser.add_argument("--max-episode-steps", type=int, default=500, help="episode length of the expert runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.experts:
        tasks = resolve_tasks(args.tasks or ",".join(MT10))
        bench_experts(tasks, args.episodes, args.noise_std, args.seed, args.max_episode_steps)
    else:
        bench_speed(resolve_tasks(args.tasks or "reach-v3,pick-place-v3"), args.steps, args.repeats, args.seed)
