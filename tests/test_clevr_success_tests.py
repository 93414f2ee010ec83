"""Tests of CLEVR-Robot's KALM success test (`success_test="kalm"`) and its "hard" level (three relations at once):
the sector / distance geometry pinned on constructed scenes, goal sampling under the active test, the hard goals,
their words and slots, and the scripted expert on both."""

import math

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers CLEVR-Robot-v0)
from envs.clevr_expert import expert_action
from envs.clevr_language import (
    COMPOSE_GOALS,
    GOAL_DIM,
    HARD_FRAMES,
    HARD_GOALS,
    PROGRAMS,
    RELATIONS,
    TRAIN_PROGRAMS,
    goal_encoding,
    goal_pool,
    hard_text,
    instruction_text,
    level_text,
    parse_goals,
)
from envs.clevr_robot import (
    RELATION_VECTORS,
    STATE_DIM,
    ClevrRobotEnv,
    goal_holds,
    relation_holds,
)

# the three spheres not in the relation sit in corners, out of the way
CORNERS = np.array([[-0.45, -0.15], [0.45, -0.15], [-0.45, 0.55], [0.45, 0.55]])


def scene(target: int, reference: int, ref_xy, target_xy) -> np.ndarray:
    xy = np.empty((5, 2))
    others = iter(CORNERS)
    for i in range(5):
        xy[i] = ref_xy if i == reference else target_xy if i == target else next(others)
    return xy


def rotate(v, degrees):
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


# (angle off the relation's direction in degrees, distance) -> holds under "kalm"; the original test holds on all
GEOMETRY = [(44, 0.3, True), (-44, 0.3, True), (46, 0.3, False), (-46, 0.3, False), (0, 0.38, True), (0, 0.40, False)]


@pytest.mark.parametrize("r", range(4))
def test_kalm_geometry_on_constructed_scenes(r):
    """Red R of blue with red 44 / 46 degrees off R's direction at 0.3, or on the axis at 0.38 / 0.40: inside /
    outside KALM's test, on the env (set_positions, set_goal, goal_holds, programs_holding, a step) and on the
    module's functions; the original test holds on every one of these scenes."""
    d = RELATION_VECTORS[r]
    ref = np.array([0.0, 0.2]) - 0.05 * d  # room for 0.4 along d inside the walls
    goal = f"red {RELATIONS[r]}_of blue"
    p = parse_goals(goal)[0]
    kalm, orig = ClevrRobotEnv(success_test="kalm"), ClevrRobotEnv()
    for env in (kalm, orig):
        env.reset(seed=0, options={"goal": goal})
    for degrees, dist, inside in GEOMETRY:
        xy = scene(0, 1, ref, ref + dist * rotate(d, degrees))
        for env, expected in ((kalm, inside), (orig, True)):
            env.set_positions(xy)
            env.set_goal(goal)
            case = (env.success_test, RELATIONS[r], degrees, dist)
            assert env.goal_holds() == expected, case
            assert env.programs_holding()[p] == expected, case
            assert goal_holds(xy, goal, env.success_test) == expected, case
            assert relation_holds(xy[1], xy[0], RELATIONS[r], env.success_test) == expected, case
            purple_into_wall = 3 * 8 + (2 if xy[3, 0] < 0 else 0)  # pushes purple along its wall: touches nothing
            _, reward, terminated, _, info = env.step(purple_into_wall)
            assert (info["success"], terminated, reward) == (expected, expected, float(expected)), case
        assert goal_holds(xy, goal) is True  # the default test is the original one


def test_kalm_sector_edges_and_distance_boundary():
    """Exact diagonals: the sector is [phi - 45, phi + 45) counter-clockwise from +x (x right, y front), so the
    diagonal at +45 degrees of +x belongs to 'front' (+y) and not to 'right', and so on round; the distance test is
    KALM's |B - A| < 0.39 + 0.001."""
    a = np.zeros(2)
    owner = {(1, 1): "front", (-1, 1): "left", (-1, -1): "behind", (1, -1): "right"}
    for (sx, sy), rel in owner.items():
        b = np.array([0.25 * sx, 0.25 * sy])  # exact: |a| == |b| in floating point
        assert [relation_holds(a, b, r, "kalm") for r in RELATIONS] == [r == rel for r in RELATIONS], (sx, sy)
        assert sum(relation_holds(a, b, r) for r in RELATIONS) == 2  # the original's sectors overlap (cos 0.707)
    for r, d in zip(RELATIONS, RELATION_VECTORS):
        assert relation_holds(a, 0.3905 * d, r, "kalm") and not relation_holds(a, 0.3915 * d, r, "kalm")
        assert not relation_holds(a, a, r, "kalm")  # no direction: no relation
    with pytest.raises(ValueError, match="unknown success_test 'KALM'"):
        relation_holds(a, d, "left", "KALM")
    with pytest.raises(ValueError, match="unknown success_test"):
        gym.make("CLEVR-Robot-v0", success_test="close")


def test_kalm_sectors_tile_the_plane_and_entry_points_agree():
    """Under 'kalm' exactly one relation holds for a pair closer than 0.391 (none farther); programs_holding agrees
    with goal_holds on random and crowded scenes."""
    rng = np.random.default_rng(0)
    for _ in range(2000):
        b = rng.uniform(-0.45, 0.45, size=2)
        n = sum(relation_holds(np.zeros(2), b, r, "kalm") for r in RELATIONS)
        assert n == (np.linalg.norm(b) < 0.391)
    env = ClevrRobotEnv(success_test="kalm")
    env.reset(seed=0)
    seen = np.zeros(len(PROGRAMS), dtype=int)
    for i in range(300):
        if i < 150:
            env.set_positions(env._sample_positions())
        else:  # crowded: many pairs near 0.39 and the sector edges
            env.set_positions(rng.uniform([-0.2, 0.0], [0.2, 0.4], size=(5, 2)), check=False)
        pos = env.positions()
        expected = np.array([goal_holds(pos, p, "kalm") for p in range(len(PROGRAMS))])
        np.testing.assert_array_equal(env.programs_holding(), expected)
        seen += expected
    assert seen.min() > 0


def test_kalm_reset_samples_goals_false_under_kalm_and_default_is_original():
    kalm, orig = ClevrRobotEnv(success_test="kalm"), ClevrRobotEnv()
    assert orig.success_test == "original" and gym.make("CLEVR-Robot-v0").unwrapped.success_test == "original"
    true_under_original = 0
    for seed in range(40):
        obs, info = kalm.reset(seed=seed)
        assert not goal_holds(obs[:STATE_DIM], info["goal"], "kalm") and not info["success"]
        true_under_original += goal_holds(obs[:STATE_DIM], info["goal"])
    assert true_under_original > 0  # the kalm env samples among its own false goals, not the original's
    env = ClevrRobotEnv(goal_split="compose", success_test="kalm")
    for seed in range(10):
        obs, info = env.reset(seed=seed)
        assert not any(goal_holds(obs[:STATE_DIM], p, "kalm") for p in parse_goals(info["goal"]))


def test_expert_solves_kalm_goals():
    for split, episodes, need in (("train", 8, 8), ("compose", 4, 4)):
        env = ClevrRobotEnv(goal_split=split, success_test="kalm")
        wins = 0
        for ep in range(episodes):
            env.reset(seed=300 + ep)
            while True:
                *_, terminated, truncated, info = env.step(expert_action(env))
                if terminated or truncated:
                    break
            wins += info["success"]
        assert wins >= need, split


# ------------------------------------------------------------------ the hard level
def test_hard_goals_are_train_triples_without_cycles_or_crowded_stars():
    assert len(HARD_GOALS) == len(set(HARD_GOALS)) == 28400 and len(HARD_FRAMES) == 64
    train = set(TRAIN_PROGRAMS)
    for g in HARD_GOALS[::7]:
        assert g[0] < g[1] < g[2] and set(g) <= train
        pairs = [frozenset((PROGRAMS[p][0], PROGRAMS[p][2])) for p in g]
        assert len(set(pairs)) == 3 and len(frozenset().union(*pairs)) >= 4  # 3 pairs of 3 spheres: a triangle
    assert parse_goals("red left_of blue and blue left_of green and green left_of red") not in set(HARD_GOALS)

    def triple(text):
        return tuple(sorted(parse_goals(text)))

    star_same_side = triple("green left_of red and purple left_of red and cyan left_of red")
    star_mixed = triple("green left_of red and purple left_of red and red left_of cyan")  # cyan on red's right
    star_target = triple("red left_of blue and red left_of green and red left_of purple")  # all on red's right
    assert star_mixed in set(HARD_GOALS) and star_same_side not in set(HARD_GOALS)
    assert star_target not in set(HARD_GOALS)
    assert all(set(g) <= train for g in (star_same_side, star_mixed, star_target))
    assert goal_pool("hard") == (HARD_GOALS, tuple(range(64)))


def test_hard_text_and_parse():
    g = parse_goals("red left_of blue and green front_of cyan and purple behind_of red")
    assert parse_goals(list(g)) == g and parse_goals(("red", "left", "blue")) == (parse_goals("red left_of blue")[0],)
    text = hard_text(g, 0)
    parts = [instruction_text(p, 3).rstrip(".") for p in g]
    assert text == f"{parts[0]}, {parts[1][0].lower() + parts[1][1:]} and {parts[2][0].lower() + parts[2][1:]}."
    assert level_text("hard", g, 5) == hard_text(g, 5)
    sample = {hard_text(h, k) for h in HARD_GOALS[::997] for k in range(0, 64, 9)}
    assert len(sample) == len(HARD_GOALS[::997]) * len(range(0, 64, 9))  # all distinct
    assert all(s.count(" and ") == 1 and s.count(", ") == 1 for s in sample)
    with pytest.raises(ValueError, match="same two spheres"):
        parse_goals("red left_of blue and green front_of cyan and blue right_of red")
    with pytest.raises(ValueError, match="three relations"):
        hard_text("red left_of blue and green front_of cyan", 0)
    with pytest.raises(ValueError, match=r"hard template must be an integer in \[0, 64\)"):
        hard_text(g, 64)


@pytest.mark.parametrize("success_test", ["original", "kalm"])
def test_hard_reset_slots_and_words(success_test):
    env = gym.make("CLEVR-Robot-v0", goal_split="hard", success_test=success_test)
    assert env.observation_space.shape == (STATE_DIM + 3 * GOAL_DIM,) == (52,)
    allowed = set(HARD_GOALS)
    for seed in range(12):
        obs, info = env.reset(seed=seed)
        g = parse_goals(info["goal"])
        assert g in allowed and info["level"] == "hard" and not info["success"] and obs.shape == (52,)
        assert not any(goal_holds(obs[:STATE_DIM], p, success_test) for p in g)
        for i, p in enumerate(g):
            np.testing.assert_array_equal(
                obs[STATE_DIM + i * GOAL_DIM : STATE_DIM + (i + 1) * GOAL_DIM], goal_encoding(p)
            )
        assert info["instruction"] in {hard_text(g, k) for k in range(64)}


def test_hard_success_iff_all_three_hold():
    env = ClevrRobotEnv(goal_split="hard")
    goal = "red left_of blue and blue left_of green and green behind_of purple"  # a path: cyan is free
    env.reset(seed=0, options={"goal": goal})
    cyan_into_wall = 4 * 8 + 2  # left, along the left wall
    base = {"red": [-0.40, 0.0], "blue": [-0.05, 0.0], "green": [0.3, 0.0], "purple": [0.3, 0.4], "cyan": [-0.45, 0.55]}
    cases = [({}, True), ({"purple": [0.3, -0.1], "green": [0.3, 0.3]}, False), ({"red": [-0.05, 0.45]}, False)]
    for moved, both in cases:
        xy = np.array([{**base, **moved}[c] for c in ("red", "blue", "green", "purple", "cyan")])
        env.set_positions(xy)
        assert env.goal_holds() == both
        _, reward, terminated, _, info = env.step(cyan_into_wall)
        assert (reward, terminated, info["success"], info["goal"], info["level"]) == (
            float(both),
            both,
            both,
            goal,
            "hard",
        )
    assert goal_holds(xy, goal.split(" and ")[1]) and not goal_holds(xy, goal)  # two of three hold: no success


def test_goal_slots_with_the_hard_level():
    for split, slots, size in (
        ("hard", None, 52),
        ("train+hard", None, 52),
        ("train+compose+hard", None, 52),
        ("train", 3, 52),
    ):
        env = ClevrRobotEnv(goal_split=split, goal_slots=slots)
        assert env.goal_slots == 3 and env.reset(seed=0)[0].shape == (size,), split
    env = ClevrRobotEnv(goal_split="train+compose+hard")
    obs, info = env.reset(seed=0, options={"level": "compose"})
    assert info["level"] == "compose" and not obs[STATE_DIM + 2 * GOAL_DIM :].any()  # third slot zeros
    obs, info = env.reset(seed=0, options={"goal": "red left_of blue"})
    assert info["level"] == "train" and not obs[STATE_DIM + GOAL_DIM :].any()
    levels = {env.reset(seed=s)[1]["level"] for s in range(30)}
    assert levels == {"train", "compose", "hard"}
    for split, slots in (("hard", 2), ("train+hard", 1)):
        with pytest.raises(ValueError, match="'hard' level .*pass goal_slots=3"):
            ClevrRobotEnv(goal_split=split, goal_slots=slots)
    with pytest.raises(ValueError, match="needs an env made with goal_slots=3"):
        ClevrRobotEnv(goal_split="compose").reset(options={"level": "hard"})
    with pytest.raises(ValueError, match="needs an env made with goal_slots=3"):
        ClevrRobotEnv(goal_split="compose").set_goal(HARD_GOALS[0])
    with pytest.raises(ValueError, match="does not fit goal"):
        ClevrRobotEnv(goal_split="hard").reset(options={"level": "hard", "goal": COMPOSE_GOALS[0]})


def test_expert_attempts_hard_goals():
    env = ClevrRobotEnv(goal_split="hard", success_test="kalm")
    wins = 0
    for ep in range(3):
        env.reset(seed=900 + ep)
        while True:
            *_, terminated, truncated, info = env.step(expert_action(env))
            if terminated or truncated:
                break
        wins += info["success"]
    assert wins >= 2
