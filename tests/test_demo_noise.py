"""The demonstrations' noise knob does what it says (issue 28), on both envs and through finetune_prior.py's flag.

CLEVR-Robot (envs.clevr_expert.collect_demos, noise = probability of a uniformly random action instead of the
expert's) and Meta-World (envs.metaworld.collect_demos, noise_std = std of Gaussian noise added to the expert's
action, then clipped to [-1, 1]). Each test replays the recorded episodes in a fresh env built as collect_demos
builds it, asks the noise-free expert what it would do at each recorded state, and compares with the recorded
(executed) actions: with noise 0 they are the expert's; with noise they differ by the documented amount. A
collector, or a finetune_prior.py --demo-noise, that ignored the setting fails here.
"""

import warnings

import numpy as np
import pytest

import finetune_prior as fp
from envs import metaworld as mw
from envs.clevr_expert import collect_demos as clevr_collect_demos
from envs.clevr_expert import expert_action
from envs.clevr_robot import NUM_ACTIONS, ClevrRobotEnv


# ------------------------------------------------------------------ replays
def clevr_expert_choices(demos, seed, goal_split="train", max_episode_steps=50):
    """The noise-free expert's action at each recorded state of CLEVR-Robot demos (collect_demos(seed=seed, ...))."""
    env = ClevrRobotEnv(max_episode_steps=max_episode_steps, goal_split=goal_split)
    choices = []
    for ep in np.unique(demos["episode_ids"]):
        obs, _ = env.reset(seed=seed if ep == 0 else None)  # as collect_demos: seeded once
        for i in np.flatnonzero(demos["episode_ids"] == ep):
            np.testing.assert_array_equal(obs.astype(np.float32), demos["observations"][i])  # the replay is in step
            choices.append(expert_action(env))  # the expert touches neither the env's RNG nor its physics
            obs, *_ = env.step(int(demos["actions"][i]))
    return np.array(choices)


def metaworld_expert_choices(demos, task, seed, max_episode_steps):
    """The noise-free expert's action (clipped) at each recorded state of single-task Meta-World demos
    (collect_demos(task, ..., seed=seed): the task's env has seed `seed`)."""
    env = mw.make_env(task, seed, max_episode_steps=max_episode_steps)
    policy = mw.expert_policy(task)
    choices = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the experts' "Constant(s) may be too high"
        for ep in np.unique(demos["episode_ids"]):
            obs, _ = env.reset()
            for i in np.flatnonzero(demos["episode_ids"] == ep):
                np.testing.assert_array_equal(obs.astype(np.float32), demos["observations"][i])
                choices.append(np.clip(policy.get_action(obs), -1.0, 1.0).astype(np.float32))
                obs, *_ = env.step(demos["actions"][i])
    return np.array(choices)


def binomial_close(hits, n, p, sds=4.0):
    """hits out of n is within `sds` standard deviations of a Binomial(n, p)'s mean."""
    return abs(hits - n * p) <= sds * np.sqrt(n * p * (1 - p)) + 1e-9


def gaussian_residual(actions, expert, std, inside=None):
    """Mean and std of (recorded - expert) over the entries where clipping is improbable (|expert| <= inside)."""
    inside = 1.0 - 4.0 * std if inside is None else inside
    keep = np.abs(expert) <= inside
    residual = (actions.astype(np.float64) - expert)[keep]
    assert residual.size >= 150, f"only {residual.size} unclipped entries to measure the noise on"
    return residual.mean(), residual.std()


# ------------------------------------------------------------------ CLEVR-Robot: probability of a random action
def test_clevr_noise_free_demos_are_the_expert():
    demos = clevr_collect_demos(8, noise=0.0, seed=2)
    np.testing.assert_array_equal(demos["actions"], clevr_expert_choices(demos, seed=2))


@pytest.mark.parametrize("noise", [0.3, 1.0])
def test_clevr_noise_is_the_probability_of_a_random_action(noise):
    """A random action differs from the expert's with probability 39/40; noise 1: uniform over the 40 actions."""
    demos = clevr_collect_demos(40 if noise < 1 else 10, noise=noise, seed=4, max_episode_steps=20)
    expert = clevr_expert_choices(demos, seed=4, max_episode_steps=20)
    n, differ = len(expert), int((demos["actions"] != expert).sum())
    assert n >= 100
    assert binomial_close(differ, n, noise * (NUM_ACTIONS - 1) / NUM_ACTIONS), (differ, n)
    if noise == 1.0:
        counts = np.bincount(demos["actions"], minlength=NUM_ACTIONS)
        assert (counts > 0).sum() >= 30 and counts.max() <= 5 * n / NUM_ACTIONS, counts


def test_clevr_expert_labels_keep_the_noisy_trajectory():
    """labels="expert": the states the noisy expert visits, each labelled with the noise-free expert's action."""
    executed = clevr_collect_demos(20, noise=0.3, seed=5, max_episode_steps=20)
    labelled = clevr_collect_demos(20, noise=0.3, seed=5, max_episode_steps=20, labels="expert")
    np.testing.assert_array_equal(labelled["observations"], executed["observations"])
    expert = clevr_expert_choices(executed, seed=5, max_episode_steps=20)  # replayed with the executed actions
    np.testing.assert_array_equal(labelled["actions"], expert)
    assert (executed["actions"] != expert).mean() > 0.15  # the noise was there


# ------------------------------------------------------------------ Meta-World: std of Gaussian action noise
def test_metaworld_noise_free_demos_are_the_expert():
    demos = mw.collect_demos("reach-v3", 2, noise_std=0.0, seed=3, max_episode_steps=100)
    np.testing.assert_array_equal(demos["actions"], metaworld_expert_choices(demos, "reach-v3", 3, 100))


@pytest.mark.parametrize("task", ["reach-v3", "door-open-v3"])
def test_metaworld_noise_std_is_the_std_of_the_action_noise(task):
    """Recorded = clip(expert + N(0, noise_std)): where clipping is improbable, the residual has mean 0 and std
    noise_std; every recorded action is inside [-1, 1] and (almost) none equals the expert's."""
    std = 0.1
    demos = mw.collect_demos(task, 3, noise_std=std, seed=6, max_episode_steps=120)
    expert = metaworld_expert_choices(demos, task, 6, 120)
    assert np.all(np.abs(demos["actions"]) <= 1.0)
    mean, sd = gaussian_residual(demos["actions"], expert, std)
    assert abs(mean) < 0.02 and 0.85 * std < sd < 1.15 * std, (mean, sd)
    unclipped = np.abs(demos["actions"]) < 1.0
    assert (demos["actions"] == expert)[unclipped].mean() < 0.01
    labelled = mw.collect_demos(task, 3, noise_std=std, seed=6, max_episode_steps=120, labels="expert")
    np.testing.assert_array_equal(labelled["observations"], demos["observations"])
    np.testing.assert_array_equal(labelled["actions"], expert)  # the same states, labelled by the noise-free expert


# ------------------------------------------------------------------ finetune_prior.py --demo-noise reaches both
def stage1_demos(tmp_path, **kwargs):
    """The demo file finetune_prior's data step (obtain_demos) writes for Args(**kwargs), as a dict."""
    path = str(tmp_path / "demos.npz")
    args = fp.Args(llm="tiny-random", save_demos_path=path, **kwargs)
    env = fp.resolve_env(args.env_id)
    fp.obtain_demos(args, env, rank=0)
    return fp.load_demos(path, env)


def test_finetune_prior_demo_noise_reaches_clevr_robot(tmp_path):
    kw = {"env_id": "CLEVR-Robot-v0", "demo_labels": "executed"}
    demos = stage1_demos(tmp_path, demo_noise=1.0, num_episodes=10, max_episode_steps=8, **kw)
    expert = clevr_expert_choices(demos, seed=1, max_episode_steps=8)  # Args' default seed
    n, differ = len(expert), int((demos["actions"] != expert).sum())
    assert binomial_close(differ, n, (NUM_ACTIONS - 1) / NUM_ACTIONS), (differ, n)
    quiet = stage1_demos(tmp_path, demo_noise=0.0, num_episodes=4, **kw)
    np.testing.assert_array_equal(quiet["actions"], clevr_expert_choices(quiet, seed=1))
    labelled = stage1_demos(tmp_path, env_id="CLEVR-Robot-v0", num_episodes=10, max_episode_steps=8)  # the defaults
    executed = clevr_collect_demos(10, noise=0.3, seed=1, max_episode_steps=8)
    np.testing.assert_array_equal(labelled["actions"], clevr_expert_choices(executed, seed=1, max_episode_steps=8))


def test_finetune_prior_demo_noise_reaches_metaworld(tmp_path):
    std = 0.2
    demos = stage1_demos(
        tmp_path, env_id="reach-v3", demo_noise=std, demo_labels="executed", num_episodes=3, max_episode_steps=100
    )
    expert = metaworld_expert_choices(demos, "reach-v3", 1, 100)
    mean, sd = gaussian_residual(demos["actions"], expert, std)  # reach's gripper effort (always 0) at least
    assert abs(mean) < 0.04 and 0.85 * std < sd < 1.15 * std, (mean, sd)
    quiet = stage1_demos(tmp_path, env_id="reach-v3", demo_noise=0.0, num_episodes=1, max_episode_steps=100)
    np.testing.assert_array_equal(quiet["actions"], metaworld_expert_choices(quiet, "reach-v3", 1, 100))
