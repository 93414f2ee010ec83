"""What a policy that does not read the words can take from the prior: the prior reads each wording of a goal its own
way, while the PPO policy sees the goal program only (the observation's goal one-hots), so the KL pulls it toward one
distribution for all of them.

    python -m benchmark.prior_readings PRIOR_DIR --levels train,heldout,rephrase,compose --episodes 100

For every state of episodes on each CLEVR-Robot level, the prior is read under every wording of the episode's goal at
that level (train: 7 templates, heldout: 3, rephrase: 8, compose: 16 frames; "train+rephrase": episodes of train goals,
read under their 7 train and 8 rephrased wordings, as a policy trained on both levels is pulled). Printed per level:
  spread     the mean KL (nats) of one reading from the reverse-KL optimum of a word-blind policy, the normalised
             geometric mean of the readings (what KL(pi || prior) pulls toward), and from the forward-KL optimum, the
             arithmetic mean (what KL(prior || pi) pulls toward): the KL such a policy cannot go below
  success    sampled success of three policies acting alone: the prior under the episode's own wording, the geometric
             mean and the arithmetic mean of its readings (the best a word-blind policy that matches the prior gets)
With --agent (a lago_ppo_discrete.py --save-model file, trained on the same env), the agent acts too, and at its own
states the KL(agent || prior) of the episode's wording and both entropies are measured per level.
"""

import argparse
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from envs.clevr_language import goal_pool, level_text, parse_goals  # noqa: E402
from envs.clevr_robot import ClevrRobotEnv  # noqa: E402
from finetune_prior import CLEVR_SUCCESS_TESTS, load_prior  # noqa: E402

MODES = ("own wording", "geometric mean", "arithmetic mean", "agent")


def readings(prior, obs: np.ndarray, level: str, goal_str: str) -> torch.Tensor:
    """log p(a | s, wording) of every wording of the goal at this level ("train+rephrase": the wordings of both levels,
    of a goal they share): [wordings, actions]."""
    goals = parse_goals(goal_str)
    goal = goals[0] if len(goals) == 1 else tuple(goals)
    texts = [level_text(lv, goal, t) for lv in level.split("+") for t in goal_pool(lv)[1]]
    with torch.inference_mode():
        return torch.log_softmax(prior(np.repeat(obs[None], len(texts), 0), texts), -1)


def combine(logp: torch.Tensor) -> dict:
    """Per mode, the log-probabilities a word-blind policy would act with (the own wording is row 0)."""
    geometric = torch.log_softmax(logp.mean(0), -1)
    arithmetic = torch.logsumexp(logp, 0) - np.log(len(logp))
    return {"geometric mean": geometric, "arithmetic mean": arithmetic}


def load_agent(path: str, env):
    """The policy of a lago_ppo_discrete.py --save-model file, reading the env's (padded) observation."""
    import lago_ppo_discrete
    from benchmark.evaluate import _spaces, load_model

    state_dict = load_model(path)[1]
    width = state_dict["actor.0.weight"].shape[1]
    agent = lago_ppo_discrete.Agent(_spaces(SimpleNamespace(shape=(width,)), env.action_space))
    agent.load_state_dict(state_dict)
    return agent.eval(), width


def run_level(prior, level: str, episodes: int, seed: int, success_test: str, agent_path=None) -> dict:
    env = ClevrRobotEnv(goal_split=level.split("+")[0], success_test=success_test, max_episode_steps=50, goal_slots=3)
    agent, width = load_agent(agent_path, env) if agent_path else (None, None)
    rng = np.random.default_rng(seed)
    spread = {"reverse": [], "forward": []}
    success, at_agent = {}, {"kl": [], "agent_entropy": [], "prior_entropy": []}
    for mode in MODES if agent else MODES[:3]:
        wins = 0
        for ep in range(episodes):
            obs, info = env.reset(seed=seed + ep)
            while True:
                logp = readings(prior, obs, level, info["goal"])
                with torch.inference_mode():
                    own = torch.log_softmax(prior(obs[None], [info["instruction"]])[0], -1)
                if mode == "agent":
                    with torch.inference_mode():
                        act = torch.log_softmax(agent.actor(torch.as_tensor(obs[:width], dtype=torch.float32)), -1)
                    at_agent["kl"].append((act.exp() * (act - own)).sum().item())
                    at_agent["agent_entropy"].append(-(act.exp() * act).sum().item())
                    at_agent["prior_entropy"].append(-(own.exp() * own).sum().item())
                elif mode == MODES[0]:
                    p = logp.exp()
                    for name, mean in combine(logp).items():
                        key = "reverse" if name == "geometric mean" else "forward"
                        # reverse: KL(g || q_t) averaged over t; forward: KL(q_t || m) averaged over t
                        kl = (mean.exp() * (mean - logp)).sum(-1) if key == "reverse" else (p * (logp - mean)).sum(-1)
                        spread[key].append(kl.mean().item())
                    act = own
                elif mode != "agent":
                    act = combine(logp)[mode]
                a = int(rng.choice(len(act), p=act.exp().double().numpy() / act.exp().double().sum().item()))
                obs, _, terminated, truncated, info = env.step(a)
                if terminated or truncated:
                    wins += bool(info["success"])
                    break
        success[mode] = wins / episodes
    measured = {k: float(np.mean(v)) for k, v in at_agent.items() if v}
    return {"spread_reverse": float(np.mean(spread["reverse"])), "spread_forward": float(np.mean(spread["forward"])),
            "success": success, "states": len(spread["reverse"]), **measured}  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prior_dir", help="a CLEVR-Robot prior made by finetune_prior.py")
    parser.add_argument("--levels", default="train,heldout,rephrase,compose")
    parser.add_argument("--episodes", type=int, default=100, help="episodes per level and policy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--agent", help="also a lago_ppo_discrete.py --save-model agent of the same env")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    prior = load_prior(args.prior_dir)
    if prior.config["env_id"] not in CLEVR_SUCCESS_TESTS:
        parser.error(f"{args.prior_dir} is a prior of {prior.config['env_id']}, not of CLEVR-Robot")
    results = {}
    modes = MODES if args.agent else MODES[:3]
    extra = f" {'KL(agent||prior)':>17} {'H(agent)':>9} {'H(prior)':>9}" if args.agent else ""
    print(f"{'level':<10} {'KL to geometric':>16} {'KL to arithmetic':>17}  " + "  ".join(f"{m:>16}" for m in modes)
          + extra)  # fmt: skip
    for level in args.levels.split(","):
        test = CLEVR_SUCCESS_TESTS[prior.config["env_id"]]
        r = results[level] = run_level(prior, level, args.episodes, args.seed, test, args.agent)
        extra = f" {r['kl']:>17.3f} {r['agent_entropy']:>9.3f} {r['prior_entropy']:>9.3f}" if args.agent else ""
        print(f"{level:<10} {r['spread_reverse']:>16.3f} {r['spread_forward']:>17.3f}  "
              + "  ".join(f"{100 * r['success'][m]:>15.1f}%" for m in modes) + extra, flush=True)  # fmt: skip
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"prior": args.prior_dir, "episodes": args.episodes, "seed": args.seed, "levels": results}, f,
                      indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
