"""CLEVR-Robot, rebuilt on the official `mujoco` bindings and gymnasium 1.x.

A faithful re-implementation of the "perfect action" / "direct observation" setting of
google-research/clevr_robot_env (Jiang et al., "Language as an Abstraction for Hierarchical
Deep Reinforcement Learning", NeurIPS 2019), the setting KALM and LaGO use. The original
needs dm_control and the old gym API; nothing maintained exists for gymnasium 1.x, so the
scene, the pusher, the action set, the relation semantics and the goal programs are rebuilt
here from the original's facts (no code copied).

Scene (MJCF string `SCENE_XML`, timestep 0.01, Euler, gravity -9.81, as the original)
    A table plane at z = -0.325 and four invisible walls (planes) at x = -0.6, x = +0.6,
    y = -0.3 and y = +0.7 that collide with the spheres but not with the pusher
    (contype/conaffinity bits). Five large rubber spheres, radius 0.13, density 1, free joints
    with damping 0.75, coloured by index: red, blue, green, purple, cyan. The pusher is a point
    mass (sphere of radius 0.05 at z = -0.2) on two slide joints (damping 0.5) driven by two
    motors with ctrlrange +-2. A sphere centre can therefore range over
    x in [-0.47, 0.47], y in [-0.17, 0.57] (wall minus radius).

Start state (`reset`)
    Positions are drawn one sphere at a time, x ~ U(-0.5, 0.5), y ~ U(-0.3, 0.5) (the
    original's ranges), then projected onto the region the walls allow (in the original a
    sphere sampled inside a wall is pushed back to the wall by the first physics step; we do
    it at reset so the first observation is already physical), and rejected unless it is at
    least 0.1 from every other sphere between surfaces (centres >= 0.36 apart) and not within
    0.01 of another centre along x or along y (the original's `min_margin`). After 10 failed
    draws of one sphere the whole scene is redrawn (as the original). The pusher is parked
    at `PUSHER_HOME` = (0, -0.45), behind the back wall, until the first action.

Actions: `Discrete(40)`, action = object index * 8 + direction index
    `DIRECTIONS` = [[1,0],[0,1],[-1,0],[0,-1],[.8,.8],[-.8,.8],[.8,-.8],[-.8,-.8]].
    One step teleports the pusher to (object position - 0.15 * direction) with zero velocity,
    sets the motor controls to the direction and runs 40 physics steps (the original's
    `do_simulation(direction, int(frame_skip * 2.0))` with frame_skip = 20), i.e. 0.4 s.
    Anything else than an integer in [0, 40) raises ValueError. As in the original, the
    spheres are light (9 g) next to a pusher force of up to 2 N: a pushed sphere travels about
    0.25 and may still be rolling when the step returns (velocities are not observed), and in
    crowded corners a sphere can briefly ride up on its neighbours before it falls back.

Observation: `Box(float32, (OBS_DIM,) = (24,))`
    concat(state, goal encoding): state = (x, y) of the 5 spheres in colour order
    (`STATE_DIM` = 10, the original's "direct" observation), goal encoding = one-hot target
    colour (5) + one-hot relation (4) + one-hot reference colour (5) (`GOAL_DIM` = 14).
    With `goal_slots=2` the goal encoding has two such slots, (10 + 2 * 14,) = (38,): a
    one-relation goal fills slot 1 and leaves slot 2 zeros, a "compose" goal fills both. With
    `goal_slots=3`, (10 + 3 * 14,) = (52,): a "hard" goal fills all three, smaller goals leave zeros.

Relations (`relation_holds(pos_a, pos_b, relation)`): with u = (B - A) / |B - A|,
    "B is R of A" iff u . dir_R > 0.6 and |B - A| < 0.7 (both strict), where
    left = (-1, 0), right = (+1, 0), behind = (0, -1), front = (0, +1) on the table plane
    (the original's camera at azimuth 90 / elevation -45 gives exactly these vectors).

Success tests (`success_test`, one keyword of the env, `goal_holds` and `relation_holds`):
    "original" (default): the relation test above.
    "kalm": KALM's test (CharlieBrown-v1/KALM, `src/envs/utils/clevr_utils.py`, `_success`), applied
    to every relation of every level: "B is R of A" iff the angle of (B - A) lies in the 90-degree
    sector of dir_R and |B - A| < 0.39 + 0.001 (KALM's 0.13 * 2 + 0.13 plus its EPS = 1e-3, strict):
    the centres nearly touch (0.26 apart when the spheres touch). Boundaries, as KALM's code: with the
    angle theta of (B - A) counted counter-clockwise from +x (x right, y front) and phi_R that of
    dir_R, the sector is the half-open [phi_R - 45, phi_R + 45) degrees: the edge at phi_R - 45 counts,
    the one at phi_R + 45 does not, so at a distance below 0.391 exactly one of the four relations
    holds (the sectors tile the plane; B = A: none). Computed without trigonometry: with a = (B - A) .
    dir_R and b = (B - A) . (dir_R turned +90 degrees), the angle test is -a <= b < a. Not copied:
    KALM zeroes components of (B - A) below 1e-3 and adds 1e-6 to a norm before its arccos; for spheres
    that do not overlap (|B - A| >= 0.26) that moves a sector edge by less than 0.001 degree. KALM names +y
    "behind" where we (and SPEC) name it "front": the sectors follow our relation vectors.

Goals at reset: the goal programs, their wordings, the train / held-out split and the
    instruction levels are defined in `envs.clevr_language`. At reset a (goal, template) pair is
    drawn uniformly among the pairs of the chosen `goal_split` whose goal is currently FALSE (the
    scene is redrawn if none is), so an episode never starts solved; a "compose" goal (two
    relations) needs both false and succeeds iff both hold. A mixture ("+"-joined levels) draws
    the level of each episode uniformly with `np_random` (then the goal among the level's false
    goals, false under the env's `success_test`); a "hard" goal (three relations) needs all three
    false and succeeds iff all three hold at the same step; a single level or split draws no level. `reset(options={"goal": "red left_of blue"})`
    fixes the program (any of the 80, whatever the split; the scene is redrawn until it is false;
    "A and B" or a pair for a compose goal, "A and B and C" or a triple for a hard one), `options={"template": k}` the paraphrase (an index
    into the level's templates or frames) and `options={"level": ...}` the level. Unknown
    programs / templates / levels raise ValueError.
    `goal_slots` (goal encodings in the observation): 1, 2 or 3; None (default) is 3 when "hard" is
    among the levels of `goal_split`, else 2 when "compose" is, else 1.

Reward, termination, truncation
    info["success"] is True iff the goal program holds after the step (under `success_test`). Reward is 1.0 and
    `terminated` is True on that step, 0.0 / False otherwise. `truncated` is True once
    `max_episode_steps` steps have been taken (default 50). The original runs 100 steps
    without termination (it was built for goal relabelling); KALM uses 50, and so do we: the
    scripted expert needs 2-3 pushes on average (at most a handful), so 50 leaves a wide margin
    for exploring policies while keeping PPO rollouts and demonstrations short. Through
    `gymnasium.make("CLEVR-Robot-v0")` the limit is gymnasium's TimeLimit wrapper (registered
    `max_episode_steps=50`, so `gymnasium.make(..., max_episode_steps=N)` works as usual)
    and the env's own counter is off; `ClevrRobotEnv(max_episode_steps=N)` truncates itself.
    info at reset and every step: "success" (bool), "instruction" (str), "goal" (str, "A and B"
    for a compose goal, "A and B and C" for a hard one), "level" (str, e.g. "train", "rephrase").

Seeding: all randomness (scene, goal, paraphrase) comes from `self.np_random`, so
    `reset(seed=s)` followed by the same actions gives identical episodes; physics state
    (including the solver's warm start) is reset at every reset.

Rendering: `render_mode="rgb_array"` returns a top-down uint8 image (H, W, 3) drawn with numpy
    (no OpenGL needed): grey table inside the walls (dark border), spheres in their colours,
    the pusher in white. Image right = +x ("right"), image up = -y ("behind"), image down =
    +y ("front"): the view of someone standing in front of the table.

The scripted expert and the demonstrations are in `envs.clevr_expert`.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from envs.clevr_language import (
    COLORS,
    COMPOSE_GOALS,
    GOAL_DIM,
    HARD_GOALS,
    LEVEL_RELATIONS,
    PROGRAM_STRINGS,
    PROGRAMS,
    RELATIONS,
    SPLIT_NAMES,
    TEMPLATES,
    goal_encoding,
    goal_pool,
    goal_string,
    level_text,
    parse_goal_split,
    parse_goals,
)

ENV_ID = "CLEVR-Robot-v0"
COLOR_RGB = ((255, 26, 26), (51, 128, 255), (51, 255, 0), (204, 51, 255), (51, 255, 255))  # the original's rgba
RELATION_VECTORS = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
DIRECTIONS = np.array(
    [[1, 0], [0, 1], [-1, 0], [0, -1], [0.8, 0.8], [-0.8, 0.8], [0.8, -0.8], [-0.8, -0.8]], dtype=np.float64
)
NUM_OBJECTS = 5
NUM_ACTIONS = NUM_OBJECTS * len(DIRECTIONS)  # 40
STATE_DIM = 2 * NUM_OBJECTS  # 10
OBS_DIM = STATE_DIM + GOAL_DIM  # 24

SPHERE_RADIUS = 0.13
TABLE_Z = -0.325
WALLS = {"x_min": -0.6, "x_max": 0.6, "y_min": -0.3, "y_max": 0.7}
# where a sphere centre can be: the walls minus the radius
X_LIMIT = WALLS["x_max"] - SPHERE_RADIUS  # 0.47
Y_MIN = WALLS["y_min"] + SPHERE_RADIUS  # -0.17
Y_MAX = WALLS["y_max"] - SPHERE_RADIUS  # 0.57
RELATION_COS = 0.6  # u . dir_R must exceed this
RELATION_MAX_DIST = 0.7  # |B - A| must be below this
SUCCESS_TESTS = ("original", "kalm")
KALM_MAX_DIST = 2 * SPHERE_RADIUS + SPHERE_RADIUS + 1e-3  # KALM's SUCC_DIST_THRESHOLD + EPS: 0.391
RELATION_NORMALS = RELATION_VECTORS[:, ::-1] * [-1.0, 1.0]  # dir_R turned +90 degrees: (-dy, dx)
PUSH_OFFSET = 0.15  # the pusher starts this far behind the sphere centre
PUSH_PHYSICS_STEPS = 40  # 2 * frame_skip(20) physics steps of 0.01 s
PUSHER_HOME = (0.0, -0.45)
MIN_SURFACE_DIST = 0.1
MIN_AXIS_MARGIN = 0.01

# precomputed per program: goal encodings, target / reference indices, relation direction
_GOAL_ENCODINGS = np.stack([goal_encoding(i) for i in range(len(PROGRAMS))])
_PROGRAM_T = np.array([t for t, _, _ in PROGRAMS])
_PROGRAM_F = np.array([f for _, _, f in PROGRAMS])
_PROGRAM_DIR = RELATION_VECTORS[[r for _, r, _ in PROGRAMS]]
_PROGRAM_NORMAL = RELATION_NORMALS[[r for _, r, _ in PROGRAMS]]
_GOAL_COLUMNS = {"compose": np.array(COMPOSE_GOALS), "hard": np.array(HARD_GOALS)}  # goals of several relations


# ---------------------------------------------------------------------------------------
# Relations
# ---------------------------------------------------------------------------------------
def relation_holds(pos_a, pos_b, relation: str, success_test: str = "original") -> bool:
    """True iff "B is <relation> of A": u = (B - A)/|B - A|, u . dir > 0.6 and |B - A| < 0.7 ("original"),
    or KALM's sector test ("kalm", see the module docstring).

    pos_a is the reference, pos_b the target: "red left_of blue" is relation_holds(blue, red, "left").
    """
    try:
        r = RELATIONS.index(relation)
    except ValueError:
        raise ValueError(f"unknown relation {relation!r}; accepted: {RELATIONS}") from None
    holds = _HOLDS[_check_success_test(success_test)]
    return holds(float(pos_b[0]) - float(pos_a[0]), float(pos_b[1]) - float(pos_a[1]), r)


def _holds(dx: float, dy: float, r: int) -> bool:
    """The original test of relation r for B - A = (dx, dy)."""
    ux, uy = RELATION_VECTORS[r]
    dist2 = dx * dx + dy * dy
    if dist2 >= RELATION_MAX_DIST * RELATION_MAX_DIST:
        return False
    return bool(dx * ux + dy * uy > RELATION_COS * math.sqrt(dist2))


def _holds_kalm(dx: float, dy: float, r: int) -> bool:
    """KALM's test of relation r for B - A = (dx, dy): |B - A| < 0.391 and -a <= b < a (module docstring)."""
    if dx * dx + dy * dy >= KALM_MAX_DIST * KALM_MAX_DIST:
        return False
    (ux, uy), (nx, ny) = RELATION_VECTORS[r], RELATION_NORMALS[r]
    a, b = dx * ux + dy * uy, dx * nx + dy * ny
    return bool(-a <= b < a)


_HOLDS = {"original": _holds, "kalm": _holds_kalm}


def _check_success_test(success_test) -> str:
    if success_test not in SUCCESS_TESTS:
        raise ValueError(f"unknown success_test {success_test!r}; accepted: {', '.join(map(repr, SUCCESS_TESTS))}")
    return success_test


def goal_holds(positions, program, success_test: str = "original") -> bool:
    """Whether a goal holds for sphere positions (5, 2) (or a flat 10-vector) under `success_test`; a goal
    of several relations ("A and B", "A and B and C", see `parse_goals`) holds iff all its relations hold."""
    pos = np.asarray(positions, dtype=np.float64).reshape(NUM_OBJECTS, 2)
    holds = _HOLDS[_check_success_test(success_test)]
    for p in parse_goals(program):
        t, r, f = PROGRAMS[p]
        if not holds(pos[t, 0] - pos[f, 0], pos[t, 1] - pos[f, 1], r):
            return False
    return True


# ---------------------------------------------------------------------------------------
# The MuJoCo scene (values of the original's generated MJCF)
# ---------------------------------------------------------------------------------------
def _scene_xml() -> str:
    spheres = "".join(
        f"""
    <body name="obj{i}" pos="0 0 {TABLE_Z + SPHERE_RADIUS}">
      <geom name="obj{i}" type="sphere" size="{SPHERE_RADIUS}" rgba="{" ".join(f"{c / 255:.3g}" for c in rgb)} 1"
            density="1" contype="1" conaffinity="1" material="rubber"/>
      <joint name="obj{i}_free" type="free" damping="0.75" limited="false"/>
    </body>"""
        for i, rgb in enumerate(COLOR_RGB)
    )
    wall = 'contype="1" conaffinity="0" size="2 2 0.1" rgba="1 1 1 0"'
    return f"""<mujoco model="clevr_robot">
  <compiler inertiafromgeom="true" angle="radian" coordinate="local"/>
  <option timestep="0.01" gravity="0 0 -9.81" iterations="20" integrator="Euler"/>
  <default>
    <joint armature="0.04" damping="1" limited="true"/>
    <geom friction=".8 .1 .1" density="300" margin="0.002" condim="3" contype="0" conaffinity="0"/>
  </default>
  <asset>
    <material name="rubber" specular="0" shininess="0.1" reflectance="0"/>
  </asset>
  <worldbody>
    <light diffuse=".5 .5 .5" pos="0 0 3" dir="0 0 -1"/>
    <geom name="table" type="plane" pos="0 0.5 {TABLE_Z}" size="1 1 0.1" contype="1" conaffinity="1"/>
    <!-- invisible walls: contype 1 / conaffinity 0 collide with the spheres (conaffinity 1), not the pusher -->
    <geom name="wall_left" type="plane" pos="{WALLS["x_min"]} 0 0" zaxis="1 0 0" {wall}/>
    <geom name="wall_right" type="plane" pos="{WALLS["x_max"]} 0 0" zaxis="-1 0 0" {wall}/>
    <geom name="wall_behind" type="plane" pos="0 {WALLS["y_min"]} 0" zaxis="0 1 0" {wall}/>
    <geom name="wall_front" type="plane" pos="0 {WALLS["y_max"]} 0" zaxis="0 -1 0" {wall}/>{spheres}
    <body name="pusher" pos="0 0 -0.2">
      <geom name="pusher" type="sphere" size="0.05" rgba="1 1 1 1" density="0.5" contype="1" conaffinity="0"/>
      <joint name="pusher_x" type="slide" axis="1 0 0" damping="0.5" range="-10.3213 10.3"/>
      <joint name="pusher_y" type="slide" axis="0 1 0" damping="0.5" range="-10.3213 10.3"/>
    </body>
  </worldbody>
  <actuator>
    <motor joint="pusher_x" ctrllimited="true" ctrlrange="-2 2"/>
    <motor joint="pusher_y" ctrllimited="true" ctrlrange="-2 2"/>
  </actuator>
</mujoco>
"""


SCENE_XML = _scene_xml()

# render geometry: pixels per metre and the world window shown
_PX_PER_M = 200
_VIEW_X = (-0.75, 0.75)
_VIEW_Y = (-0.55, 0.85)


class ClevrRobotEnv(gym.Env):
    """CLEVR-Robot with 40 discrete push actions and language goals; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 2.5}

    def __init__(
        self,
        max_episode_steps: int | None = 50,
        goal_split: str = "train",
        render_mode: str | None = None,
        goal_slots: int | None = None,
        success_test: str = "original",
    ):
        levels = parse_goal_split(goal_split)  # validates
        self.success_test = _check_success_test(success_test)
        needed = max(LEVEL_RELATIONS[lv] for lv in levels)  # relations per goal: compose 2, hard 3
        if goal_slots is None:  # automatic: as many slots as the largest goal of the levels
            goal_slots = needed
        if not isinstance(goal_slots, (int, np.integer)) or isinstance(goal_slots, bool) or goal_slots not in (1, 2, 3):
            raise ValueError(f"goal_slots must be 1, 2 or 3 (goal encodings in the observation), got {goal_slots!r}")
        if goal_slots < needed:
            big = max(levels, key=LEVEL_RELATIONS.get)
            raise ValueError(
                f"goal_split {goal_split!r} has the {big!r} level ({needed} relations at once), whose goal encoding "
                f"needs {needed} slots: pass goal_slots={needed} (observation of {STATE_DIM} + {needed} * {GOAL_DIM} = "
                f"{STATE_DIM + needed * GOAL_DIM} dims) or leave goal_slots=None (automatic), e.g. "
                f"gym.make('CLEVR-Robot-v0', goal_split={goal_split!r})"
            )
        if max_episode_steps is not None and (
            not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}; accepted: None, 'rgb_array'")
        self.goal_split = goal_split
        self.goal_slots = int(goal_slots)
        self.levels = levels
        self.obs_dim = STATE_DIM + self.goal_slots * GOAL_DIM
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.render_mode = render_mode
        self._pools = {level: goal_pool(level) for level in levels}

        self.model = mujoco.MjModel.from_xml_string(SCENE_XML)
        self.data = mujoco.MjData(self.model)
        m = self.model
        # precomputed addresses: sphere i's free joint x, y, z, quaternion; the pusher's slide joints
        obj_qadr = [int(m.jnt_qposadr[m.joint(f"obj{i}_free").id]) for i in range(NUM_OBJECTS)]
        obj_vadr = [int(m.jnt_dofadr[m.joint(f"obj{i}_free").id]) for i in range(NUM_OBJECTS)]
        self._obj_qadr = obj_qadr
        self._obj_vadr = obj_vadr
        self._xy_index = np.array([[a, a + 1] for a in obj_qadr]).reshape(-1)  # qpos indices of the state
        self._pusher_q = int(m.jnt_qposadr[m.joint("pusher_x").id])
        self._pusher_v = int(m.jnt_dofadr[m.joint("pusher_x").id])
        assert int(m.jnt_qposadr[m.joint("pusher_y").id]) == self._pusher_q + 1
        # flat (action -> x, y, ctrl) lookups as python floats: no numpy in the hot path
        self._dir_x = [float(d[0]) for d in DIRECTIONS]
        self._dir_y = [float(d[1]) for d in DIRECTIONS]

        goal_dims = self.goal_slots * GOAL_DIM
        low = np.concatenate([np.tile([WALLS["x_min"], WALLS["y_min"]], NUM_OBJECTS), np.zeros(goal_dims)])
        high = np.concatenate([np.tile([WALLS["x_max"], WALLS["y_max"]], NUM_OBJECTS), np.ones(goal_dims)])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.action_space = spaces.Discrete(NUM_ACTIONS)

        self._program = 0  # the (first) program of the goal
        self._goal = (0,)  # all programs of the goal: (p,) or (p1, p2)
        self._level = levels[0]
        self._template = 0
        self._instruction = ""
        self._goal_str = PROGRAM_STRINGS[0]
        self._goal_enc = np.zeros(goal_dims, dtype=np.float32)
        self._steps = 0
        self._expert_data = None  # (scratch MjData, state buffer) for envs.clevr_expert's look-ahead
        self._render_grid = None

    # ------------------------------------------------------------------ public helpers
    def positions(self) -> np.ndarray:
        """Sphere (x, y) positions, shape (5, 2), float64 copy."""
        return self.data.qpos[self._xy_index].reshape(NUM_OBJECTS, 2)

    def set_positions(self, xy, check: bool = True) -> None:
        """Place the spheres at xy (5, 2) on the table, at rest; the pusher goes to PUSHER_HOME.

        With check=True, raises ValueError if a centre is outside the walls' range
        (|x| <= 0.47, -0.17 <= y <= 0.57) or two spheres overlap (centres < 0.26 apart).
        Does not change the goal or the step counter.
        """
        xy = np.asarray(xy, dtype=np.float64)
        if xy.shape != (NUM_OBJECTS, 2) or not np.all(np.isfinite(xy)):
            raise ValueError(f"positions must be a finite array of shape (5, 2), got shape {xy.shape}")
        if check:
            eps = 1e-9
            bad = (np.abs(xy[:, 0]) > X_LIMIT + eps) | (xy[:, 1] < Y_MIN - eps) | (xy[:, 1] > Y_MAX + eps)
            if bad.any():
                raise ValueError(
                    f"sphere(s) {[COLORS[i] for i in np.flatnonzero(bad)]} outside the walls: centres must "
                    f"satisfy |x| <= {X_LIMIT:.2f}, {Y_MIN:.2f} <= y <= {Y_MAX:.2f}; got {xy.tolist()}"
                )
            gaps = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(NUM_OBJECTS) * 9
            if gaps.min() < 2 * SPHERE_RADIUS - eps:
                i, j = np.unravel_index(np.argmin(gaps), gaps.shape)
                raise ValueError(
                    f"spheres {COLORS[i]} and {COLORS[j]} overlap (centres {gaps[i, j]:.3f} apart, "
                    f"need >= {2 * SPHERE_RADIUS})"
                )
        self._place(xy)

    def set_goal(self, goal, template: int | None = None, level: str | None = None) -> None:
        """Set the goal (program string, tuple or index; 'A and B' or a pair for a compose goal, 'A and B
        and C' or a triple for a hard goal), its wording level (None: the current level if it fits the goal,
        else the env's first level that fits, else 'compose' for a pair, 'hard' for a triple) and template (None: the level's first template)."""
        g = parse_goals(goal)
        if level is None:
            level = self._level if LEVEL_RELATIONS[self._level] == len(g) else self._level_for(g, None)
        level = self._check_level(level, g)
        pool_templates = self._pools[level][1] if level in self._pools else goal_pool(level)[1]
        self._set_goal(g, pool_templates[0] if template is None else self._check_template(template, level), level)

    def goal_holds(self) -> bool:
        """Whether the current goal (all relations of a compose / hard goal) holds in the current scene,
        under the env's success_test."""
        return goal_holds(self.positions(), self._goal, self.success_test)

    def programs_holding(self) -> np.ndarray:
        """bool (80,): which of the 80 programs hold in the current scene, under the env's success_test.

        The same test as `goal_holds(self.positions(), p, self.success_test)` for every program p,
        vectorised so that reset's compose / hard levels check their pairs / triples with one call (the
        original test compares sqrt(dist^2) < 0.7 where `_holds` compares dist^2 < 0.7^2: the two can
        differ only within a rounding error of the threshold; tests/test_clevr_robot.py checks that they
        agree on random scenes)."""
        pos = self.positions()
        diff = pos[_PROGRAM_T] - pos[_PROGRAM_F]
        dist2 = np.einsum("ij,ij->i", diff, diff)
        a = np.einsum("ij,ij->i", diff, _PROGRAM_DIR)
        if self.success_test == "kalm":
            b = np.einsum("ij,ij->i", diff, _PROGRAM_NORMAL)
            return (dist2 < KALM_MAX_DIST * KALM_MAX_DIST) & (-a <= b) & (b < a)
        dist = np.sqrt(dist2)
        return (dist < RELATION_MAX_DIST) & (a > RELATION_COS * dist)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"goal", "template", "level"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: 'goal', 'template', 'level'")
        fixed = parse_goals(options["goal"]) if options.get("goal") is not None else None
        rng = self.np_random
        level = options.get("level")
        if level is not None:
            level = self._check_level(level, fixed)
        else:  # one level: no draw (the single-level envs' random stream is the original one)
            level = self._level_for(fixed, rng)
        template = options.get("template")
        if template is not None:
            template = self._check_template(template, level)
        goals, templates = self._pools[level] if level in self._pools else goal_pool(level)
        for _ in range(1000):
            self._place(self._sample_positions())
            pos = self.positions()
            if fixed is not None:
                if not any(goal_holds(pos, p, self.success_test) for p in fixed):
                    goal = fixed
                    break
                continue
            if level in _GOAL_COLUMNS:  # compose / hard: every relation of the goal false
                holding = self.programs_holding()
                false = np.flatnonzero(~holding[_GOAL_COLUMNS[level]].any(axis=1))
                if false.size:
                    goal = goals[int(false[int(rng.integers(false.size))])]
                    break
                continue
            false = [p for p in goals if not goal_holds(pos, p, self.success_test)]
            if false:
                goal = (false[int(rng.integers(len(false)))],)
                break
        else:  # practically unreachable: 1000 scenes in which the goal holds
            raise RuntimeError(f"could not draw a scene in which goal {goal_string(fixed)!r} is false")
        if template is None:
            template = templates[int(rng.integers(len(templates)))]
        self._set_goal(goal, template, level)
        self._steps = 0
        return self._obs(), self._info(False)

    def step(self, action):
        try:
            a = operator.index(action)
        except TypeError:
            a = _as_int_action(action)
        if not 0 <= a < NUM_ACTIONS:
            raise ValueError(
                f"invalid action {action!r}: CLEVR-Robot actions are integers in [0, {NUM_ACTIONS}) = "
                f"object index (0-4: {', '.join(COLORS)}) * 8 + direction index (0-7)"
            )
        self._push(self.data, a)
        self._steps += 1
        success = self.goal_holds()
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        return self._obs(), (1.0 if success else 0.0), success, truncated, self._info(success)

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; make the env with render_mode='rgb_array'")
            return None
        return self._render_rgb()

    # ------------------------------------------------------------------ internals
    def _push(self, data: mujoco.MjData, action: int) -> None:
        """One push, action = object * 8 + direction (a valid int), on `data`: the env's own physics
        (`step`) or the expert's scratch copy (`envs.clevr_expert`). The pusher goes PUSH_OFFSET
        behind the sphere centre at rest, the motor controls are the direction, then
        PUSH_PHYSICS_STEPS steps."""
        obj, k = action >> 3, action & 7
        q = data.qpos
        qa = self._obj_qadr[obj]
        dx, dy = self._dir_x[k], self._dir_y[k]
        p, v = self._pusher_q, self._pusher_v
        q[p] = q[qa] - PUSH_OFFSET * dx
        q[p + 1] = q[qa + 1] - PUSH_OFFSET * dy
        data.qvel[v] = 0.0
        data.qvel[v + 1] = 0.0
        data.ctrl[0] = dx
        data.ctrl[1] = dy
        mujoco.mj_step(self.model, data, PUSH_PHYSICS_STEPS)

    def _check_template(self, template, level: str = "train") -> int:
        n = len(goal_pool(level)[1]) if level in ("rephrase", "compose", "hard") else len(TEMPLATES)
        if isinstance(template, (int, np.integer)) and not isinstance(template, bool) and 0 <= template < n:
            return int(template)
        what = "template" if n == len(TEMPLATES) else f"template of level {level!r}"
        raise ValueError(f"{what} must be an integer in [0, {n}), got {template!r}")

    def _check_level(self, level, goal: tuple[int, ...] | None) -> str:
        """Validate an explicitly asked level (any of SPLIT_NAMES) against goal_slots and the goal."""
        if level not in SPLIT_NAMES:
            raise ValueError(f"unknown level {level!r}; accepted: {', '.join(repr(s) for s in SPLIT_NAMES)}")
        n = LEVEL_RELATIONS[level]
        if n > self.goal_slots:
            raise ValueError(f"level {level!r} ({n} relations at once) needs an env made with goal_slots={n} or more")
        if goal is not None and n != len(goal):
            raise ValueError(
                f"level {level!r} does not fit goal {goal_string(goal)!r}: 'compose' words two-relation goals "
                f"('A and B'), 'hard' three-relation goals ('A and B and C'), the other levels one-relation goals"
            )
        return level

    def _level_for(self, goal: tuple[int, ...] | None, rng) -> str:
        """The level of an episode: one of the env's levels (drawn uniformly with `rng` when there are
        several) that fits `goal` (None: any)."""
        levels = self.levels
        if goal is not None:
            levels = tuple(lv for lv in levels if LEVEL_RELATIONS[lv] == len(goal))
            if not levels:
                if len(goal) > 1:
                    return self._check_level("compose" if len(goal) == 2 else "hard", goal)
                raise ValueError(
                    f"goal {goal_string(goal)!r} has one relation but this env's goal_split {self.goal_split!r} "
                    f"words goals of several relations only: pass options={{'level': 'train'}} (or another "
                    f"one-relation level)"
                )
        if len(levels) == 1 or rng is None:
            return levels[0]
        return levels[int(rng.integers(len(levels)))]

    def _set_goal(self, goal: tuple[int, ...], template: int, level: str) -> None:
        self._goal, self._program, self._template, self._level = goal, goal[0], template, level
        if len(goal) > self.goal_slots:
            raise ValueError(f"a {len(goal)}-relation goal needs an env made with goal_slots={len(goal)} or more")
        enc = np.zeros(self.goal_slots * GOAL_DIM, dtype=np.float32)
        for i, p in enumerate(goal):
            enc[i * GOAL_DIM : (i + 1) * GOAL_DIM] = _GOAL_ENCODINGS[p]
        self._goal_enc = enc
        self._instruction = level_text(level, goal if len(goal) > 1 else goal[0], template)
        self._goal_str = " and ".join(PROGRAM_STRINGS[p] for p in goal)

    def _info(self, success: bool) -> dict:
        return {"success": success, "instruction": self._instruction, "goal": self._goal_str, "level": self._level}

    def _obs(self) -> np.ndarray:
        obs = np.empty(self.obs_dim, dtype=np.float32)
        obs[:STATE_DIM] = self.data.qpos[self._xy_index]
        obs[STATE_DIM:] = self._goal_enc
        return obs

    def _sample_positions(self) -> np.ndarray:
        rng = self.np_random
        min_centre = 2 * SPHERE_RADIUS + MIN_SURFACE_DIST
        while True:
            placed: list[tuple[float, float]] = []
            for _ in range(NUM_OBJECTS):
                for _try in range(10):
                    x = min(max(rng.uniform(-0.5, 0.5), -X_LIMIT), X_LIMIT)
                    y = min(max(rng.uniform(-0.3, 0.5), Y_MIN), Y_MAX)
                    if all(
                        math.hypot(x - px, y - py) >= min_centre
                        and abs(x - px) >= MIN_AXIS_MARGIN
                        and abs(y - py) >= MIN_AXIS_MARGIN
                        for px, py in placed
                    ):
                        placed.append((x, y))
                        break
                else:
                    break  # redraw the whole scene
            if len(placed) == NUM_OBJECTS:
                return np.array(placed)

    def _place(self, xy: np.ndarray) -> None:
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)  # also clears the solver warm start: reproducible episodes
        for i, qa in enumerate(self._obj_qadr):
            d.qpos[qa : qa + 7] = (xy[i, 0], xy[i, 1], TABLE_Z + SPHERE_RADIUS, 1.0, 0.0, 0.0, 0.0)
        d.qpos[self._pusher_q : self._pusher_q + 2] = PUSHER_HOME
        mujoco.mj_forward(m, d)

    def _render_rgb(self) -> np.ndarray:
        if self._render_grid is None:
            w = int(round((_VIEW_X[1] - _VIEW_X[0]) * _PX_PER_M))
            h = int(round((_VIEW_Y[1] - _VIEW_Y[0]) * _PX_PER_M))
            xs = _VIEW_X[0] + (np.arange(w) + 0.5) / _PX_PER_M
            ys = _VIEW_Y[0] + (np.arange(h) + 0.5) / _PX_PER_M
            gx, gy = np.meshgrid(xs, ys)  # row = y (behind at the top), column = x
            base = np.empty((h, w, 3), dtype=np.uint8)
            base[:] = (40, 40, 48)  # floor outside the walls
            wall = (gx >= WALLS["x_min"] - 0.02) & (gx <= WALLS["x_max"] + 0.02)
            wall &= (gy >= WALLS["y_min"] - 0.02) & (gy <= WALLS["y_max"] + 0.02)
            base[wall] = (90, 90, 100)
            inside = (gx >= WALLS["x_min"]) & (gx <= WALLS["x_max"]) & (gy >= WALLS["y_min"]) & (gy <= WALLS["y_max"])
            base[inside] = (200, 200, 200)
            self._render_grid = (gx, gy, base)
        gx, gy, base = self._render_grid
        img = base.copy()
        pos = self.positions()
        for i in range(NUM_OBJECTS):
            r2 = (gx - pos[i, 0]) ** 2 + (gy - pos[i, 1]) ** 2
            img[r2 <= SPHERE_RADIUS**2] = (0, 0, 0)
            img[r2 <= (SPHERE_RADIUS - 0.006) ** 2] = COLOR_RGB[i]
        px, py = self.data.qpos[self._pusher_q], self.data.qpos[self._pusher_q + 1]
        r2 = (gx - px) ** 2 + (gy - py) ** 2
        img[r2 <= 0.05**2] = (0, 0, 0)
        img[r2 <= 0.044**2] = (255, 255, 255)
        return img


def _as_int_action(action) -> int:
    arr = np.asarray(action)
    if arr.size == 1 and np.issubdtype(arr.dtype, np.integer):
        return int(arr.reshape(-1)[0])
    raise ValueError(
        f"invalid action {action!r}: CLEVR-Robot actions are integers in [0, {NUM_ACTIONS}) = "
        f"object index (0-4: {', '.join(COLORS)}) * 8 + direction index (0-7)"
    )
