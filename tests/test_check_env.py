"""Every env we register or wrap passes gymnasium's own API checker, `gymnasium.utils.env_checker.check_env`
(spaces, reset and step return types, seeded-reset and step determinism, returned arrays not reused)."""

import warnings

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers CLEVR-Robot-v0)
from envs import metaworld as mw

# check_env's warnings that are findings (the others, e.g. "infinite Box bounds" on Meta-World's object and goal
# numbers or "the env is wrapped", are advice about choices made on purpose)
FINDINGS = ("not equal although similar", "not within the observation space", "is not a", "deprecated")


def checked(env):
    """check_env(env) without its render check; fails on findings among its warnings as well."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env, skip_render_check=True)
    findings = [str(w.message) for w in caught if any(f in str(w.message) for f in FINDINGS)]
    assert not findings, findings
    env.close()


@pytest.mark.parametrize("level", ["train", "heldout", "rephrase", "compose", "train+compose"])
def test_clevr_robot_levels(level):
    """As registered (gym.make: TimeLimit, OrderEnforcing, PassiveEnvChecker) and the bare env."""
    env = gym.make("CLEVR-Robot-v0", goal_split=level)
    assert env.observation_space.shape == ((38,) if "compose" in level else (24,))
    checked(env)
    checked(gym.make("CLEVR-Robot-v0", goal_split=level).unwrapped)


@pytest.mark.parametrize("task", ["reach-v3", "door-open-v3"])
def test_metaworld_tasks(task):
    """Our Meta-World env (make_env), built with a seed and without (its reset(seed=) seeds it then)."""
    checked(mw.make_env(task, seed=0))
    checked(mw.make_env(task, seed=None, reward_type="sparse", max_episode_steps=50))
    # check_env's close check rebuilds the env from its spec: the same env (seed, reward, step limit)
    env = mw.make_env(task, seed=4, reward_type="sparse", max_episode_steps=30)
    rebuilt = env.spec.make()
    assert isinstance(rebuilt, mw.MetaWorldTask) and rebuilt.sparse and rebuilt.unwrapped.max_path_length == 30
    assert (env.reset()[0] == rebuilt.reset()[0]).all()
