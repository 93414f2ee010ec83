"""Tests of CLEVR-Robot: envs/clevr_robot.py (relations, pushes, walls, seeding, API), envs/clevr_language.py (goals,
split, levels) and envs/clevr_expert.py (expert, demos)."""

import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers CLEVR-Robot-v0)
from envs.clevr_expert import collect_demos, expert_action, level_success
from envs.clevr_language import (
    COLOR_SYNONYMS,
    COLORS,
    COMPOSE_FRAMES,
    COMPOSE_GOALS,
    GOAL_DIM,
    HELDOUT_PROGRAMS,
    HELDOUT_TEMPLATES,
    LEVELS,
    PROGRAM_STRINGS,
    PROGRAMS,
    RELATION_PHRASES,
    RELATION_SYNONYMS,
    RELATIONS,
    REPHRASE_TEMPLATES,
    TEMPLATES,
    TRAIN_PROGRAMS,
    TRAIN_TEMPLATES,
    compose_text,
    goal_encoding,
    goal_pool,
    instruction_text,
    level_instructions,
    parse_goal,
    parse_goals,
    rephrase_text,
)
from envs.clevr_robot import (
    DIRECTIONS,
    NUM_ACTIONS,
    OBS_DIM,
    RELATION_VECTORS,
    STATE_DIM,
    ClevrRobotEnv,
    goal_holds,
    relation_holds,
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


def test_goal_entry_points_agree_with_goal_holds():
    """programs_holding (vectorised), env.goal_holds() and relation_holds give goal_holds' answer."""
    env = ClevrRobotEnv()
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    seen = np.zeros(len(PROGRAMS), dtype=int)
    for i in range(400):
        if i < 300:  # scenes as reset draws them
            env.set_positions(env._sample_positions())
        else:  # crowded scenes (overlaps allowed): many pairs near the 0.7 / cos 0.6 thresholds
            env.set_positions(rng.uniform([-0.3, -0.1], [0.3, 0.5], size=(5, 2)), check=False)
        pos = env.positions()
        holding = env.programs_holding()
        expected = np.array([goal_holds(pos, p) for p in range(len(PROGRAMS))])
        np.testing.assert_array_equal(holding, expected)
        seen += expected
        for p in rng.choice(len(PROGRAMS), size=4, replace=False):
            t, r, f = PROGRAMS[p]
            assert relation_holds(pos[f], pos[t], RELATIONS[r]) == expected[p]
            env.set_goal(int(p))
            assert env.goal_holds() == expected[p]
    assert seen.min() > 0 and (400 - seen).min() > 0  # every program seen both holding and not


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
        allowed_text = set(level_instructions(split))
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
    assert set(level_instructions("train")).isdisjoint(level_instructions("heldout"))
    assert len(level_instructions("train")) == 64 * len(TRAIN_TEMPLATES)
    # every program has >= 6 distinct paraphrases, which name both colours
    for p in range(80):
        texts = {instruction_text(p, k) for k in range(len(TEMPLATES))}
        assert len(texts) >= 6
        t, _, f = PROGRAMS[p]
        assert all(COLORS[t] in s and COLORS[f] in s for s in texts)


def test_goal_split_is_deterministic_across_processes():
    # string hashing is randomised per process: the split must not depend on it
    code = "from envs.clevr_language import level_instructions as s; print(s('heldout') + s('train'))"
    root = Path(__file__).resolve().parents[1]
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outs == {str(level_instructions("heldout") + level_instructions("train")) + "\n"}


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


# ------------------------------------------------------------------ instruction levels (rephrase, compose, mixtures)
WORD = re.compile(r"[a-z]+")
TRAIN_COLOUR_RELATION_WORDS = set(COLORS) | {
    w for phrases in RELATION_PHRASES.values() for p in phrases for w in WORD.findall(p)
}
TRAIN_COLOUR_RELATION_WORDS -= {"to", "the", "of", "on", "in"}  # function words, shared with any English
MIX = "train+rephrase+heldout+compose"


def words(text: str) -> set:
    return set(WORD.findall(text.lower()))


def decode_rephrase(text: str) -> str:
    """The program a rephrase instruction names, read back with the synonym tables only."""
    colour_of = {s: c for c, syn in COLOR_SYNONYMS.items() for s in syn}
    relation_of = {s: r for r, syn in RELATION_SYNONYMS.items() for s in syn}
    for frame in REPHRASE_TEMPLATES:
        pattern = re.escape(frame).replace(r"\{t\}", "(?P<t>[a-z]+)").replace(r"\{f\}", "(?P<f>[a-z]+)")
        m = re.fullmatch(pattern.replace(r"\{rel\}", "(?P<rel>[a-z ]+?)"), text)
        if m and m["rel"] in relation_of:
            return f"{colour_of[m['t']]} {relation_of[m['rel']]}_of {colour_of[m['f']]}"
    raise AssertionError(f"no rephrase frame matches {text!r}")


def test_default_env_is_unchanged_by_the_levels():
    # pinned from the env before the levels existed (same seeds -> same goals, words and scenes)
    env = ClevrRobotEnv()
    pinned = [
        ("cyan front_of red", "There is a red ball; is there a cyan rubber sphere in front of it?", 1.2427114248275757),
        ("purple right_of red", "Is the purple sphere right of the red sphere?", 0.6470893621444702),
        ("green behind_of purple", "Put the green ball behind the purple one.", 1.0509347915649414),
    ]
    for seed, (goal, text, xy_sum) in enumerate(pinned):
        obs, info = env.reset(seed=seed)
        assert (info["goal"], info["instruction"], info["level"]) == (goal, text, "train")
        assert obs.shape == (OBS_DIM,) == (24,) and float(obs[:STATE_DIM].sum()) == xy_sum
    assert env.step(0)[4]["level"] == "train"


def test_rephrase_uses_no_train_word_and_names_the_right_program():
    assert set(LEVELS) == {"train", "heldout", "rephrase", "compose", "hard"} and len(REPHRASE_TEMPLATES) >= 4
    demo_words = set().union(*(words(s) for s in level_instructions("all")))
    new_words = {w for syn in COLOR_SYNONYMS.values() for s in syn for w in words(s)}
    new_words |= {w for syn in RELATION_SYNONYMS.values() for s in syn for w in words(s)} - {"to", "the", "of"}
    assert new_words.isdisjoint(demo_words), new_words & demo_words  # never in any demonstrated wording
    texts = level_instructions("rephrase")
    assert len(texts) == len(set(texts)) == 80 * len(REPHRASE_TEMPLATES)
    used = set()
    for p in range(80):
        for k in range(len(REPHRASE_TEMPLATES)):
            text = rephrase_text(p, k)
            assert words(text).isdisjoint(TRAIN_COLOUR_RELATION_WORDS), text
            assert decode_rephrase(text) == PROGRAM_STRINGS[p], text
            used |= words(text)
    assert new_words <= used  # every synonym is used
    env = ClevrRobotEnv(goal_split="rephrase")
    for seed in range(30):
        _, info = env.reset(seed=seed)
        assert info["level"] == "rephrase" and decode_rephrase(info["instruction"]) == info["goal"]


def test_levels_are_deterministic_sized_and_disjoint():
    sizes = {
        "train": 64 * 7,
        "heldout": 16 * 3,
        "rephrase": 80 * 8,
        "compose": len(COMPOSE_GOALS) * len(COMPOSE_FRAMES),
    }
    listed = tuple(sizes)  # "hard" (1.8M instructions): tests/test_clevr_success_tests.py, on a sample
    lists = {lv: level_instructions(lv) for lv in listed}
    for lv in listed:
        assert lists[lv] == level_instructions(lv) and len(lists[lv]) == len(set(lists[lv])) == sizes[lv]
        for other in listed:
            if other != lv:
                assert set(lists[lv]).isdisjoint(lists[other]), (lv, other)
    # compose goals: pairs of train programs about two different pairs of spheres, each pair once
    assert len(COMPOSE_GOALS) == len(set(COMPOSE_GOALS)) == 1840 and len(COMPOSE_FRAMES) == 16
    for a, b in COMPOSE_GOALS:
        assert a < b and a in TRAIN_PROGRAMS and b in TRAIN_PROGRAMS
        assert {PROGRAMS[a][0], PROGRAMS[a][2]} != {PROGRAMS[b][0], PROGRAMS[b][2]}
    assert all(" and " in s for s in lists["compose"][::97])
    # independent of the per-process string hashing
    code = (
        "import hashlib; from envs.clevr_language import level_instructions as s; "
        "print(hashlib.sha1(repr(s('rephrase') + s('compose')).encode()).hexdigest())"
    )
    root = Path(__file__).resolve().parents[1]
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=root,
            env={"PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_compose_reset_has_both_relations_false_and_both_slots():
    env = ClevrRobotEnv(goal_split="compose", goal_slots=2)
    allowed = set(COMPOSE_GOALS)
    for seed in range(60):
        obs, info = env.reset(seed=seed)
        a, b = parse_goals(info["goal"])
        assert (a, b) in allowed and info["level"] == "compose" and not info["success"]
        assert not goal_holds(obs[:STATE_DIM], a) and not goal_holds(obs[:STATE_DIM], b)
        assert obs.shape == (38,) and env.observation_space.shape == (38,)
        np.testing.assert_array_equal(obs[STATE_DIM : STATE_DIM + GOAL_DIM], goal_encoding(a))
        np.testing.assert_array_equal(obs[STATE_DIM + GOAL_DIM :], goal_encoding(b))
        assert info["instruction"] in {compose_text((a, b), k) for k in range(len(COMPOSE_FRAMES))}
        for p in (a, b):  # both relations' colours are named
            assert COLORS[PROGRAMS[p][0]] in info["instruction"] and COLORS[PROGRAMS[p][2]] in info["instruction"]


def test_compose_success_iff_both_relations_hold():
    env = gym.make("CLEVR-Robot-v0", goal_split="compose", goal_slots=2)
    goal = "red left_of blue and green front_of cyan"
    env.reset(seed=0, options={"goal": goal, "template": 0})
    u = env.unwrapped
    purple = [-0.40, 0.50]
    push_purple_left = 3 * 8 + 2  # into the left wall: touches nothing else
    cases = [  # (red, blue, green, cyan), first holds, second holds
        (([0.0, 0.0], [-0.3, 0.0], [0.3, 0.1], [0.3, 0.45]), False, False),
        (([0.0, 0.0], [-0.3, 0.0], [0.3, 0.45], [0.3, 0.1]), False, True),
        (([-0.3, 0.0], [0.0, 0.0], [0.3, 0.1], [0.3, 0.45]), True, False),
        (([-0.3, 0.0], [0.0, 0.0], [0.3, 0.45], [0.3, 0.1]), True, True),
    ]
    for (red, blue, green, cyan), first, second in cases:
        u.set_positions([red, blue, green, purple, cyan])
        _, reward, terminated, truncated, info = env.step(push_purple_left)
        pos = u.positions()
        assert goal_holds(pos, "red left_of blue") == first and goal_holds(pos, "green front_of cyan") == second
        both = first and second
        assert (reward, terminated, info["success"], u.goal_holds(), goal_holds(pos, goal)) == (
            float(both),
            both,
            both,
            both,
            both,
        )
        assert info["goal"] == goal and info["level"] == "compose" and not truncated


def test_goal_slots_two_layout_for_single_goals():
    env = ClevrRobotEnv(goal_split="train+rephrase", goal_slots=2)
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert obs.shape == (38,) and obs.dtype == np.float32
        np.testing.assert_array_equal(obs[STATE_DIM : STATE_DIM + GOAL_DIM], goal_encoding(info["goal"]))
        assert not obs[STATE_DIM + GOAL_DIM :].any()  # second slot zeros
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make("CLEVR-Robot-v0", goal_split=MIX, goal_slots=2).unwrapped)
    assert ClevrRobotEnv(goal_split="train+rephrase").observation_space.shape == (24,)


def test_goal_slots_default_follows_the_levels():
    """goal_slots=None (the default): two slots iff 'compose' is among the levels of goal_split (three with 'hard',
    tests/test_clevr_success_tests.py); 1 or 2 as asked."""
    for split, slots, size in (
        ("train", None, 24),
        ("train+rephrase+heldout", None, 24),
        ("compose", None, 38),
        ("train+compose", None, 38),
        (MIX, None, 38),
        ("train", 2, 38),
        ("train", 1, 24),
    ):
        env = ClevrRobotEnv(goal_split=split, goal_slots=slots)
        assert env.goal_slots == (size - STATE_DIM) // GOAL_DIM
        assert env.observation_space.shape == (size,) and env.reset(seed=0)[0].shape == (size,), (split, slots)
    made = gym.make("CLEVR-Robot-v0", goal_split="train+compose")
    assert made.observation_space.shape == (38,) and made.reset(seed=0)[0].shape == (38,)
    assert gym.make("CLEVR-Robot-v0").observation_space.shape == (OBS_DIM,) == (24,)


def test_mixture_draws_every_level_seeded():
    def sequence(seed, n=60):
        env = gym.make("CLEVR-Robot-v0", goal_split=MIX, goal_slots=2)
        out = [env.reset(seed=seed)]
        out += [env.reset() for _ in range(n - 1)]
        return [(o.tobytes(), i["level"], i["goal"], i["instruction"]) for o, i in out]

    a, b, c = sequence(3), sequence(3), sequence(4)
    assert a == b and a != c
    counts = {lv: sum(x[1] == lv for x in a) for lv in MIX.split("+")}
    assert all(n >= 6 for n in counts.values()), counts  # uniform over 4 levels: ~15 each
    texts = {lv: set(level_instructions(lv)) for lv in MIX.split("+")}
    for _, level, goal, text in a:
        assert text in texts[level] and (" and " in goal) == (level == "compose")


def test_level_reset_options():
    env = ClevrRobotEnv(goal_split=MIX, goal_slots=2)
    _, info = env.reset(seed=0, options={"level": "rephrase", "goal": "red left_of blue", "template": 0})
    assert info["instruction"] == rephrase_text("red left_of blue", 0) and info["level"] == "rephrase"
    _, info = env.reset(seed=0, options={"goal": ("red left_of blue", "green front_of cyan")})
    assert info["level"] == "compose" and info["goal"] == "red left_of blue and green front_of cyan"
    for seed in range(8):  # a one-relation goal in a mixture is worded by a one-relation level
        assert env.reset(seed=seed, options={"goal": "cyan behind_of red"})[1]["level"] != "compose"


def test_level_inputs_are_checked():
    with pytest.raises(
        ValueError, match=r"unknown level 'tran'.*\('train', 'heldout', 'rephrase', 'compose', 'hard'\)"
    ):
        ClevrRobotEnv(goal_split="train+tran")
    with pytest.raises(ValueError, match="unknown level 'all'"):
        ClevrRobotEnv(goal_split="train+all")
    with pytest.raises(ValueError, match="names a level twice"):
        ClevrRobotEnv(goal_split="train+rephrase+train")
    with pytest.raises(ValueError, match="unknown goal_split 'Rephrase'.*'rephrase', 'compose'"):
        ClevrRobotEnv(goal_split="Rephrase")
    for split in ("compose", "train+compose"):
        with pytest.raises(ValueError, match="pass goal_slots=2"):
            ClevrRobotEnv(goal_split=split, goal_slots=1)
    with pytest.raises(ValueError, match="pass goal_slots=2"):
        gym.make("CLEVR-Robot-v0", goal_split="compose", goal_slots=1)
    with pytest.raises(ValueError, match="goal_slots must be 1, 2 or 3"):
        ClevrRobotEnv(goal_slots=4)
    with pytest.raises(ValueError, match="goal_slots must be 1, 2 or 3"):
        ClevrRobotEnv(goal_slots=True)
    env = ClevrRobotEnv()
    with pytest.raises(ValueError, match="needs an env made with goal_slots=2"):
        env.reset(options={"level": "compose"})
    with pytest.raises(ValueError, match="needs an env made with goal_slots=2"):
        env.reset(options={"goal": "red left_of blue and green front_of cyan"})
    with pytest.raises(ValueError, match="unknown level 'easy'"):
        env.reset(options={"level": "easy"})
    with pytest.raises(ValueError, match=r"template of level 'rephrase' must be an integer in \[0, 8\)"):
        ClevrRobotEnv(goal_split="rephrase").reset(options={"template": 8})
    with pytest.raises(ValueError, match="same two spheres"):
        parse_goals("red left_of blue and blue left_of red")
    with pytest.raises(ValueError, match="one-relation level"):
        ClevrRobotEnv(goal_split="compose", goal_slots=2).reset(options={"goal": "red left_of blue"})
    with pytest.raises(ValueError, match="does not fit goal"):
        ClevrRobotEnv(goal_slots=2).reset(options={"level": "compose", "goal": "red left_of blue"})


def test_expert_and_demos_on_the_new_levels():
    assert expert_rate("rephrase", 10, seed0=500) >= 0.9
    env = ClevrRobotEnv(goal_split="compose", goal_slots=2)
    wins = 0
    for ep in range(8):
        env.reset(seed=700 + ep)
        while True:
            *_, terminated, truncated, info = env.step(expert_action(env))
            if terminated or truncated:
                break
        wins += info["success"]
    assert wins >= 7
    d = collect_demos(6, goal_split="rephrase+compose", seed=2)
    n = len(d["actions"])
    assert (
        d["observations"].shape == (n, 38) and d["levels"].shape == (n,) and set(d["levels"]) == {"rephrase", "compose"}
    )
    assert d["episode_success"].all()
    assert "levels" not in collect_demos(2, seed=2)  # the default demo dict is unchanged


@pytest.mark.slow
@pytest.mark.parametrize("split", ["rephrase", "compose"])
def test_expert_success_rate_new_levels_200_episodes(split):
    assert level_success(split, 200, policy="expert")["success_rate"] >= 0.9
