"""envs/metaworld.py against metaworld 3.1.1: all 50 tasks, seeding, rewards, termination, episode stats, experts."""

import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from metaworld.policies import ENV_POLICY_MAP

from envs import metaworld as mw

SEED_TASKS = ["reach-v3", "door-open-v3"]


def run_expert(env, task, steps, stop_on_end=True):
    """Step the scripted expert; returns the list of (reward, terminated, truncated, info)."""
    policy = ENV_POLICY_MAP[task]()
    obs, _ = env.reset()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(steps):
            obs, reward, terminated, truncated, info = env.step(policy.get_action(obs))
            out.append((reward, terminated, truncated, info))
            if stop_on_end and (terminated or truncated):
                break
    return out


def rollout_obs(env, actions, resets=2, seed=None):
    """Observations of `resets` episodes of len(actions) steps each (starting each with reset; the first with
    reset(seed=seed))."""
    seen = []
    for k in range(resets):
        obs, _ = env.reset(seed=seed if k == 0 else None)
        seen.append(obs)
        for action in actions:
            obs, *_ = env.step(action)
            seen.append(obs)
    return np.array(seen)


def test_task_lists_and_instructions():
    assert len(mw.ALL_TASKS) == 50 and len(set(mw.ALL_TASKS)) == 50
    assert set(mw.ALL_TASKS) == set(ENV_POLICY_MAP) == set(mw.INSTRUCTIONS)
    assert all(t.endswith("-v3") for t in mw.ALL_TASKS)
    assert mw.MT10 == tuple(
        f"{t}-v3"
        for t in [
            "reach",
            "push",
            "pick-place",
            "door-open",
            "drawer-open",
            "drawer-close",
            "button-press-topdown",
            "peg-insert-side",
            "window-open",
            "window-close",
        ]
    )
    texts = [mw.INSTRUCTIONS[t] for t in mw.ALL_TASKS]
    assert all(isinstance(s, str) and len(s.split()) >= 2 for s in texts)
    assert len({s.strip().lower() for s in texts}) == 50, "instructions must be distinct"


def test_resolve_tasks():
    assert mw.resolve_tasks("reach-v3") == ["reach-v3"]
    assert mw.resolve_tasks("MT10") == list(mw.MT10)
    assert mw.resolve_tasks("mt50") == list(mw.ALL_TASKS)
    assert mw.resolve_tasks(" push-v3, reach-v3 ,push-v3") == ["push-v3", "reach-v3"]
    mixed = mw.resolve_tasks("sweep-v3,MT10")
    assert mixed[:2] == ["sweep-v3", "reach-v3"] and len(mixed) == 11
    assert mw.resolve_tasks(["door-open-v3", "reach-v3"]) == ["door-open-v3", "reach-v3"]
    for bad, suggestion in [
        ("reech-v3", "reach-v3"),
        ("reach-v2", "reach-v3"),
        ("pick_place", "pick-place-v3"),
        ("MT11", "MT10"),
        ("reach-v3,drawer-opn-v3", "drawer-open-v3"),
    ]:
        with pytest.raises(ValueError) as err:
            mw.resolve_tasks(bad)
        msg = str(err.value)
        assert f"Did you mean '{suggestion}'?" in msg
        assert "window-close-v3" in msg and "MT10" in msg  # lists the valid names
    with pytest.raises(ValueError, match="No Meta-World task"):
        mw.resolve_tasks(" , ")
    with pytest.raises(ValueError, match="Unknown Meta-World task 'nonsense'"):
        mw.make_env("nonsense", 0)
    with pytest.raises(ValueError, match="one task"):
        mw.make_env("MT10", 0)
    with pytest.raises(ValueError, match="reward_type"):
        mw.make_env("reach-v3", 0, reward_type="shaped")
    with pytest.raises(ValueError, match="max_episode_steps"):
        mw.make_env("reach-v3", 0, max_episode_steps=0)


@pytest.mark.parametrize(
    "tasks", [pytest.param(mw.MT10, id="MT10"), pytest.param(mw.ALL_TASKS, id="all-50", marks=pytest.mark.slow)]
)
def test_tasks_construct_and_step(tasks):
    """MT10 in the fast suite; all 50 tasks (~1 s each: Meta-World draws 50 goals per task) with -m slow."""
    rng = np.random.default_rng(0)
    space = None
    for task in tasks:
        env = mw.make_env(task, seed=0)
        assert env.observation_space.shape == (39,) and env.action_space.shape == (4,), task
        space = space or env.observation_space
        assert env.observation_space == space, "one observation space for all tasks (multi-task vector envs)"
        assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
        obs, info = env.reset()
        assert obs.shape == (39,) and obs.dtype == np.float64, task
        assert info["success"] is False and info["instruction"] == mw.INSTRUCTIONS[task] and info["task"] == task
        # Meta-World's own observation_space claims the goal is always 0; ours contains the observed goal
        assert np.any(obs[-3:] != 0) and env.observation_space.contains(obs), task
        for _ in range(3):
            obs, reward, terminated, truncated, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            assert obs.shape == (39,) and env.observation_space.contains(obs), task
            assert isinstance(reward, float) and 0.0 <= reward <= 10.0, (task, reward)
            assert not terminated and not truncated
            assert isinstance(info["success"], bool) and info["instruction"] == mw.INSTRUCTIONS[task]
            assert info["task"] == task
        env.close()


def count_wrappers(env, cls):
    n = 0
    while isinstance(env, gym.Wrapper):
        n += isinstance(env, cls)
        env = env.env
    return n


@pytest.mark.parametrize("task", SEED_TASKS)
def test_seeding(task):
    actions = np.random.default_rng(1).uniform(-1, 1, size=(15, 4)).astype(np.float32)
    a, b, c = mw.make_env(task, seed=7), mw.make_env(task, seed=7), mw.make_env(task, seed=8)
    obs_a, obs_b, obs_c = rollout_obs(a, actions, 3), rollout_obs(b, actions, 3), rollout_obs(c, actions, 3)
    np.testing.assert_array_equal(obs_a, obs_b)
    assert not np.allclose(obs_a, obs_c)
    goals = obs_a[:: len(actions) + 1, -3:]  # one goal per reset
    assert len({tuple(g) for g in goals}) == 3, "a new goal at every reset"
    # reset(seed=) re-seeds as make_env(seed=) does (Meta-World itself ignores it): envs built with different seeds
    # give the same episodes after reset(seed=0), those of an env built with seed 0
    np.testing.assert_array_equal(rollout_obs(a, actions, 1, seed=0), rollout_obs(c, actions, 1, seed=0))
    np.testing.assert_array_equal(
        rollout_obs(a, actions, 3, seed=0), rollout_obs(mw.make_env(task, seed=0), actions, 3)
    )


def test_reset_seed_repeats_goal_and_episode():
    """reset(seed=s) twice in one env: the same goal, the same first observation, the same next episodes (reset
    without a seed); another seed another goal. And reset(seed=) with the seed the env was built with changes
    nothing: the PPO scripts build env i with seed + i, then call envs.reset(seed=seed), which passes seed + i."""
    actions = np.random.default_rng(3).uniform(-1, 1, size=(5, 4)).astype(np.float32)
    env = mw.make_env("reach-v3", seed=None)
    first = rollout_obs(env, actions, 3, seed=123)
    rollout_obs(env, actions, 2)  # moves the env's RNG on
    np.testing.assert_array_equal(rollout_obs(env, actions, 3, seed=123), first)
    other = env.reset(seed=456)[0]
    assert not np.array_equal(other[-3:], first[0, -3:]), "another seed, another goal"
    seeded, plain = mw.make_env("reach-v3", seed=5), mw.make_env("reach-v3", seed=5)
    np.testing.assert_array_equal(rollout_obs(seeded, actions, 3, seed=5), rollout_obs(plain, actions, 3))


# make_env("reach-v3", seed=1) then reset() twice, recorded before reset(seed=) was honoured (issue 28): making
# reset(seed=) work must not change the episodes of an env seeded through make_env(seed=) and reset without a seed.
REACH_SEED1_HAND = [0.004584200424389321, 0.6013881136259894, 0.19514345491770432, 1.0]  # hand xyz, gripper
REACH_SEED1_QUAT = [-0.00010047584420498049, 0.00016430406140618956, -9.370336688335146e-08, 0.9999999814543855]
REACH_SEED1_PUCK_GOAL = [  # (object xyz, goal xyz) of the first and second episode
    ([0.00317140339370596, 0.6477140987049782, 0.02], [0.024361246348083093, 0.8544010118813938, 0.21353433674268607]),
    ([0.0599230523472056, 0.6034571219871634, 0.02], [0.04634572014790539, 0.8259698393298354, 0.11426732470553667]),
]


def test_make_env_seed_gives_the_recorded_episodes():
    env = mw.make_env("reach-v3", seed=1)
    for puck, goal in REACH_SEED1_PUCK_GOAL:
        obs, _ = env.reset()
        current = REACH_SEED1_HAND + puck + REACH_SEED1_QUAT + [0.0] * 7
        np.testing.assert_array_equal(obs, np.array(current + current + goal))


def test_sparse_reward_equals_success():
    env = mw.make_env("reach-v3", seed=3, reward_type="sparse")
    steps = run_expert(env, "reach-v3", 500)
    rewards = np.array([s[0] for s in steps])
    success = np.array([s[3]["success"] for s in steps], dtype=float)
    assert success.sum() > 10, "the expert reaches the goal"
    np.testing.assert_array_equal(rewards, success)
    final = steps[-1][3]
    assert steps[-1][2] and final["episode"]["l"] == 500
    assert final["episode"]["r"] == pytest.approx(rewards.sum()) and final["episode"]["success"] is True
    dense = run_expert(mw.make_env("reach-v3", seed=3), "reach-v3", 100)
    assert all(0 < s[0] <= 10 for s in dense) and len({s[0] for s in dense}) > 50


def test_terminate_on_success():
    env = mw.make_env("reach-v3", seed=4, terminate_on_success=True)
    for _ in range(2):  # the second episode checks that reset clears the success flags
        steps = run_expert(env, "reach-v3", 500)
        *before, last = steps
        assert last[1] is True and last[3]["success"] is True and len(steps) < 500
        assert not any(s[1] or s[3]["success"] for s in before)
        assert last[3]["episode"]["l"] == len(steps) and last[3]["episode"]["success"] is True
    env = mw.make_env("reach-v3", seed=4, terminate_on_success=False)
    steps = run_expert(env, "reach-v3", 500)
    first = next(i for i, s in enumerate(steps) if s[3]["success"])
    assert first < 499 and not any(s[1] for s in steps) and len(steps) == 500


def away_from_goal(obs):
    """Full-speed hand motion away from the goal (reach-v3: hand xyz = obs[:3], goal xyz = obs[-3:])."""
    return np.append(-np.sign(obs[-3:] - obs[:3]), 0.0).astype(np.float32)


def test_episode_success_means_success_at_any_step():
    """info["episode"]["success"] is success at ANY step, not the last step's: the expert reaches the goal,
    then the hand is driven away until truncation (last step unsuccessful, episode successful). The same env's
    next episode never gets near the goal: its episode success is False (reset cleared the flag)."""
    env = mw.make_env("reach-v3", seed=0, max_episode_steps=150)
    policy = mw.expert_policy("reach-v3")
    obs, _ = env.reset()
    successes, reached = [], False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(150):
            action = away_from_goal(obs) if reached else policy.get_action(obs)
            obs, _, terminated, truncated, info = env.step(action)
            successes.append(info["success"])
            reached |= info["success"]
            assert ("episode" in info) == (t == 149) and not terminated
            if truncated:
                break
    assert truncated and len(successes) == 150
    first = successes.index(True)  # the expert reached the goal (fails with ValueError otherwise)
    assert first < 140 and not any(successes[first + 5 :]), "driven away from the goal after reaching it"
    assert info["success"] is False, "the last step is not successful"
    assert info["episode"]["success"] is True, "success at an earlier step counts for the episode"
    assert np.linalg.norm(obs[-3:] - obs[:3]) > 0.2  # far from the goal at the end

    obs, info = env.reset()
    assert info["success"] is False
    for t in range(150):
        obs, _, terminated, truncated, info = env.step(away_from_goal(obs))
        assert info["success"] is False and not terminated
        if truncated:
            break
    assert t == 149 and info["episode"]["l"] == 150
    assert info["episode"]["success"] is False, "an episode that never succeeds is not successful"


def test_full_episode_has_one_episode_statistics():
    env = mw.make_env("pick-place-v3", seed=0)
    assert count_wrappers(env, gym.wrappers.RecordEpisodeStatistics) == 1
    rng = np.random.default_rng(0)
    for episode in range(2):
        env.reset()
        for t in range(500):
            _, _, terminated, truncated, info = env.step(rng.uniform(-1, 1, 4))
            assert not terminated
            assert truncated == (t == 499) and ("episode" in info) == (t == 499)
        assert info["episode"]["l"] == 500 and "r" in info["episode"] and "success" in info["episode"]


def test_episode_length_option():
    rng = np.random.default_rng(0)
    for n in (20, 600):  # shorter and longer than Meta-World's own 500
        env = mw.make_env("reach-v3", seed=0, max_episode_steps=n)
        env.reset()
        for t in range(n):
            _, _, _, truncated, info = env.step(rng.uniform(-1, 1, 4))
            assert truncated == (t == n - 1)
        assert info["episode"]["l"] == n


def test_vector_env():
    tasks = ["reach-v3", "push-v3"]
    envs = mw.make_vector_env(tasks, num_envs=3, seed=10, max_episode_steps=5)
    assert envs.single_observation_space.shape == (39,) and envs.single_action_space.shape == (4,)
    assert [e.task for e in envs.envs] == ["reach-v3", "push-v3", "reach-v3"]
    obs, infos = envs.reset(seed=10)
    assert obs.shape == (3, 39) and list(infos["task"]) == ["reach-v3", "push-v3", "reach-v3"]
    assert list(infos["instruction"]) == [mw.INSTRUCTIONS[t] for t in infos["task"]]
    assert not np.allclose(obs[0], obs[2]), "per-env seeds: same task, different goals"
    same = mw.make_env("push-v3", seed=11).reset()[0]  # env 1 = push-v3 with seed 10 + 1
    np.testing.assert_array_equal(obs[1], same)
    for t in range(5):
        obs, reward, _terminations, truncations, infos = envs.step(envs.action_space.sample())
    assert truncations.all() and "final_info" in infos and "final_obs" in infos  # same-step autoreset
    assert infos["final_info"]["_episode"].all() and list(infos["final_info"]["episode"]["l"]) == [5, 5, 5]
    assert infos["final_info"]["episode"]["success"].dtype == bool
    assert not infos["success"].any()  # the reset info of the next episodes
    envs.close()
    # the thunk lets a script add its own wrappers
    thunk = mw.env_thunk("reach-v3", 0, reward_type="sparse")
    env = gym.wrappers.ClipAction(thunk())
    env.reset()
    _, reward, _, _, info = env.step(np.full(4, 5.0, dtype=np.float32))
    assert reward == float(info["success"]) and info["task"] == "reach-v3"


def test_collect_demos_format_and_determinism():
    demos = mw.collect_demos("reach-v3,drawer-close-v3", 3, noise_std=0.1, seed=5)
    n = len(demos["observations"])
    assert demos["observations"].shape == (n, 39) and demos["observations"].dtype == np.float32
    assert demos["actions"].shape == (n, 4) and demos["actions"].dtype == np.float32
    assert np.all(np.abs(demos["actions"]) <= 1.0)
    assert demos["instructions"].shape == (n,) and demos["instructions"].dtype.kind == "U"
    assert demos["episode_ids"].dtype == np.int64 and demos["episode_success"].dtype == bool
    assert demos["env_id"] == "reach-v3,drawer-close-v3" and demos["state_dim"] == 39
    np.testing.assert_array_equal(np.unique(demos["episode_ids"]), np.arange(6))
    assert np.all(np.diff(demos["episode_ids"]) >= 0) and len(demos["episode_success"]) == 6
    first = demos["episode_ids"] < 3
    assert set(demos["instructions"][first]) == {mw.INSTRUCTIONS["reach-v3"]}
    assert set(demos["instructions"][~first]) == {mw.INSTRUCTIONS["drawer-close-v3"]}
    assert demos["episode_success"].mean() >= 0.8, "the noisy expert still succeeds"
    assert n < 6 * 200, "episodes stop 10 steps after the first success"
    # the same seed gives the same demos: the first task (env seed = seed + 0) alone reproduces its part
    again = mw.collect_demos(["reach-v3"], 3, noise_std=0.1, seed=5)
    assert again["env_id"] == "reach-v3"
    for key in ("observations", "actions", "instructions", "episode_ids"):
        np.testing.assert_array_equal(demos[key][first], again[key])
    np.testing.assert_array_equal(demos["episode_success"][:3], again["episode_success"])
    full = mw.collect_demos("reach-v3", 1, seed=5, max_episode_steps=120, steps_after_success=None)
    assert len(full["observations"]) == 120 and full["episode_success"].all()


def test_demo_observations_are_the_envs():
    """The door experts modify the observation they are given; the demos record the env's (issue 28)."""
    for task in ("door-open-v3", "door-close-v3"):
        demos = mw.collect_demos(task, 1, seed=2, max_episode_steps=5)
        first = mw.make_env(task, seed=2).reset()[0]
        np.testing.assert_array_equal(demos["observations"][0], first.astype(np.float32), err_msg=task)


def test_expert_succeeds_quick():
    tasks = ["push-v3", "button-press-topdown-v3", "window-close-v3"]
    demos = mw.collect_demos(tasks, 3, seed=1, steps_after_success=0)
    for k, task in enumerate(tasks):
        assert demos["episode_success"][3 * k : 3 * k + 3].sum() >= 2, task


def test_module_does_not_import_torch():
    code = "import sys, envs.metaworld; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
@pytest.mark.parametrize("task", mw.MT10)
def test_expert_succeeds_mt10(task):
    demos = mw.collect_demos(task, 10, seed=0, steps_after_success=0)
    assert demos["episode_success"].mean() >= 0.8, f"{task}: {demos['episode_success']}"


@pytest.mark.slow
def test_seeding_all_50_tasks():
    actions = np.random.default_rng(2).uniform(-1, 1, size=(5, 4)).astype(np.float32)
    for task in mw.ALL_TASKS:
        a, b, c = (mw.make_env(task, seed=s) for s in (3, 3, 4))
        obs_a, obs_c = rollout_obs(a, actions), rollout_obs(c, actions)
        np.testing.assert_array_equal(obs_a, rollout_obs(b, actions), err_msg=task)
        assert not np.allclose(obs_a, obs_c), task


def test_instruction_levels():
    """The levels: 10 demonstrated tasks, each reworded three ways (distinct from every task's own instruction), and
    8 unseen tasks; "task:rephrase" is the same task (the same episodes under a seed) with one rewording per episode."""
    assert len(mw.DEMONSTRATED) == 10 and len(mw.UNSEEN) == 8 and not set(mw.DEMONSTRATED) & set(mw.UNSEEN)
    assert set(mw.REPHRASED) == set(mw.DEMONSTRATED) and set(mw.UNSEEN) <= set(mw.INSTRUCTIONS)
    own = {s.lower() for s in mw.INSTRUCTIONS.values()}
    reworded = [s for phrasings in mw.REPHRASED.values() for s in phrasings]
    assert len(set(reworded)) == 30 and not own & {s.lower() for s in reworded}
    assert [mw.level_of(t) for t in ("push-v3", "push-v3:rephrase", "push-wall-v3")] == [
        "demonstrated",
        "rephrase",
        "unseen",
    ]
    assert mw.resolve_tasks("reach-v3:rephrase,push-wall-v3") == ["reach-v3:rephrase", "push-wall-v3"]
    with pytest.raises(ValueError, match="task:rephrase"):
        mw.resolve_tasks("sweep-v3:rephrase")  # not a demonstrated task
    plain, reworded_env = mw.make_env("push-v3", seed=3), mw.make_env("push-v3:rephrase", seed=3)
    seen = []
    for episode in range(12):
        obs, info = plain.reset()
        obs_r, info_r = reworded_env.reset()
        np.testing.assert_array_equal(obs, obs_r)  # the same goals and episodes
        assert info["instruction"] == mw.INSTRUCTIONS["push-v3"] and info_r["task"] == "push-v3:rephrase"
        seen.append(info_r["instruction"])
        _, _, _, _, step_info = reworded_env.step(np.zeros(4, dtype=np.float32))
        assert step_info["instruction"] == info_r["instruction"]
    assert set(seen) == set(mw.REPHRASED["push-v3"])  # all three, drawn per episode
    again = mw.make_env("push-v3:rephrase", seed=3)
    assert [again.reset()[1]["instruction"] for _ in range(12)] == seen  # drawn from the seed
    assert again.reset(seed=3)[1]["instruction"] == seen[0]  # reset(seed=) restarts the draws
    demos = mw.collect_demos("push-v3:rephrase", 2, seed=3, max_episode_steps=5)
    assert set(demos["instructions"]) <= set(mw.REPHRASED["push-v3"])
    assert mw.expert_policy("push-v3:rephrase").__class__ is mw.expert_policy("push-v3").__class__
