"""Environments of the LaGO reference implementation.

`import envs` registers "CLEVR-Robot-v0" with gymnasium (lazily: mujoco is imported at
`gymnasium.make`). CLEVR-Robot: the env in `envs.clevr_robot`, its goals and instructions in
`envs.clevr_language`, its scripted expert and demonstrations in `envs.clevr_expert`. Meta-World
tasks come from `envs.metaworld`, which is not imported here so that `import envs` stays light
(no metaworld, no torch).

    import gymnasium as gym, envs
    env = gym.make("CLEVR-Robot-v0", goal_split="train")             # TimeLimit 50 steps
    env = gym.make("CLEVR-Robot-v0", goal_split="heldout", max_episode_steps=100)
    env = gym.make("CLEVR-Robot-v0", goal_split="train+rephrase+heldout+compose")  # levels; compose: 2 goal slots
    env = gym.make("CLEVR-Robot-v0", goal_split="hard", success_test="kalm")  # 3 relations, KALM's test; 3 slots

The episode limit of the registered id is gymnasium's TimeLimit wrapper (`max_episode_steps`
of `gym.make`, default 50); the env's own counter (`ClevrRobotEnv(max_episode_steps=...)`,
used when the class is built directly) is switched off there, so the two never disagree.
`success_test` is "original" (the default: the original relation test) or "kalm" (KALM's 90-degree sector
and 0.39 distance); see `envs.clevr_robot`. "CLEVR-Robot-KALM-v0" is the same env with `success_test="kalm"`, so
that a script's `--env-id` can choose it.
"""

from gymnasium.envs.registration import register, registry

CLEVR_ROBOT_ID = "CLEVR-Robot-v0"
CLEVR_ROBOT_KALM_ID = "CLEVR-Robot-KALM-v0"

for env_id, success_test in ((CLEVR_ROBOT_ID, "original"), (CLEVR_ROBOT_KALM_ID, "kalm")):
    if env_id not in registry:
        register(
            id=env_id,
            entry_point="envs.clevr_robot:ClevrRobotEnv",
            max_episode_steps=50,
            kwargs={"max_episode_steps": None, "success_test": success_test},
        )
