"""Tests of envs/clevr_robot.py: relations, pushes, walls, goals and split, seeding, expert, API."""

import math
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers CLEVR-Robot-v0)
from envs.clevr_robot import (
    COLORS,
    DIRECTIONS,
    GOAL_DIM,
    HELDOUT_PROGRAMS,
    HELDOUT_TEMPLATES,
    NUM_ACTIONS,
    OBS_DIM,
    PROGRAM_STRINGS,
    PROGRAMS,
    RELATION_VECTORS,
    RELATIONS,
    STATE_DIM,
    TEMPLATES,
    TRAIN_PROGRAMS,
    TRAIN_TEMPLATES,
    ClevrRobotEnv,
    collect_demos,
    expert_action,
    goal_encoding,
    goal_holds,
    goal_pool,
    instruction_text,
    parse_goal,
    relation_holds,
    split_instructions,
)

# A scene whose corners keep four spheres out of the way of pushes of a sphere at the centre.
CENTRE = np.array([0.0, 0.2])
CORNERS = np.array([[-0.45, -0.15], [0.45, -0.15], [-0.45, 0.55], [0.45, 0.55]])


def scene_with(obj: int, at) -> np.ndarray:
    xy = np.empty((5, 2))
    others = iter(CORNERS)
    for i in range(5):
        xy[i] = at if i == obj else next(others)
    return xy


# ------------------------------------------------------------------ relations
@pytest.mark.parametrize("r", range(4))
def test_relation_thresholds(r):
    rel, d = RELATIONS[r], RELATION_VECTORS[r]
    perp = np.array([-d[1], d[0]])
    a = np.array([0.1, 0.2])

    def at(dist, cos):
        return a + dist * (cos * d + math.sqrt(1 - cos * cos) * perp)

    assert relation_holds(a, at(0.4, 1.0), rel)
    assert relation_holds(a, at(0.699, 1.0), rel)  # just inside 0.7
    assert not relation_holds(a, at(0.701, 1.0), rel)  # just outside 0.7
    assert relation_holds(a, at(0.4, 0.601), rel)  # just inside cos 0.6
    assert not relation_holds(a, at(0.4, 0.599), rel)  # just outside cos 0.6
    assert not relation_holds(a, at(0.4, -1.0), rel)  # opposite side
    assert not relation_holds(a, a, rel)  # same point: no direction
    # the other relations on the axis: exactly the opposite one is false, perpendicular ones too
    b = at(0.4, 1.0)
    for other in RELATIONS:
        assert relation_holds(a, b, other) == (other == rel)


def test_relation_directions_and_program_semantics():
    blue, red = np.array([0.0, 0.2]), np.array([-0.3, 0.2])
    assert relation_holds(blue, red, "left") and not relation_holds(blue, red, "right")
    assert relation_holds(np.zeros(2), np.array([0.0, -0.3]), "behind")
    assert relation_holds(np.zeros(2), np.array([0.0, 0.3]), "front")
    pos = np.zeros((5, 2))
    pos[0], pos[1] = red, blue  # red index 0, blue index 1
    assert goal_holds(pos, "red left_of blue") and goal_holds(pos, "blue right_of red")
    assert not goal_holds(pos, "blue left_of red")
    with pytest.raises(ValueError, match="unknown relation"):
        relation_holds(blue, red, "above")


# ------------------------------------------------------------------ physics
@pytest.mark.parametrize("k", range(8))
def test_each_direction_pushes_the_chosen_sphere_that_way(k):
    env = ClevrRobotEnv()
    env.reset(seed=0)
    obj = k % 5
    env.set_positions(scene_with(obj, CENTRE))
    before = env.positions()
    obs, *_ = env.step(obj * 8 + k)
    after = env.positions()
    moved = after[obj] - before[obj]
    want = DIRECTIONS[k] / np.linalg.norm(DIRECTIONS[k])
    assert np.linalg.norm(moved) > 0.15, moved
    assert moved @ want / np.linalg.norm(moved) > 0.98, (moved, want)
    others = [i for i in range(5) if i != obj]
    assert np.abs(after[others] - before[others]).max() < 1e-3
    np.testing.assert_allclose(obs[:STATE_DIM], after.reshape(-1).astype(np.float32))


def test_spheres_stay_inside_walls_over_long_random_rollouts():
    env = ClevrRobotEnv(max_episode_steps=None)
    rng = np.random.default_rng(0)
    tol = 0.01  # soft contacts may penetrate the walls by a few millimetres
    for episode in range(3):
        obs, _ = env.reset(seed=episode)
        for _ in range(400):
            obs, *_ = env.step(int(rng.integers(NUM_ACTIONS)))
            xy = env.positions()
            assert np.all(np.abs(xy[:, 0]) <= 0.6 - 0.13 + tol), xy
            assert np.all(xy[:, 1] >= -0.3 + 0.13 - tol) and np.all(xy[:, 1] <= 0.7 - 0.13 + tol), xy
            assert env.observation_space.contains(obs)


def test_pusher_passes_the_walls_but_spheres_do_not():
    import mujoco

    env = ClevrRobotEnv()
    env.reset(seed=0)
    env.set_positions(scene_with(0, [0.3, 0.2]))
    env.step(0 * 8 + 0)  # push red right, into the wall at x = 0.6
    assert 0.4 < env.positions()[0, 0] <= 0.48
    # drive the bare pusher through the right wall where no sphere is in the way
    m, d = env.model, env.data
    d.qpos[env._pusher_q : env._pusher_q + 2] = (0.45, 0.2)
    d.qvel[env._pusher_v : env._pusher_v + 2] = 0.0
    env.set_positions(scene_with(0, [-0.3, 0.2]))
    d.qpos[env._pusher_q : env._pusher_q + 2] = (0.45, 0.2)
    d.ctrl[:] = (1.0, 0.0)
    mujoco.mj_step(m, d, 40)
    assert d.qpos[env._pusher_q] > 0.7


# ------------------------------------------------------------------ goals, reward, termination
def test_reset_never_starts_with_the_goal_true_and_samples_the_split():
    for split in ("train", "heldout", "all"):
        env = ClevrRobotEnv(goal_split=split)
        programs, templates = goal_pool(split)
        allowed_goals = {PROGRAM_STRINGS[p] for p in programs}
        allowed_text = set(split_instructions(split))
        seen = set()
        for i in range(150):
            obs, info = env.reset(seed=i)
            assert info["success"] is False and not env.goal_holds()
            assert not goal_holds(obs[:STATE_DIM], info["goal"])
            assert info["goal"] in allowed_goals and info["instruction"] in allowed_text
            np.testing.assert_array_equal(obs[STATE_DIM:], goal_encoding(info["goal"]))
            seen.add(info["goal"])
        assert len(seen) > len(programs) // 2  # goals are actually varied


def test_fixed_goal_option_redraws_until_false():
    env = ClevrRobotEnv()
    for i in range(40):
        _, info = env.reset(seed=i, options={"goal": "cyan front_of purple", "template": 3})
        assert info["goal"] == "cyan front_of purple" and not env.goal_holds()
        assert info["instruction"] == "Push the cyan ball in front of the purple ball."


def test_success_terminates_with_reward_one():
    env = gym.make("CLEVR-Robot-v0")
    obs, info = env.reset(seed=0, options={"goal": "red left_of blue"})
    u = env.unwrapped
    red, blue = [0.05, 0.45], [0.25, 0.15]  # red is up-left of blue, not enough to the left
    u.set_positions([red, blue, [-0.42, -0.12], [0.42, -0.12], [0.42, 0.52]])
    assert not u.goal_holds()
    obs, reward, terminated, truncated, info = env.step(2 * 8 + 3)  # push green backwards: irrelevant
    assert (reward, terminated, truncated, info["success"]) == (0.0, False, False, False)
    obs, reward, terminated, truncated, info = env.step(0 * 8 + 2)  # push red to the left
    assert relation_holds(obs[2:4], obs[0:2], "left")
    assert reward == 1.0 and terminated is True and truncated is False and info["success"] is True
    assert info["goal"] == "red left_of blue" and "red" in info["instruction"] and "blue" in info["instruction"]


def test_truncation_at_the_step_limit():
    far = [[-0.42, -0.12], [0.42, -0.12], [-0.42, 0.52], [0.42, 0.52], [0.0, 0.2]]
    for env, limit in ((ClevrRobotEnv(max_episode_steps=3), 3), (gym.make("CLEVR-Robot-v0", max_episode_steps=4), 4)):
        env.reset(seed=0, options={"goal": "red front_of cyan"})
        env.unwrapped.set_positions(far)
        for t in range(1, limit + 1):
            *_, terminated, truncated, info = env.step(0 * 8 + 3)  # push red backwards: away from the goal
            assert not terminated and truncated == (t == limit)
    assert gym.make("CLEVR-Robot-v0").spec.max_episode_steps == 50
    assert ClevrRobotEnv().max_episode_steps == 50


def test_same_seed_same_trajectory():
    def rollout(seed):
        env = gym.make("CLEVR-Robot-v0")
        rng = np.random.default_rng(123)
        out = []
        obs, info = env.reset(seed=seed)
        out.append((obs, info["instruction"]))
        for _ in range(120):
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(NUM_ACTIONS)))
            out.append((obs, reward, info["instruction"]))
            if terminated or truncated:
                obs, info = env.reset()
                out.append((obs, info["instruction"]))
        return out

    a, b, c = rollout(7), rollout(7), rollout(8)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x[0], y[0])
        assert x[1:] == y[1:]
    assert not np.array_equal(a[0][0], c[0][0])


def test_check_env_passes_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("CLEVR-Robot-v0", render_mode="rgb_array").unwrapped)
        check_env(gym.make("CLEVR-Robot-v0", goal_split="heldout").unwrapped)


def test_vector_env_exposes_instructions():
    envs_ = gym.make_vec("CLEVR-Robot-v0", num_envs=2, vectorization_mode="sync")
    obs, infos = envs_.reset(seed=0)
    assert obs.shape == (2, OBS_DIM) and obs.dtype == np.float32
    assert len(infos["instruction"]) == 2 and all(isinstance(s, str) and s for s in infos["instruction"])
    envs_.step(np.array([0, 39]))
    envs_.close()


# ------------------------------------------------------------------ errors
def test_invalid_actions_raise_clear_errors():
    env = ClevrRobotEnv()
    env.reset(seed=0)
    for bad in (40, -1, 3.5, "3", None, np.array([1, 2])):
        with pytest.raises(ValueError, match=r"integers in \[0, 40\)"):
            env.step(bad)
    env.step(np.int64(5))
    env.step(np.array(7))  # 0-d integer arrays (vector envs) are fine


def test_unknown_goal_specs_and_splits_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown goal_split 'test'.*'train', 'heldout', 'all'"):
        ClevrRobotEnv(goal_split="test")
    with pytest.raises(ValueError, match="unknown goal_split"):
        gym.make("CLEVR-Robot-v0", goal_split="held-out")
    env = ClevrRobotEnv()
    with pytest.raises(ValueError, match="Did you mean 'red left_of blue'"):
        env.reset(options={"goal": "red lft_of blue"})
    with pytest.raises(ValueError, match="two different colours"):
        env.reset(options={"goal": "red left_of red"})
    with pytest.raises(ValueError, match="accepted: 'goal', 'template'"):
        env.reset(options={"goals": "red left_of blue"})
    with pytest.raises(ValueError, match="template must be an integer"):
        env.reset(options={"template": 10})
    with pytest.raises(ValueError, match="goal index must be in"):
        parse_goal(80)
    with pytest.raises(ValueError, match="outside the walls"):
        env.set_positions(scene_with(0, [0.55, 0.2]))
    with pytest.raises(ValueError, match="overlap"):
        env.set_positions(scene_with(0, [-0.40, -0.10]))
    with pytest.raises(ValueError, match="noise is a probability"):
        expert_action(env, noise=1.5)


# ------------------------------------------------------------------ the split
def test_goal_split_is_disjoint_complete_and_documented():
    assert len(PROGRAMS) == 80 and len(set(PROGRAM_STRINGS)) == 80 and len(TEMPLATES) >= 6
    assert set(TRAIN_PROGRAMS).isdisjoint(HELDOUT_PROGRAMS) and len(HELDOUT_PROGRAMS) == 16
    assert set(TRAIN_PROGRAMS) | set(HELDOUT_PROGRAMS) == set(range(80))
    assert set(TRAIN_TEMPLATES).isdisjoint(HELDOUT_TEMPLATES) and len(TRAIN_TEMPLATES) >= 6
    # the documented rule
    assert all(((t + r + f) % 5 == 0) == (i in HELDOUT_PROGRAMS) for i, (t, r, f) in enumerate(PROGRAMS))
    # every word of a held-out program is seen in training
    train = [PROGRAMS[i] for i in TRAIN_PROGRAMS]
    assert {t for t, _, _ in train} == {f for _, _, f in train} == set(range(5))
    assert {r for _, r, _ in train} == set(range(4))
    assert set(split_instructions("train")).isdisjoint(split_instructions("heldout"))
    assert len(split_instructions("train")) == 64 * len(TRAIN_TEMPLATES)
    # every program has >= 6 distinct paraphrases, which name both colours
    for p in range(80):
        texts = {instruction_text(p, k) for k in range(len(TEMPLATES))}
        assert len(texts) >= 6
        t, _, f = PROGRAMS[p]
        assert all(COLORS[t] in s and COLORS[f] in s for s in texts)


def test_goal_split_is_deterministic_across_processes():
    # string hashing is randomised per process: the split must not depend on it
    code = "from envs.clevr_robot import split_instructions as s; print(s('heldout') + s('train'))"
    root = Path(__file__).resolve().parents[1]
    outs = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=root, env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("1", "2")
    }
    assert outs == {str(split_instructions("heldout") + split_instructions("train")) + "\n"}


# ------------------------------------------------------------------ render, observation, demos, expert
def test_render_top_down_image():
    env = ClevrRobotEnv(render_mode="rgb_array")
    env.reset(seed=0)
    env.set_positions(scene_with(0, CENTRE))
    img = env.render()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 200
    # the red sphere's centre pixel is red: column = (x + 0.75) * 200, row = (y + 0.55) * 200
    row, col = int((CENTRE[1] + 0.55) * 200), int((CENTRE[0] + 0.75) * 200)
    assert tuple(img[row, col]) == (255, 26, 26)
    with pytest.warns(UserWarning, match="render_mode=None"):
        assert ClevrRobotEnv().render() is None


def test_observation_layout():
    env = ClevrRobotEnv()
    obs, info = env.reset(seed=3)
    assert obs.shape == (OBS_DIM,) == (STATE_DIM + GOAL_DIM,) and obs.dtype == np.float32
    np.testing.assert_array_equal(obs[:STATE_DIM], env.positions().reshape(-1).astype(np.float32))
    t, r, f = PROGRAMS[parse_goal(info["goal"])]
    assert obs[STATE_DIM + t] == 1 and obs[STATE_DIM + 5 + r] == 1 and obs[STATE_DIM + 9 + f] == 1
    assert obs[STATE_DIM:].sum() == 3


def test_collect_demos_format_and_determinism():
    d = collect_demos(6, noise=0.0, seed=3)
    n = len(d["actions"])
    assert d["observations"].shape == (n, OBS_DIM) and d["observations"].dtype == np.float32
    assert d["actions"].dtype == np.int64 and d["actions"].min() >= 0 and d["actions"].max() < 40
    assert d["instructions"].shape == (n,) and d["instructions"].dtype.kind == "U"
    assert d["episode_ids"].dtype == np.int64 and set(d["episode_ids"]) == set(range(6))
    assert d["episode_success"].dtype == bool and d["episode_success"].shape == (6,) and d["episode_success"].all()
    assert d["env_id"] == "CLEVR-Robot-v0" and d["state_dim"] == STATE_DIM == 10
    e = collect_demos(6, noise=0.0, seed=3)
    np.testing.assert_array_equal(d["observations"], e["observations"])
    np.testing.assert_array_equal(d["actions"], e["actions"])
    noisy = collect_demos(3, noise=1.0, seed=3, max_episode_steps=5)
    assert len(noisy["actions"]) > 3  # random actions rarely solve a goal at once


def expert_rate(split, episodes, seed0=0):
    env = ClevrRobotEnv(goal_split=split)
    wins = 0
    for ep in range(episodes):
        env.reset(seed=seed0 + ep)
        while True:
            *_, terminated, truncated, info = env.step(expert_action(env))
            if terminated or truncated:
                break
        wins += info["success"]
    return wins / episodes


def test_expert_solves_train_goals():
    assert expert_rate("train", 60, seed0=1000) >= 0.85


def test_expert_does_not_touch_env_state():
    a, b = ClevrRobotEnv(), ClevrRobotEnv()
    a.reset(seed=5)
    b.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        expert_action(a, noise=0.3, rng=np.random.default_rng(1))
        act = int(rng.integers(NUM_ACTIONS))
        np.testing.assert_array_equal(a.step(act)[0], b.step(act)[0])


@pytest.mark.slow
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_expert_success_rate_200_episodes(split):
    assert expert_rate(split, 200) >= 0.9


def test_import_envs_is_light():
    code = (
        "import sys, gymnasium as gym, envs; env = gym.make('CLEVR-Robot-v0'); env.reset(seed=0); env.step(0); "
        "print(sorted(m for m in ('torch', 'metaworld', 'transformers') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
