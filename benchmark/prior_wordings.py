"""What a Meta-World prior does with each wording of a task: for the task's own instruction and each of its
rewordings (envs.metaworld.REPHRASED), the prior acting alone with that wording fixed in every episode (greedy and
sampled success, as the table's prior rows), and the demonstrated task whose own instruction makes the prior act most
alike at the task's expert states (the mean squared difference of the Gaussian means).

A LaGO policy reads the state, not the words: on a `task:rephrase` env, whose episodes draw one wording each, its KL
pulls toward the prior of every wording at once. Where the wordings send the prior to different skills, that target is
none of them. With --agents (models saved by lago_ppo_continuous.py --save-model), how far each agent's mean action is
from the prior's under each wording and from the average over the rewordings, at the states of the agent's own
episodes on the task.

    python -m benchmark.prior_wordings PRIOR_DIR --task reach-v3
    python -m benchmark.prior_wordings PRIOR_DIR --task reach-v3 --agents runs/RUN/lago_ppo_continuous.cleanrl_model
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.prior_alone import evaluate_prior  # noqa: E402
from envs.metaworld import DEMONSTRATED, INSTRUCTIONS, REPHRASED, collect_demos  # noqa: E402


class FixedWording(torch.nn.Module):
    """The prior, reading `wording` instead of the env's instruction."""

    def __init__(self, prior, wording: str):
        super().__init__()
        self.prior, self.wording = prior, wording

    def forward(self, observations, instructions):
        return self.prior(observations, [self.wording] * len(instructions))


@torch.inference_mode()
def nearest_tasks(prior, observations: torch.Tensor, wording: str, tasks=DEMONSTRATED) -> list[tuple[str, float]]:
    """The tasks ordered by how alike the prior acts under their own instruction and under `wording` at
    `observations`: [(task, mean squared difference of the means)], nearest first."""
    mean = prior(observations, [wording] * len(observations))[0].float()
    gaps = {
        t: float(((prior(observations, [INSTRUCTIONS[t]] * len(observations))[0].float() - mean) ** 2).mean())
        for t in tasks
    }
    return sorted(gaps.items(), key=lambda item: item[1])


@torch.inference_mode()
def agent_gaps(model_path, prior, task: str, seed: int, episodes: int, max_episode_steps: int) -> dict[str, float]:
    """Mean squared difference between a saved agent's mean action and the prior's under each wording of `task` (and
    "average of the rewordings": their mean), at the states of `episodes` greedy episodes of the agent on `task`."""
    import lago_ppo_continuous
    from benchmark.evaluate import load_continuous_agent
    from envs.metaworld import make_env

    env = make_env(task, seed=seed, max_episode_steps=max_episode_steps)
    try:
        agent, obs_rms = load_continuous_agent(model_path, env.observation_space, env.action_space)
    except ValueError as e:
        raise SystemExit(f"error: {e}")

    def act(obs):
        x = torch.tensor(lago_ppo_continuous.normalize_obs(obs_rms, obs), dtype=torch.float32)
        return agent.actor_mean(x).numpy()

    states = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        done = False
        while not done:
            states.append(obs)
            obs, _, terminated, truncated, _ = env.step(np.clip(act(obs[None])[0], -1, 1))
            done = terminated or truncated
    states = np.stack(states)
    actions, x = act(states), torch.as_tensor(states, dtype=torch.float32)
    means = {w: prior(x, [w] * len(x))[0].float().numpy() for w in (INSTRUCTIONS[task],) + REPHRASED[task]}
    means["average of the rewordings"] = np.mean([means[w] for w in REPHRASED[task]], axis=0)
    return {w: float(np.mean((actions - mean) ** 2)) for w, mean in means.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior_dir", help="a Meta-World prior made by finetune_prior.py")
    parser.add_argument("--task", default="reach-v3", choices=sorted(REPHRASED), help="a demonstrated task")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per wording (the table's 20)")
    parser.add_argument("--max-episode-steps", type=int, default=100, help="the metaworld-levels preset's 100")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--agents", nargs="*", default=[], help="models saved by lago_ppo_continuous.py --save-model")
    parser.add_argument("--agent-episodes", type=int, default=5, help="episodes of each agent whose states are used")
    args = parser.parse_args(argv)
    if min(args.episodes, args.max_episode_steps, args.agent_episodes) < 1:
        parser.error("--episodes, --max-episode-steps and --agent-episodes must be >= 1")
    for path in [p for p in args.agents if not Path(p).is_file()]:
        parser.error(f"no agent file {path}: give models saved by lago_ppo_continuous.py --save-model")
    if not (Path(args.prior_dir) / "prior_config.json").is_file():
        parser.error(f"{args.prior_dir} holds no prior_config.json: give a directory made by finetune_prior.py")
    from finetune_prior import load_prior

    prior = load_prior(args.prior_dir)
    if prior.config["action_space"]["type"] != "continuous":
        parser.error(f"{args.prior_dir} is a discrete (CLEVR-Robot) prior: give a Meta-World one")
    demos = collect_demos(args.task, 5, seed=args.seed, max_episode_steps=args.max_episode_steps)
    states = torch.as_tensor(np.asarray(demos["observations"]), dtype=torch.float32)
    print(f"{args.task}, {args.episodes} episodes of {args.max_episode_steps} steps per wording, seed {args.seed}")
    print("| wording | greedy success % | sampled success % | acts most like (mean sq. diff.) |\n|---|---|---|---|")
    for wording in (INSTRUCTIONS[args.task],) + REPHRASED[args.task]:
        policy = FixedWording(prior, wording)
        kw = dict(max_episode_steps=args.max_episode_steps, policy=policy)
        runs = [evaluate_prior(None, "metaworld", args.task, args.seed, args.episodes, sample=s, **kw) for s in (0, 1)]
        success = [100 * run["success"][args.task] for run in runs]
        near = ", ".join(f"{t} ({gap:.3f})" for t, gap in nearest_tasks(prior, states, wording)[:2])
        print(f"| {wording} | {success[0]:.0f} | {success[1]:.0f} | {near} |")
    if args.agents:
        wordings = (INSTRUCTIONS[args.task],) + REPHRASED[args.task] + ("average of the rewordings",)
        print("\nMean squared difference of the agent's mean action from the prior's, under each wording:\n")
        print("| agent | " + " | ".join(wordings) + " |\n|---|" + "---|" * len(wordings))
        for path in args.agents:
            gaps = agent_gaps(path, prior, args.task, args.seed, args.agent_episodes, args.max_episode_steps)
            print(f"| {path} | " + " | ".join(f"{gaps[w]:.3f}" for w in wordings) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
