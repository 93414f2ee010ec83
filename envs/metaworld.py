"""Meta-World (metaworld 3.1.1) for LaGO: task names, instructions, one thin wrapper, vector envs, expert demos.

Every env is built by `gym.make("Meta-World/MT1", env_name=task, seed=seed)` and wrapped once by `MetaWorldTask`.
Facts of metaworld 3.1.1 this module handles (see tests/test_metaworld.py, which checks each one):
- `gym.make` already adds RecordEpisodeStatistics (inside its own TimeLimit and success-termination wrappers).
  Wrapping it again, as CleanRL's `make_env` does, raises an AssertionError at the end of the first episode.
- Meta-World ignores `reset(seed=...)`: its seed goes through `gym.make(seed=)` (the 50 goals of the task, drawn
  from numpy's global RNG under that seed, and the env's RNG, which picks one of them at every reset).
  `MetaWorldTask` honours it, as gymnasium's `check_env` requires: `reset(seed=s)` re-seeds both as
  `gym.make(seed=s)` does, so it starts the episode `make_env(task, seed=s).reset()` starts, in any env of the task.
  An env built with `make_env(seed=s)` and reset without a seed runs as before; the PPO scripts' first
  `envs.reset(seed=args.seed)` gives each env the seed it was built with, so it changes nothing there either.
- A new goal (one of 50 per task, fixed by the seed) is drawn at every reset.
- The observation (39 float64: hand xyz, gripper, 2 objects' pose, the same 18 numbers of the previous step,
  goal xyz) shows the goal, but Meta-World's `observation_space` says the goal is always 0: `MetaWorldTask`
  declares the goal unbounded, which also makes the observation space the same for all 50 tasks (we build with
  `disable_env_checker=True`: its only findings were these out-of-space goals).
- The env's own step limit (`max_path_length` = 500) raises a ValueError past it, so `max_episode_steps` is set
  on the env and on Meta-World's TimeLimit, not by adding a second TimeLimit (that one would be outside
  RecordEpisodeStatistics: no "episode" stats at truncation).
- The door-open and door-close experts modify the observation given to `get_action` (the door's position):
  `collect_demos` gives them a copy, so that the demos record the observation the env returned.
- `info["success"]` is a float at steps and absent at reset; `MetaWorldTask` makes it a bool, always present.
  The dense reward is a float on some tasks and np.float32 on others (e.g. drawer-close): we return a float.

This file imports no torch. `python -m benchmark.env_speed_metaworld` measures its speed and the experts' success.
"""

from __future__ import annotations

import difflib
import os
import warnings
from collections.abc import Callable, Sequence

import gymnasium as gym
import metaworld  # also registers the "Meta-World/..." gymnasium ids
import numpy as np
from metaworld.policies import ENV_POLICY_MAP
from metaworld.wrappers import RandomTaskSelectWrapper

STATE_DIM = 39
"""Observation size of every Meta-World v3 task (the prior sees all of it)."""
ACTION_DIM = 4
"""Action size: end-effector dx, dy, dz and gripper effort, each in [-1, 1]."""

# One instruction per task: our own short imperative sentences, all distinct (tests check it).
INSTRUCTIONS: dict[str, str] = {
    "assembly-v3": "pick up the ring and put it onto the peg",
    "basketball-v3": "pick up the ball and dunk it into the basketball hoop",
    "bin-picking-v3": "move the cube from one bin into the other bin",
    "box-close-v3": "pick up the lid and close the box with it",
    "button-press-topdown-v3": "press the button down from above",
    "button-press-topdown-wall-v3": "reach past the wall and press the button down from above",
    "button-press-v3": "press the button in from the front",
    "button-press-wall-v3": "reach around the wall and press the button in from the front",
    "coffee-button-v3": "press the button on the coffee machine",
    "coffee-pull-v3": "pull the mug away from the coffee machine",
    "coffee-push-v3": "push the mug under the coffee machine",
    "dial-turn-v3": "turn the dial around",
    "disassemble-v3": "pick up the ring and lift it off the peg",
    "door-close-v3": "swing the door closed",
    "door-lock-v3": "turn the knob to lock the door",
    "door-open-v3": "pull the door open",
    "door-unlock-v3": "turn the knob to unlock the door",
    "hand-insert-v3": "push the puck into the hole in the table",
    "drawer-close-v3": "push the drawer closed",
    "drawer-open-v3": "pull the drawer open",
    "faucet-open-v3": "turn the faucet handle to open the faucet",
    "faucet-close-v3": "turn the faucet handle to close the faucet",
    "hammer-v3": "pick up the hammer and drive the nail into the wall",
    "handle-press-side-v3": "press the handle down from the side",
    "handle-press-v3": "press the handle down from the front",
    "handle-pull-side-v3": "pull the handle up from the side",
    "handle-pull-v3": "pull the handle up from the front",
    "lever-pull-v3": "pull the lever up",
    "pick-place-wall-v3": "pick up the puck and place it at the goal behind the wall",
    "pick-out-of-hole-v3": "pick the peg up out of the hole",
    "pick-place-v3": "pick up the puck and place it at the goal",
    "plate-slide-v3": "slide the plate forward into the cabinet",
    "plate-slide-side-v3": "slide the plate sideways into the cabinet",
    "plate-slide-back-v3": "slide the plate back out of the cabinet",
    "plate-slide-back-side-v3": "slide the plate sideways out of the cabinet",
    "peg-insert-side-v3": "pick up the peg and insert it into the hole from the side",
    "peg-unplug-side-v3": "pull the peg sideways out of the socket",
    "soccer-v3": "kick the soccer ball into the goal",
    "stick-push-v3": "grasp the stick and use it to push the thermos to the goal",
    "stick-pull-v3": "grasp the stick and use it to pull the thermos to the goal",
    "push-v3": "push the puck to the goal",
    "push-wall-v3": "push the puck around the wall to the goal",
    "push-back-v3": "pull the puck back toward you to the goal",
    "reach-v3": "move the gripper to the goal position",
    "reach-wall-v3": "move the gripper past the wall to the goal position",
    "shelf-place-v3": "pick up the puck and place it on the shelf",
    "sweep-into-v3": "sweep the cube into the hole",
    "sweep-v3": "sweep the cube off the edge of the table",
    "window-open-v3": "slide the window open",
    "window-close-v3": "slide the window closed",
}

# Instruction levels (after KALM): stage 1 sees demonstrations of the DEMONSTRATED tasks only; RL and evaluation run
# on each level. "task:rephrase" is the task with its instruction reworded (one of three phrasings per episode, drawn by
# the env); the unseen tasks' own instructions share or oppose words with a demonstrated one (wall variants, opposite
# skills). The phrasings were written before any model was measured on them.
DEMONSTRATED: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "button-press-v3",
    "door-unlock-v3",
    "door-open-v3",
    "window-open-v3",
    "faucet-open-v3",
    "coffee-push-v3",
    "coffee-button-v3",
)
REPHRASED: dict[str, tuple[str, str, str]] = {
    "reach-v3": (
        "bring the hand to the target point",
        "put the end effector on the target location",
        "go to the marked position with the gripper",
    ),
    "push-v3": (
        "slide the puck over to the target",
        "shove the small disc to the goal spot",
        "move the puck along the table to the target",
    ),
    "pick-place-v3": (
        "grab the puck and set it down at the target",
        "lift the puck and put it at the goal spot",
        "take the disc and drop it at the target position",
    ),
    "button-press-v3": ("push the button from the front", "hit the button straight on", "press in the front button"),
    "door-unlock-v3": (
        "rotate the lock knob to unlock the door",
        "twist the knob so the door is unlocked",
        "unlock the door by turning its knob",
    ),
    "door-open-v3": ("open the door by pulling it", "swing the door open", "pull on the door until it is open"),
    "window-open-v3": ("push the window open sideways", "open the window by sliding it", "slide the window pane open"),
    "faucet-open-v3": (
        "rotate the tap handle to turn the water on",
        "open the tap",
        "twist the faucet handle open",
    ),
    "coffee-push-v3": (
        "slide the mug beneath the coffee machine",
        "push the cup under the coffee maker",
        "move the mug under the spout of the machine",
    ),
    "coffee-button-v3": (
        "push the button of the coffee machine",
        "hit the button on the coffee maker",
        "press the coffee maker's button",
    ),
}
UNSEEN: tuple[str, ...] = (
    "reach-wall-v3",
    "push-wall-v3",
    "pick-place-wall-v3",
    "button-press-wall-v3",
    "door-lock-v3",
    "door-close-v3",
    "window-close-v3",
    "faucet-close-v3",
)
LEVELS: dict[str, tuple[str, ...]] = {
    "demonstrated": DEMONSTRATED,
    "rephrase": tuple(f"{task}:rephrase" for task in DEMONSTRATED),
    "unseen": UNSEEN,
}
"""The instruction levels: their env names (a task, or "task:rephrase")."""


def level_of(name: str) -> str:
    """The level of an env name: "rephrase" for "task:rephrase", "demonstrated" or "unseen" by the task."""
    return "rephrase" if name.endswith(":rephrase") else "demonstrated" if name in DEMONSTRATED else "unseen"


ALL_TASKS: tuple[str, ...] = tuple(metaworld.MT1.ENV_NAMES)
"""The 50 Meta-World v3 task names, in Meta-World's order (this is also MT50)."""
MT50 = ALL_TASKS
MT10: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
BENCHMARKS: dict[str, tuple[str, ...]] = {"MT10": MT10, "MT50": MT50}


def resolve_tasks(spec: str | Sequence[str]) -> list[str]:
    """Task names from a spec: one task ("reach-v3"), "MT10", "MT50", or a comma-separated mix of those; a task of
    DEMONSTRATED followed by ":rephrase" ("reach-v3:rephrase") is that task with its instructions of REPHRASED.

    A list of names is accepted too. Duplicates are dropped (first occurrence kept). Unknown names raise a
    ValueError that suggests the closest valid name and lists all of them.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    tasks: list[str] = []
    for item in items:
        name = str(item).strip()
        if not name:
            continue
        if name.upper() in BENCHMARKS:
            names = BENCHMARKS[name.upper()]
        elif name in INSTRUCTIONS or name.removesuffix(":rephrase") in REPHRASED:
            names = (name,)
        else:
            valid = list(BENCHMARKS) + list(ALL_TASKS)
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            if not close and not name.endswith("-v3"):
                close = difflib.get_close_matches(name + "-v3", valid, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"Unknown Meta-World task {name!r} in {spec!r}.{hint} Valid: a task name, 'MT10', 'MT50', "
                f"'task:rephrase' (tasks of DEMONSTRATED), or a comma-separated list of them. "
                f"Task names: {', '.join(ALL_TASKS)}"
            )
        tasks += [t for t in names if t not in tasks]
    if not tasks:
        raise ValueError(f"No Meta-World task in {spec!r}: give a task name (e.g. 'reach-v3'), 'MT10' or 'MT50'")
    return tasks


def spec_string(tasks: str | Sequence[str]) -> str:
    """The env id string for a task spec: a string is returned as given, a list is joined with commas."""
    return tasks if isinstance(tasks, str) else ",".join(tasks)


class MetaWorldTask(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """The one wrapper: a true observation space (the same for all tasks), the sparse reward, the info keys, the step
    limit, reset(seed=).

    info at reset and at every step: "success" (bool), "instruction" (str), "task" (str). At the end of an
    episode Meta-World's own RecordEpisodeStatistics puts "episode" = {"r", "l", "t"} in info; we add
    "success" there (True if success was reached at any step of the episode) and, with the sparse reward,
    make "r" the sparse return.

    `env` is `gym.make("Meta-World/MT1", env_name=task, seed=seed)`; `seed` is that seed (None: unknown). `task` may be
    "task:rephrase": each episode then draws one of its REPHRASED instructions (from a numpy Generator of `seed`,
    re-seeded by reset(seed=)).
    `reset(seed=s)` re-seeds the env as `gym.make(seed=s)` does (see the module docstring): the goals of seed s
    are drawn once (numpy's global RNG seeded and restored, so not thread-safe) and kept for a few seeds.
    `max_episode_steps` (None: Meta-World's 500) is set in both places the step limit lives: the Sawyer env, which
    raises past it, and Meta-World's TimeLimit. The constructor's arguments go into `env.spec`, so that
    `env.spec.make()` rebuilds this env (gymnasium's check_env does).
    """

    GOAL_SETS_KEPT = 4
    """goal sets of reset seeds kept besides the construction seed's (check_env resets with 123 and 456 in turn)"""

    def __init__(
        self,
        env: gym.Env,
        task: str,
        reward_type: str = "dense",
        seed: int | None = None,
        max_episode_steps: int | None = None,
    ):
        gym.utils.RecordConstructorArgs.__init__(
            self, task=task, reward_type=reward_type, seed=seed, max_episode_steps=max_episode_steps
        )
        gym.Wrapper.__init__(self, env)
        self.task = task
        rephrased = task.endswith(":rephrase")
        self.instructions = REPHRASED[task.removesuffix(":rephrase")] if rephrased else (INSTRUCTIONS[task],)
        self.instruction = self.instructions[0]
        self._instruction_rng = np.random.default_rng(seed)
        self.sparse = reward_type == "sparse"
        # Meta-World declares the goal (last 3 numbers) as always 0; it is the goal position. Unbounded, like the
        # object numbers, so that all 50 tasks share one observation space (a multi-task SyncVectorEnv needs that).
        space = env.observation_space
        low, high = space.low.copy(), space.high.copy()
        low[-3:], high[-3:] = -np.inf, np.inf
        self.observation_space = gym.spaces.Box(low, high, dtype=space.dtype)
        self._ever_success = False
        self._sparse_return = 0.0
        if max_episode_steps is not None:
            env.unwrapped.max_path_length = int(max_episode_steps)
            inner = env
            while isinstance(inner, gym.Wrapper):
                if isinstance(inner, gym.wrappers.TimeLimit):
                    inner._max_episode_steps = int(max_episode_steps)
                inner = inner.env
        inner = env
        while not isinstance(inner, RandomTaskSelectWrapper):  # holds the goals; its RNG is the Sawyer env's
            if not isinstance(inner, gym.Wrapper):
                raise TypeError("MetaWorldTask wraps gym.make('Meta-World/MT1', env_name=task, seed=seed)")
            inner = inner.env
        self._task_select = inner
        self._seed = None if seed is None else int(seed)
        self._goal_sets = {} if seed is None else {self._seed: inner.tasks}  # reset seed -> its 50 goals

    def _reseed(self, seed: int) -> None:
        """What gym.make("Meta-World/MT1", env_name=self.task, seed=seed) does with its seed: draw the 50 goals (MT1,
        whose draws depend on the seed only) and seed the Sawyer env (env.seed: its RNG and spaces)."""
        seed = int(seed)
        if seed not in self._goal_sets:
            others = [k for k in self._goal_sets if k != self._seed]
            if len(others) >= self.GOAL_SETS_KEPT:
                del self._goal_sets[others[0]]  # the oldest
            self._goal_sets[seed] = metaworld.MT1(self.task, seed=seed).train_tasks
        self._task_select.tasks = list(self._goal_sets[seed])
        self.env.unwrapped.seed(seed)
        self._instruction_rng = np.random.default_rng(seed)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:  # before the inner reset: Meta-World picks the episode's goal first, then resets
            self._reseed(seed)
        obs, info = self.env.reset(options=options)
        if len(self.instructions) > 1:
            self.instruction = self.instructions[self._instruction_rng.integers(len(self.instructions))]
        self._ever_success = False
        self._sparse_return = 0.0
        info["success"] = False
        info["instruction"] = self.instruction
        info["task"] = self.task
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info["success"])
        info["success"] = success
        info["instruction"] = self.instruction
        info["task"] = self.task
        self._ever_success |= success
        if self.sparse:
            reward = float(success)
            self._sparse_return += reward
        else:
            reward = float(reward)  # some tasks return np.float32
        if "episode" in info:
            info["episode"]["success"] = self._ever_success
            if self.sparse:
                info["episode"]["r"] = self._sparse_return
        return obs, reward, terminated, truncated, info


def make_env(
    task: str,
    seed: int | None,
    max_episode_steps: int = 500,
    reward_type: str = "dense",
    terminate_on_success: bool = False,
    render_mode: str | None = None,
    camera_name: str | None = None,
) -> gym.Env:
    """One Meta-World task as a gymnasium env: obs Box(39,) float64, action Box(-1, 1, (4,)) float32.

    Args:
        task: a Meta-World v3 task name, e.g. "reach-v3" (see ALL_TASKS), or "task:rephrase" (see LEVELS).
        seed: seeds the 50 goals of the task and the env's RNG; `reset(seed=s)` later re-seeds both with s.
        max_episode_steps: truncation after this many steps (Meta-World's default is 500).
        reward_type: "dense" (Meta-World's shaped reward, 0 to 10 per step) or "sparse" (1.0 on steps where
            info["success"], else 0.0).
        terminate_on_success: terminated=True on the first successful step (else episodes run to truncation).
        render_mode: None, "rgb_array" (render() returns a 480x480 uint8 RGB frame; 80 frames per second of sim
            time), "depth_array" or "human". Offscreen rendering needs an OpenGL backend: with MUJOCO_GL unset and
            no display (where gymnasium's own choice of backend fails), MUJOCO_GL=egl is set for this process.
        camera_name: Meta-World's camera to render from ("corner", "corner2", "corner3", "corner4", "topview",
            "behindGripper", "gripperPOV"); None: MuJoCo's free camera, over the whole table.
    """
    resolved = resolve_tasks(task)
    if len(resolved) != 1:
        raise ValueError(f"make_env takes one task name, got {task!r}; use make_vector_env for several tasks")
    if reward_type not in ("dense", "sparse"):
        raise ValueError(f"reward_type must be 'dense' or 'sparse', got {reward_type!r}")
    if int(max_episode_steps) != max_episode_steps or max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be a positive integer, got {max_episode_steps!r}")
    env = gym.make(
        "Meta-World/MT1",
        env_name=resolved[0].removesuffix(":rephrase"),
        seed=seed,
        terminate_on_success=terminate_on_success,
        disable_env_checker=True,
        **_render_kwargs(render_mode, camera_name),
    )
    return MetaWorldTask(env, resolved[0], reward_type, seed=seed, max_episode_steps=int(max_episode_steps))


def _render_kwargs(render_mode: str | None, camera_name: str | None) -> dict:
    """gym.make's rendering arguments (none without rendering); sets MUJOCO_GL=egl for offscreen rendering where it
    is unset and there is no display (unset, gymnasium tries glfw, which needs one, and fails)."""
    if render_mode is None:
        if camera_name is not None:
            raise ValueError("camera_name needs a render_mode")
        return {}
    if render_mode not in ("rgb_array", "depth_array", "human"):
        raise ValueError(f"render_mode must be None, 'rgb_array', 'depth_array' or 'human', got {render_mode!r}")
    if render_mode != "human" and "MUJOCO_GL" not in os.environ:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ["MUJOCO_GL"] = "egl"
    kwargs = {"render_mode": render_mode}
    if camera_name is not None:
        kwargs["camera_name"] = camera_name
    return kwargs


def env_thunk(task: str, seed: int | None, **kwargs) -> Callable[[], gym.Env]:
    """A no-argument constructor of make_env(task, seed, **kwargs), for gym.vector.SyncVectorEnv."""

    def thunk() -> gym.Env:
        return make_env(task, seed, **kwargs)

    return thunk


def make_vector_env(tasks: str | Sequence[str], num_envs: int, seed: int, **kwargs) -> gym.vector.SyncVectorEnv:
    """num_envs envs in a SyncVectorEnv (same-step autoreset): env i runs tasks[i % len(tasks)] with seed seed + i.

    tasks: a spec for resolve_tasks ("MT10", "reach-v3", "push-v3,reach-v3") or a list of names.
    kwargs go to make_env (max_episode_steps, reward_type, terminate_on_success).
    """
    names = resolve_tasks(tasks)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return gym.vector.SyncVectorEnv(
        [env_thunk(names[i % len(names)], seed + i, **kwargs) for i in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def expert_policy(task: str):
    """Meta-World's scripted expert for a task: an object with get_action(obs) -> action (4,).

    Some experts (door-open-v3, door-close-v3) modify the observation they are given: pass a copy to keep it."""
    return ENV_POLICY_MAP[resolve_tasks(task)[0].removesuffix(":rephrase")]()


def collect_demos(
    tasks: str | Sequence[str],
    episodes_per_task: int,
    noise_std: float = 0.0,
    seed: int = 0,
    max_episode_steps: int = 500,
    steps_after_success: int | None = 10,
    labels: str = "executed",
    progress=None,
) -> dict:
    """Demonstrations of Meta-World's scripted experts, in the contract's demo format (progress: wraps the sequence of
    episodes, e.g. tqdm, to show it).

    Each task gets its own env (seed + index of the task); each episode has a new goal. The expert's action plus
    Gaussian noise N(0, noise_std) (one numpy Generator seeded with `seed`) is clipped to [-1, 1], executed, and
    recorded with the observation it answered (as the env returned it); labels="expert" records the noise-free expert
    action (clipped) instead, the trajectory unchanged.
    An episode ends at truncation, or `steps_after_success` steps after the first successful step (default 10:
    the expert holding the goal is kept a little, 450 steps of it are not; None keeps the full episode).

    Returns: observations float32 [N, 39], actions float32 [N, 4], instructions str [N], episode_ids int64 [N],
    episode_success bool [E] (success at any step), env_id (the spec string), state_dim 39.
    """
    names = resolve_tasks(tasks)
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    if labels not in ("executed", "expert"):
        raise ValueError(f"labels is 'executed' or 'expert', got {labels!r}")
    rng = np.random.default_rng(seed)
    observations, actions, instructions, episode_ids, episode_success = [], [], [], [], []
    with warnings.catch_warnings():
        # the experts' `move` warns whenever a gain saturates the action: every few steps, harmless
        warnings.filterwarnings("ignore", message="Constant\\(s\\) may be too high")
        env, current = None, None
        for k in (progress or iter)([k for k in range(len(names)) for _ in range(episodes_per_task)]):
            if k != current:  # the first episode of task k (the previous task's env is done)
                if env is not None:
                    env.close()
                env = make_env(names[k], seed + k, max_episode_steps=max_episode_steps)
                policy, current = expert_policy(names[k]), k
            episode = len(episode_success)
            obs, info = env.reset()
            instruction = info["instruction"]
            first_success = None
            t = 0
            while True:
                # a copy: the door-open and door-close experts modify the observation they are given
                expert = np.asarray(policy.get_action(obs.copy()), dtype=np.float64)
                action = expert + rng.normal(0.0, noise_std, size=expert.shape) if noise_std > 0 else expert
                action = np.clip(action, -1.0, 1.0).astype(np.float32)
                observations.append(obs.astype(np.float32))
                actions.append(np.clip(expert, -1.0, 1.0).astype(np.float32) if labels == "expert" else action)
                episode_ids.append(episode)
                obs, _, terminated, truncated, info = env.step(action)
                if info["success"] and first_success is None:
                    first_success = t
                t += 1
                if terminated or truncated:
                    break
                if (
                    first_success is not None
                    and steps_after_success is not None
                    and t - first_success > steps_after_success
                ):
                    break
            episode_success.append(first_success is not None)
            instructions += [instruction] * t
        env.close()
    return {
        "observations": np.stack(observations).astype(np.float32),
        "actions": np.stack(actions).astype(np.float32),
        "instructions": np.array(instructions, dtype=np.str_),
        "episode_ids": np.array(episode_ids, dtype=np.int64),
        "episode_success": np.array(episode_success, dtype=bool),
        "env_id": spec_string(tasks),
        "state_dim": STATE_DIM,
    }
