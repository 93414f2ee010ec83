"""The scripted expert of CLEVR-Robot and its demonstrations.

`expert_action(env, noise=0.0, rng=None)` is a one-step model-predictive planner: it simulates
each push of the target and of the reference sphere (16 actions) on a copy of the physics state
(the exact outcome), scores the resulting scene by the distance of the target to the nearest free
spot that satisfies the relation with a margin (or, where the walls leave no such spot, by how far
the reference must move first), and takes the best; if no such push makes progress it considers
all 40 actions. The margin follows the env's success test (`_MARGINS`). Goals of two or three
relations ("compose", "hard"): see `_compose_expert_action`; rephrased goals are the same programs. With probability `noise` it returns a uniformly random action instead.
`collect_demos(...)` rolls it out and returns the project's demonstration dict; `level_success`
measures the success rate of random actions or of the expert on a level:

    python -m envs.clevr_expert --policy random --episodes 200 --seed 0
    python -m envs.clevr_expert --policy expert --episodes 300 --success-test kalm --levels train,hard
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from envs.clevr_language import LEVELS, PROGRAMS
from envs.clevr_robot import (
    ENV_ID,
    NUM_ACTIONS,
    NUM_OBJECTS,
    RELATION_VECTORS,
    SPHERE_RADIUS,
    STATE_DIM,
    SUCCESS_TESTS,
    X_LIMIT,
    Y_MAX,
    Y_MIN,
    ClevrRobotEnv,
    goal_holds,
)

# The expert aims the target at spots that satisfy the relation with a margin, per success test:
# (cos of the largest angle off the relation's direction, min distance, max distance). "original": cos > 0.6
# and distance < 0.7; "kalm": within 45 degrees (cos 0.707) and distance < 0.391 (touching: 0.26).
_MARGINS = {"original": (0.72, 0.30, 0.60), "kalm": (0.82, 0.28, 0.36)}
_EXPERT_BOX = (X_LIMIT - 0.01, Y_MIN + 0.01, Y_MAX - 0.01)
_gx, _gy = np.meshgrid(
    np.arange(-_EXPERT_BOX[0], _EXPERT_BOX[0] + 1e-9, 0.02), np.arange(_EXPERT_BOX[1], _EXPERT_BOX[2] + 1e-9, 0.02)
)
_EXPERT_GRID = np.stack([_gx.ravel(), _gy.ravel()], axis=1)


def _reference_infeasibility(ref: np.ndarray, r: int, offset: float) -> float:
    """How far the reference is from where a margin spot for relation r fits inside the walls; offset:
    along the relation axis of the nearest margin spot (min distance * cos margin)."""
    x, y = ref
    if r == 0:  # left: target needs x <= ref_x - offset >= -X
        return max(0.0, -_EXPERT_BOX[0] + offset - x)
    if r == 1:
        return max(0.0, x - (_EXPERT_BOX[0] - offset))
    if r == 2:  # behind: smaller y
        return max(0.0, _EXPERT_BOX[1] + offset - y)
    return max(0.0, y - (_EXPERT_BOX[2] - offset))


def _expert_cost(pos: np.ndarray, program: int, test: str = "original") -> float:
    """0 when the goal holds (under success test `test`); else distance of the target to the nearest free
    margin spot (1 + the reference's infeasibility when no such spot exists)."""
    t, r, f = PROGRAMS[program]
    if goal_holds(pos, program, test):
        return 0.0
    cos, near, far = _MARGINS[test]
    diff = _EXPERT_GRID - pos[f]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    ok = (diff @ RELATION_VECTORS[r] > cos * dist) & (dist > near) & (dist < far)
    for o in range(NUM_OBJECTS):
        if o != t and o != f:
            od = _EXPERT_GRID - pos[o]
            ok &= np.einsum("ij,ij->i", od, od) > (2 * SPHERE_RADIUS + 0.02) ** 2
    if ok.any():
        g = _EXPERT_GRID[ok] - pos[t]
        return 0.01 + float(np.sqrt(np.einsum("ij,ij->i", g, g).min()))
    return 1.0 + _reference_infeasibility(pos[f], r, near * cos)


_FULL_STATE = mujoco.mjtState.mjSTATE_INTEGRATION


def _simulate(env: ClevrRobotEnv, action: int) -> np.ndarray:
    """Sphere positions after `action` from the env's current state, on a scratch copy."""
    m = env.model
    if env._expert_data is None:
        size = mujoco.mj_stateSize(m, _FULL_STATE)
        env._expert_data = (mujoco.MjData(m), np.empty(size))
    sd, start = env._expert_data
    mujoco.mj_getState(m, env.data, start, _FULL_STATE)  # everything mj_step reads, warm start included
    mujoco.mj_setState(m, sd, start, _FULL_STATE)
    env._push(sd, action)
    return sd.qpos[env._xy_index].reshape(NUM_OBJECTS, 2)


def _goal_cost(pos: np.ndarray, goal: tuple[int, ...], test: str = "original") -> float:
    """The expert's cost of a goal: `_expert_cost` of a one-relation goal; for two or three relations, the
    sum over the relations that do not hold of (0.5 + their cost), so that a push that breaks a relation
    that holds is taken only when it brings another one much closer."""
    if len(goal) == 1:
        return _expert_cost(pos, goal[0], test)
    total = 0.0
    for p in goal:
        c = _expert_cost(pos, p, test)
        if c > 0.0:
            total += 0.5 + c
    return total


def _compose_expert_action(env: ClevrRobotEnv, pos: np.ndarray, goal: tuple[int, ...]) -> int:
    """Expert push for a goal of two or three relations: the pushes of the spheres of the relations that
    do not hold yet first, then all 40, scored by `_goal_cost` (which keeps a relation that holds unless
    breaking it pays off). Where no push gains at least 0.01 (a local minimum, e.g. a relation that
    holds blocks another one), it works on the relations that do not hold alone, even if that breaks
    the others."""
    test = env.success_test
    current = _goal_cost(pos, goal, test)
    todo = [p for p in goal if not goal_holds(pos, p, test)]
    objects: list[int] = []
    for p in todo + [p for p in goal if p not in todo]:
        t, _, f = PROGRAMS[p]
        objects += [o for o in (t, f) if o not in objects]
    order = [o * 8 + k for o in objects for k in range(8)]
    order += [a for a in range(NUM_ACTIONS) if a not in order]
    outcomes = {}
    best_a, best_c = order[0], math.inf
    for i, a in enumerate(order):
        if i == 8 * len(objects) and best_c < current - 0.01:
            return best_a  # progress with the goal's spheres: no need to try the others
        outcomes[a] = after = _simulate(env, a).copy()
        c = _goal_cost(after, goal, test)
        if c < best_c:
            best_a, best_c = a, c
        if c == 0.0:
            return a
    if best_c < current - 0.01:
        return best_a
    return min(order, key=lambda a: sum(_expert_cost(outcomes[a], p, test) for p in todo))


def expert_action(env, noise: float = 0.0, rng: np.random.Generator | None = None) -> int:
    """Scripted expert: the push (of the goal's spheres first, else any) whose simulated outcome
    brings the goal closest under the env's success test (see `_expert_cost`; goals of two or three
    relations: `_goal_cost`, spheres of the relations that do not hold yet first). The wording level does not matter (a rephrased
    instruction has the same program). `env` may be wrapped (gym.make).

    noise: probability in [0, 1] of returning a uniformly random action instead (imperfect
    demonstrations). rng: numpy Generator for that coin; pass one for reproducibility (None: a
    fresh unseeded generator, used only when noise > 0). The expert never touches the env's own
    random state or physics state.
    """
    env = env.unwrapped
    if not isinstance(env, ClevrRobotEnv):
        raise ValueError(f"expert_action needs a CLEVR-Robot env, got {type(env).__name__}")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise is a probability in [0, 1], got {noise}")
    if noise > 0.0:
        rng = rng if rng is not None else np.random.default_rng()
        if rng.random() < noise:
            return int(rng.integers(NUM_ACTIONS))
    goal, test = env._goal, env.success_test
    pos = env.positions()
    if len(goal) > 1:
        return _compose_expert_action(env, pos, goal)
    current = _goal_cost(pos, goal, test)
    objects: list[int] = []
    for p in sorted(goal, key=lambda p: goal_holds(pos, p, test)):  # relations that do not hold first
        t, _, f = PROGRAMS[p]
        objects += [o for o in (t, f) if o not in objects]
    first = [o * 8 + k for o in objects for k in range(8)]
    best_a, best_c = first[0], math.inf
    for a in first:
        c = _goal_cost(_simulate(env, a), goal, test)
        if c < best_c:
            best_a, best_c = a, c
        if c == 0.0:
            return a
    if best_c < current - 1e-3:
        return best_a
    for a in range(NUM_ACTIONS):  # no progress with the goal's spheres: try the others too
        if a in first:
            continue
        c = _goal_cost(_simulate(env, a), goal, test)
        if c < best_c:
            best_a, best_c = a, c
    return best_a


def collect_demos(
    num_episodes: int,
    noise: float = 0.0,
    goal_split: str = "train",
    seed: int = 0,
    max_episode_steps: int = 50,
    goal_slots: int | None = None,
    success_test: str = "original",
    labels: str = "executed",
    progress=None,
) -> dict:
    """Roll out the scripted expert; returns the project's demonstration dict.

    goal_split: any level, split or "+"-mixture the env takes (e.g. "rephrase", "compose",
    "train+compose"). goal_slots: of the env (None: 3 with the 'hard' level, else 2 with 'compose', else
    1). success_test: of the env ("original" or "kalm").
    observations float32 [N, 10 + goal_slots * 14] (24 with one slot; full env observation before
    each action), actions int64 [N] (labels="executed": the executed, possibly noisy, actions;
    labels="expert": the noise-free expert's action at each visited state, the trajectory unchanged), instructions unicode
    [N], episode_ids int64 [N], episode_success bool [E], env_id "CLEVR-Robot-v0", state_dim 10;
    for a mixture also levels unicode [N] (the level of each step's episode). Failed episodes are
    kept (episode_success False). Deterministic given the arguments: the env is seeded once with
    `seed` and the noise generator with `seed + 1`. progress: wraps the range of episodes (e.g. tqdm) to show it.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if labels not in ("executed", "expert"):
        raise ValueError(f"labels is 'executed' or 'expert', got {labels!r}")
    env = ClevrRobotEnv(
        max_episode_steps=max_episode_steps, goal_split=goal_split, goal_slots=goal_slots, success_test=success_test
    )
    rng = np.random.default_rng(seed + 1)
    obs_l, act_l, ins_l, ep_l, succ, lev_l = [], [], [], [], [], []
    for ep in (progress or iter)(range(num_episodes)):
        obs, info = env.reset(seed=seed if ep == 0 else None)
        done = False
        success = False
        while not done:
            if labels == "expert":  # the same coin and random action as expert_action(noise=...) draws
                label = expert_action(env)
                a = int(rng.integers(NUM_ACTIONS)) if noise > 0 and rng.random() < noise else label
            else:
                a = label = expert_action(env, noise=noise, rng=rng)
            obs_l.append(obs)
            act_l.append(label)
            ins_l.append(info["instruction"])
            lev_l.append(info["level"])
            ep_l.append(ep)
            obs, _, terminated, truncated, info = env.step(a)
            success = bool(info["success"])
            done = terminated or truncated
        succ.append(success)
    demos = {
        "observations": np.stack(obs_l).astype(np.float32),
        "actions": np.asarray(act_l, dtype=np.int64),
        "instructions": np.asarray(ins_l, dtype=np.str_),
        "episode_ids": np.asarray(ep_l, dtype=np.int64),
        "episode_success": np.asarray(succ, dtype=bool),
        "env_id": ENV_ID,
        "state_dim": STATE_DIM,
    }
    if len(env.levels) > 1:
        demos["levels"] = np.asarray(lev_l, dtype=np.str_)
    return demos


def level_success(
    goal_split: str,
    episodes: int = 200,
    policy: str = "random",
    seed: int = 0,
    max_episode_steps: int = 50,
    success_test: str = "original",
) -> dict:
    """Success rate of uniform random actions ("random") or of the expert ("expert") on a level,
    split or mixture under `success_test`: `episodes` episodes of at most `max_episode_steps` steps,
    the env seeded once with `seed` (automatic goal_slots), the random actions from seed + 1.
    steps_per_episode counts a failed episode's `max_episode_steps`; steps_to_success is the mean over
    the successful episodes (None if none)."""
    if policy not in ("random", "expert"):
        raise ValueError(f"policy must be 'random' or 'expert', got {policy!r}")
    env = ClevrRobotEnv(max_episode_steps=max_episode_steps, goal_split=goal_split, success_test=success_test)
    rng = np.random.default_rng(seed + 1)
    wins, steps, win_steps = 0, 0, 0
    for ep in range(episodes):
        env.reset(seed=seed if ep == 0 else None)
        n = 0
        while True:
            a = int(rng.integers(NUM_ACTIONS)) if policy == "random" else expert_action(env)
            *_, terminated, truncated, info = env.step(a)
            n += 1
            if terminated or truncated:
                break
        steps += n
        if info["success"]:
            wins += 1
            win_steps += n
    return {
        "goal_split": goal_split,
        "policy": policy,
        "success_test": success_test,
        "episodes": episodes,
        "success_rate": wins / episodes,
        "steps_per_episode": steps / episodes,
        "steps_to_success": win_steps / wins if wins else None,
    }


if __name__ == "__main__":  # python -m envs.clevr_expert --policy random --episodes 200 --seed 0
    import argparse

    parser = argparse.ArgumentParser(description="success rate per instruction level (CLEVR-Robot)")
    parser.add_argument("--levels", default=",".join(LEVELS), help="comma-separated levels / splits / mixtures")
    parser.add_argument("--policy", default="random", choices=("random", "expert"))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-episode-steps", type=int, default=50)
    parser.add_argument("--success-test", default="original", choices=SUCCESS_TESTS)
    cli = parser.parse_args()
    for name in cli.levels.split(","):
        r = level_success(name, cli.episodes, cli.policy, cli.seed, cli.max_episode_steps, cli.success_test)
        to_success = "-" if r["steps_to_success"] is None else f"{r['steps_to_success']:.2f}"
        print(
            f"{cli.policy}, success_test={cli.success_test!r}, goal_split={name!r}, {cli.episodes} episodes of <= "
            f"{cli.max_episode_steps} steps: success {r['success_rate']:.3f}, {r['steps_per_episode']:.2f} steps "
            f"per episode, {to_success} steps per successful episode",
            flush=True,
        )
