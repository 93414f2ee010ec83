"""The fine-tuned prior acting alone, no RL (the table's `prior` and `prior-sampled` rows): greedy or sampled actions
on the CLEVR-Robot levels or a Meta-World task, the episodes in lockstep so that the prior sees one batch per step."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from benchmark.evaluate import NOT_THREAD_SAFE as _NOT_THREAD_SAFE  # what parallel evaluations must not do at once
from benchmark.presets import CLEVR_ENV_ID


def evaluate_prior(
    prior_path: Path,
    env: str,
    task: str,
    seed: int,
    episodes: int,
    max_episode_steps: Optional[int] = None,
    levels: tuple[str, ...] = ("train", "heldout"),
    goal_slots: int = 1,
    sample: bool = False,
    policy=None,
) -> dict:
    """Success and return of the prior acting alone: greedily (argmax logits / Gaussian mean, clipped) or, with
    `sample`, drawing its actions from its distribution (the policy LaGO's KL pulls towards).

    Runs `episodes` environments in lockstep so that the prior sees one batch per step.
    CLEVR: on each of `levels` (envs with `goal_slots` goal encodings, as the RL runs); Meta-World: on `task`.
    Success = the episode's `info["success"]` was true at some step (CLEVR terminates there).
    `policy`: a loaded prior, or any module with the same call (observations, instructions) -> logits / (mean, std),
    used instead of loading `prior_path`."""
    import gymnasium as gym
    import torch

    import envs  # noqa: F401  (registers CLEVR-Robot-v0)
    from finetune_prior import load_prior

    device = "cuda" if torch.cuda.is_available() else "cpu"  # as the scripts (their --cuda default)
    if policy is not None:
        prior, device = policy, next(policy.parameters()).device
    else:
        with _NOT_THREAD_SAFE:  # loading sets torch's default dtype for a while (bf16 on CUDA)
            prior = load_prior(str(prior_path), device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    splits = levels if env == "clevr" else (task,)
    success, returns = {}, []
    for split in splits:
        if env == "clevr":
            kw = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
            kw.update({} if goal_slots == 1 else {"goal_slots": goal_slots})
            vec = [gym.make(task, goal_split=split, **kw) for _ in range(episodes)]  # task: the CLEVR-Robot id
        else:
            from envs.metaworld import make_env

            with _NOT_THREAD_SAFE:  # Meta-World draws its 50 goals from numpy's global RNG
                vec = [
                    make_env(task, seed=10_000 * seed + i, max_episode_steps=max_episode_steps or 500)
                    for i in range(episodes)
                ]
        obs, instr = [], []
        succ = np.zeros(episodes, dtype=bool)
        for i, e in enumerate(vec):
            o, info = e.reset(seed=10_000 * seed + i)
            obs.append(o)
            instr.append(info["instruction"])
            succ[i] = bool(info.get("success", False))
        active = np.ones(episodes, dtype=bool)
        ret = np.zeros(episodes)
        while active.any():
            idx = np.flatnonzero(active)
            x = torch.as_tensor(np.stack([obs[i] for i in idx]), dtype=torch.float32, device=device)
            with torch.inference_mode():
                out = prior(x, [instr[i] for i in idx])
                if sample and env == "clevr":
                    actions = torch.multinomial(out.float().softmax(-1), 1, generator=generator)[:, 0].cpu().numpy()
                elif sample:
                    mean, std = out
                    noise = torch.randn(mean.shape, generator=generator, device=mean.device)
                    actions = (mean + std * noise).float().cpu().numpy()
                else:
                    actions = (out.argmax(-1) if env == "clevr" else out[0]).float().cpu().numpy()
            if env != "clevr":
                space = vec[0].action_space
                actions = np.clip(actions, space.low, space.high)
            for a, i in zip(actions, idx):
                o, r, term, trunc, info = vec[i].step(int(a) if env == "clevr" else a)
                obs[i] = o
                ret[i] += float(r)
                succ[i] |= bool(info.get("success", False))
                if term or trunc:
                    active[i] = False
        for e in vec:
            e.close()
        success[split] = float(succ.mean())
        returns.append(float(ret.mean()))
    return {"success": success, "return": float(np.mean(returns))}
