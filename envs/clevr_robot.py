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

Relations (`relation_holds(pos_a, pos_b, relation)`): with u = (B - A) / |B - A|,
    "B is R of A" iff u . dir_R > 0.6 and |B - A| < 0.7 (both strict), where
    left = (-1, 0), right = (+1, 0), behind = (0, -1), front = (0, +1) on the table plane
    (the original's camera at azimuth 90 / elevation -45 gives exactly these vectors).

Goals: 80 programs (target colour, relation, reference colour), target != reference,
    program string "<target> <relation>_of <reference>", e.g. "red left_of blue" = "the red
    sphere is to the left of the blue sphere" = relation_holds(pos[blue], pos[red], "left").
    Each program has `len(TEMPLATES)` = 10 natural-language paraphrases (our own wording;
    question forms as in the original and imperative forms). At reset a (program, template)
    pair is drawn uniformly among the pairs of the chosen `goal_split` whose program is
    currently FALSE (the scene is redrawn if none is), so an episode never starts solved.
    `reset(options={"goal": "red left_of blue"})` fixes the program (any of the 80, whatever
    the split; the scene is redrawn until it is false) and `options={"template": k}` the
    paraphrase. Unknown programs / templates raise ValueError.

Train / held-out split (deterministic, no randomness involved)
    Programs are indexed in the order of `PROGRAMS` (target colour, then relation, then
    reference colour, each in the order of COLORS / RELATIONS). With colour and relation
    indices c_t, r, c_ref, a program is HELD OUT iff (c_t + r + c_ref) % 5 == 0: 16 of the 80
    programs (20%), one for each (target, relation) pair with (2 c_t + r) % 5 != 0. Every
    colour (as target and as reference) and every relation still appears in the 64 train
    programs, so held-out programs are new combinations of known words (systematic
    generalisation). Templates `HELDOUT_TEMPLATES` = (2, 6, 8) (one question, one
    declarative, one imperative form) are held out; the other 7 are train templates.
      goal_split="train":   train programs x train templates      (64 x 7 = 448 instructions)
      goal_split="heldout": held-out programs x held-out templates (16 x 3 = 48 instructions)
      goal_split="all":     all programs x all templates           (80 x 10 = 800 instructions)
    The two intermediate combinations (unseen phrasing of a seen goal, seen phrasing of an
    unseen goal) are part of "all" only.

Reward, termination, truncation
    info["success"] is True iff the goal program holds after the step. Reward is 1.0 and
    `terminated` is True on that step, 0.0 / False otherwise. `truncated` is True once
    `max_episode_steps` steps have been taken (default 50). The original runs 100 steps
    without termination (it was built for goal relabelling); KALM uses 50, and so do we: the
    scripted expert needs 2-3 pushes on average (at most a handful), so 50 leaves a wide margin
    for exploring policies while keeping PPO rollouts and demonstrations short. Through
    `gymnasium.make("CLEVR-Robot-v0")` the limit is gymnasium's TimeLimit wrapper (registered
    `max_episode_steps=50`, so `gymnasium.make(..., max_episode_steps=N)` works as usual)
    and the env's own counter is off; `ClevrRobotEnv(max_episode_steps=N)` truncates itself.
    info at reset and every step: "success" (bool), "instruction" (str), "goal" (str).

Seeding: all randomness (scene, goal, paraphrase) comes from `self.np_random`, so
    `reset(seed=s)` followed by the same actions gives identical episodes; physics state
    (including the solver's warm start) is reset at every reset.

Rendering: `render_mode="rgb_array"` returns a top-down uint8 image (H, W, 3) drawn with numpy
    (no OpenGL needed): grey table inside the walls (dark border), spheres in their colours,
    the pusher in white. Image right = +x ("right"), image up = -y ("behind"), image down =
    +y ("front"): the view of someone standing in front of the table.

Scripted expert: `expert_action(env, noise=0.0, rng=None)` is a one-step model-predictive
    planner: it simulates each push of the target and of the reference sphere (16 actions) on
    a copy of the physics state (the exact outcome), scores the resulting scene by the
    distance of the target to the nearest free spot that satisfies the relation with a margin
    (or, where the walls leave no such spot, by how far the reference must move first), and
    takes the best; if no such push makes progress it considers all 40 actions. With
    probability `noise` it returns a uniformly random action instead. `collect_demos(...)`
    rolls it out and returns the project's demonstration dict.
"""

from __future__ import annotations

import difflib
import math
import operator
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

ENV_ID = "CLEVR-Robot-v0"
COLORS = ("red", "blue", "green", "purple", "cyan")
COLOR_RGB = ((255, 26, 26), (51, 128, 255), (51, 255, 0), (204, 51, 255), (51, 255, 255))  # the original's rgba
RELATIONS = ("left", "right", "behind", "front")
RELATION_VECTORS = np.array([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
DIRECTIONS = np.array(
    [[1, 0], [0, 1], [-1, 0], [0, -1], [0.8, 0.8], [-0.8, 0.8], [0.8, -0.8], [-0.8, -0.8]], dtype=np.float64
)
NUM_OBJECTS = 5
NUM_ACTIONS = NUM_OBJECTS * len(DIRECTIONS)  # 40
STATE_DIM = 2 * NUM_OBJECTS  # 10
GOAL_DIM = len(COLORS) + len(RELATIONS) + len(COLORS)  # 14
OBS_DIM = STATE_DIM + GOAL_DIM  # 24
GOAL_SPLITS = ("train", "heldout", "all")

SPHERE_RADIUS = 0.13
TABLE_Z = -0.325
WALLS = {"x_min": -0.6, "x_max": 0.6, "y_min": -0.3, "y_max": 0.7}
# where a sphere centre can be: the walls minus the radius
X_LIMIT = WALLS["x_max"] - SPHERE_RADIUS  # 0.47
Y_MIN = WALLS["y_min"] + SPHERE_RADIUS  # -0.17
Y_MAX = WALLS["y_max"] - SPHERE_RADIUS  # 0.57
RELATION_COS = 0.6  # u . dir_R must exceed this
RELATION_MAX_DIST = 0.7  # |B - A| must be below this
PUSH_OFFSET = 0.15  # the pusher starts this far behind the sphere centre
PUSH_PHYSICS_STEPS = 40  # 2 * frame_skip(20) physics steps of 0.01 s
PUSHER_HOME = (0.0, -0.45)
MIN_SURFACE_DIST = 0.1
MIN_AXIS_MARGIN = 0.01

# ---------------------------------------------------------------------------------------
# Goals: programs, paraphrase templates and the train / held-out split
# ---------------------------------------------------------------------------------------
PROGRAMS = tuple(
    (t, r, f) for t in range(len(COLORS)) for r in range(len(RELATIONS)) for f in range(len(COLORS)) if f != t
)
PROGRAM_STRINGS = tuple(f"{COLORS[t]} {RELATIONS[r]}_of {COLORS[f]}" for t, r, f in PROGRAMS)
_PROGRAM_INDEX = {s: i for i, s in enumerate(PROGRAM_STRINGS)}
HELDOUT_PROGRAMS = tuple(i for i, (t, r, f) in enumerate(PROGRAMS) if (t + r + f) % 5 == 0)
TRAIN_PROGRAMS = tuple(i for i in range(len(PROGRAMS)) if i not in HELDOUT_PROGRAMS)

# Relation phrases; a template picks variant `template_index % 3`.
RELATION_PHRASES = {
    "left": ("to the left of", "left of", "on the left side of"),
    "right": ("to the right of", "right of", "on the right side of"),
    "behind": ("behind", "behind", "behind"),
    "front": ("in front of", "in front of", "in front of"),
}
# {t}: target colour, {f}: reference colour, {rel}: relation phrase. Our own wording.
TEMPLATES = (
    "There is a {f} ball; is there a {t} rubber sphere {rel} it?",  # 0 question
    "Is the {t} sphere {rel} the {f} sphere?",  # 1 question
    "Can you see a {t} ball {rel} the {f} ball?",  # 2 question      (held out)
    "Push the {t} ball {rel} the {f} ball.",  # 3 imperative
    "Move the {t} sphere so that it is {rel} the {f} sphere.",  # 4 imperative
    "Put the {t} ball {rel} the {f} one.",  # 5 imperative
    "The {t} sphere should end up {rel} the {f} sphere.",  # 6 declarative   (held out)
    "Look at the {f} sphere: are there any {t} balls {rel} it?",  # 7 question
    "Get the {t} object {rel} the {f} object.",  # 8 imperative    (held out)
    "Make sure the {t} ball sits {rel} the {f} ball.",  # 9 imperative
)
HELDOUT_TEMPLATES = (2, 6, 8)
TRAIN_TEMPLATES = tuple(i for i in range(len(TEMPLATES)) if i not in HELDOUT_TEMPLATES)


def instruction_text(program: int | str, template: int) -> str:
    """The natural-language instruction of `program` (index or string) in paraphrase `template`."""
    p = parse_goal(program)
    if not isinstance(template, (int, np.integer)) or not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template must be an integer in [0, {len(TEMPLATES)}), got {template!r}")
    t, r, f = PROGRAMS[p]
    rel = RELATION_PHRASES[RELATIONS[r]][template % 3]
    return TEMPLATES[template].format(t=COLORS[t], f=COLORS[f], rel=rel)


def goal_pool(goal_split: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(program indices, template indices) of a goal split; see the module docstring."""
    if goal_split == "train":
        return TRAIN_PROGRAMS, TRAIN_TEMPLATES
    if goal_split == "heldout":
        return HELDOUT_PROGRAMS, HELDOUT_TEMPLATES
    if goal_split == "all":
        return tuple(range(len(PROGRAMS))), tuple(range(len(TEMPLATES)))
    raise ValueError(f"unknown goal_split {goal_split!r}; accepted: {', '.join(repr(s) for s in GOAL_SPLITS)}")


def split_instructions(goal_split: str) -> list[str]:
    """Every instruction string of a goal split (for building vocabularies, checking overlap...)."""
    programs, templates = goal_pool(goal_split)
    return [instruction_text(p, k) for p in programs for k in templates]


def parse_goal(goal: int | str | tuple) -> int:
    """Program index of a goal given as index, program string "red left_of blue", or a
    (target, relation, reference) tuple of names. Raises ValueError with the accepted forms."""
    if isinstance(goal, (int, np.integer)) and not isinstance(goal, bool):
        if 0 <= goal < len(PROGRAMS):
            return int(goal)
        raise ValueError(f"goal index must be in [0, {len(PROGRAMS)}), got {goal}")
    if isinstance(goal, tuple) and len(goal) == 3 and all(isinstance(g, str) for g in goal):
        goal = f"{goal[0]} {goal[1]}_of {goal[2]}"
    if isinstance(goal, str):
        key = " ".join(goal.strip().lower().split())
        if key in _PROGRAM_INDEX:
            return _PROGRAM_INDEX[key]
        close = difflib.get_close_matches(key, PROGRAM_STRINGS, n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(
            f"unknown goal program {goal!r}. A program is '<target> <relation>_of <reference>' with two "
            f"different colours from {COLORS} and a relation from {RELATIONS}, e.g. 'red left_of blue'.{hint}"
        )
    raise ValueError(
        f"goal must be a program string like 'red left_of blue', a (target, relation, reference) tuple "
        f"or a program index in [0, {len(PROGRAMS)}), got {goal!r}"
    )


def goal_encoding(program: int | str) -> np.ndarray:
    """The fixed-size float32 goal encoding (GOAL_DIM,) of a program: one-hots target|relation|reference."""
    t, r, f = PROGRAMS[parse_goal(program)]
    enc = np.zeros(GOAL_DIM, dtype=np.float32)
    enc[t] = 1.0
    enc[len(COLORS) + r] = 1.0
    enc[len(COLORS) + len(RELATIONS) + f] = 1.0
    return enc


_GOAL_ENCODINGS = np.stack([goal_encoding(i) for i in range(len(PROGRAMS))])


def relation_holds(pos_a, pos_b, relation: str) -> bool:
    """True iff "B is <relation> of A": u = (B - A)/|B - A|, u . dir > 0.6 and |B - A| < 0.7.

    pos_a is the reference, pos_b the target: "red left_of blue" is relation_holds(blue, red, "left").
    """
    try:
        d = RELATION_VECTORS[RELATIONS.index(relation)]
    except ValueError:
        raise ValueError(f"unknown relation {relation!r}; accepted: {RELATIONS}") from None
    return _holds(float(pos_b[0]) - float(pos_a[0]), float(pos_b[1]) - float(pos_a[1]), d[0], d[1])


def _holds(dx: float, dy: float, ux: float, uy: float) -> bool:
    dist2 = dx * dx + dy * dy
    if dist2 >= RELATION_MAX_DIST * RELATION_MAX_DIST:
        return False
    return bool(dx * ux + dy * uy > RELATION_COS * math.sqrt(dist2))


def goal_holds(positions, program: int | str) -> bool:
    """Whether a goal program holds for sphere positions (5, 2) (or a flat 10-vector)."""
    t, r, f = PROGRAMS[parse_goal(program)]
    pos = np.asarray(positions, dtype=np.float64).reshape(NUM_OBJECTS, 2)
    d = RELATION_VECTORS[r]
    return _holds(pos[t, 0] - pos[f, 0], pos[t, 1] - pos[f, 1], d[0], d[1])


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
    ):
        goal_pool(goal_split)  # validates
        if max_episode_steps is not None and (
            not isinstance(max_episode_steps, (int, np.integer)) or max_episode_steps < 1
        ):
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unsupported render_mode {render_mode!r}; accepted: None, 'rgb_array'")
        self.goal_split = goal_split
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.render_mode = render_mode
        self._programs, self._templates = goal_pool(goal_split)

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
        self._rel_x = [float(v[0]) for v in RELATION_VECTORS]
        self._rel_y = [float(v[1]) for v in RELATION_VECTORS]

        low = np.concatenate([np.tile([WALLS["x_min"], WALLS["y_min"]], NUM_OBJECTS), np.zeros(GOAL_DIM)])
        high = np.concatenate([np.tile([WALLS["x_max"], WALLS["y_max"]], NUM_OBJECTS), np.ones(GOAL_DIM)])
        self.observation_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.action_space = spaces.Discrete(NUM_ACTIONS)

        self._program = 0
        self._template = 0
        self._instruction = ""
        self._goal_t = self._goal_f = 0
        self._goal_ux = self._goal_uy = 0.0
        self._goal_enc = _GOAL_ENCODINGS[0]
        self._steps = 0
        self._expert_data = None  # (scratch MjData, state buffer) for expert_action's look-ahead
        self._render_grid = None

    # ------------------------------------------------------------------ public helpers
    @property
    def program(self) -> str:
        """The current goal program string, e.g. 'red left_of blue'."""
        return PROGRAM_STRINGS[self._program]

    @property
    def instruction(self) -> str:
        """The current natural-language instruction."""
        return self._instruction

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

    def set_goal(self, goal, template: int | None = None) -> None:
        """Set the goal program (string, tuple or index) and paraphrase (None: first of the split's templates)."""
        self._set_goal(parse_goal(goal), self._templates[0] if template is None else self._check_template(template))

    def goal_holds(self) -> bool:
        """Whether the current goal holds in the current scene."""
        q = self.data.qpos
        at, af = self._obj_qadr[self._goal_t], self._obj_qadr[self._goal_f]
        return _holds(q[at] - q[af], q[at + 1] - q[af + 1], self._goal_ux, self._goal_uy)

    # ------------------------------------------------------------------ gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"goal", "template"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; accepted: 'goal', 'template'")
        fixed = parse_goal(options["goal"]) if options.get("goal") is not None else None
        template = options.get("template")
        if template is not None:
            template = self._check_template(template)
        rng = self.np_random
        for _ in range(1000):
            self._place(self._sample_positions())
            if fixed is not None:
                if not self.goal_holds_program(fixed):
                    program = fixed
                    break
                continue
            false = [p for p in self._programs if not self.goal_holds_program(p)]
            if false:
                program = false[int(rng.integers(len(false)))]
                break
        else:  # practically unreachable: 1000 scenes in which the goal holds
            raise RuntimeError(f"could not draw a scene in which goal {PROGRAM_STRINGS[fixed]!r} is false")
        if template is None:
            template = self._templates[int(rng.integers(len(self._templates)))]
        self._set_goal(program, template)
        self._steps = 0
        return self._obs(), {"success": False, "instruction": self._instruction, "goal": PROGRAM_STRINGS[program]}

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
        obj, k = a >> 3, a & 7
        d = self.data
        q = d.qpos
        qa = self._obj_qadr[obj]
        dx, dy = self._dir_x[k], self._dir_y[k]
        p = self._pusher_q
        q[p] = q[qa] - PUSH_OFFSET * dx
        q[p + 1] = q[qa + 1] - PUSH_OFFSET * dy
        v = self._pusher_v
        d.qvel[v] = 0.0
        d.qvel[v + 1] = 0.0
        d.ctrl[0] = dx
        d.ctrl[1] = dy
        mujoco.mj_step(self.model, d, PUSH_PHYSICS_STEPS)
        self._steps += 1
        success = self.goal_holds()
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"success": success, "instruction": self._instruction, "goal": PROGRAM_STRINGS[self._program]}
        return self._obs(), (1.0 if success else 0.0), success, truncated, info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None; make the env with render_mode='rgb_array'")
            return None
        return self._render_rgb()

    # ------------------------------------------------------------------ internals
    def goal_holds_program(self, program: int) -> bool:
        """Whether program (index) holds in the current scene."""
        t, r, f = PROGRAMS[program]
        q = self.data.qpos
        at, af = self._obj_qadr[t], self._obj_qadr[f]
        return _holds(q[at] - q[af], q[at + 1] - q[af + 1], self._rel_x[r], self._rel_y[r])

    def _check_template(self, template) -> int:
        if isinstance(template, (int, np.integer)) and not isinstance(template, bool) and 0 <= template < len(TEMPLATES):
            return int(template)
        raise ValueError(f"template must be an integer in [0, {len(TEMPLATES)}), got {template!r}")

    def _set_goal(self, program: int, template: int) -> None:
        self._program, self._template = program, template
        t, r, f = PROGRAMS[program]
        self._goal_t, self._goal_f = t, f
        self._goal_ux, self._goal_uy = self._rel_x[r], self._rel_y[r]
        self._goal_enc = _GOAL_ENCODINGS[program]
        self._instruction = instruction_text(program, template)

    def _obs(self) -> np.ndarray:
        obs = np.empty(OBS_DIM, dtype=np.float32)
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


# ---------------------------------------------------------------------------------------
# Scripted expert and demonstrations
# ---------------------------------------------------------------------------------------
# The expert aims the target at spots that satisfy the relation with a margin.
_EXPERT_COS = 0.72
_EXPERT_DIST = (0.30, 0.60)
_EXPERT_BOX = (X_LIMIT - 0.01, Y_MIN + 0.01, Y_MAX - 0.01)
_gx, _gy = np.meshgrid(
    np.arange(-_EXPERT_BOX[0], _EXPERT_BOX[0] + 1e-9, 0.02), np.arange(_EXPERT_BOX[1], _EXPERT_BOX[2] + 1e-9, 0.02)
)
_EXPERT_GRID = np.stack([_gx.ravel(), _gy.ravel()], axis=1)
# Where the reference must be for a margin spot to exist inside the walls (per relation):
# offset along the relation axis of the nearest margin spot = min distance * cos margin.
_AXIS_OFFSET = _EXPERT_DIST[0] * _EXPERT_COS


def _reference_infeasibility(ref: np.ndarray, r: int) -> float:
    """How far the reference is from where a margin spot for relation r fits inside the walls."""
    x, y = ref
    if r == 0:  # left: target needs x <= ref_x - offset >= -X
        return max(0.0, -_EXPERT_BOX[0] + _AXIS_OFFSET - x)
    if r == 1:
        return max(0.0, x - (_EXPERT_BOX[0] - _AXIS_OFFSET))
    if r == 2:  # behind: smaller y
        return max(0.0, _EXPERT_BOX[1] + _AXIS_OFFSET - y)
    return max(0.0, y - (_EXPERT_BOX[2] - _AXIS_OFFSET))


def _expert_cost(pos: np.ndarray, program: int) -> float:
    """0 when the goal holds; else distance of the target to the nearest free margin spot
    (1 + the reference's infeasibility when no such spot exists)."""
    t, r, f = PROGRAMS[program]
    if goal_holds(pos, program):
        return 0.0
    diff = _EXPERT_GRID - pos[f]
    dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    ok = (diff @ RELATION_VECTORS[r] > _EXPERT_COS * dist) & (dist > _EXPERT_DIST[0]) & (dist < _EXPERT_DIST[1])
    for o in range(NUM_OBJECTS):
        if o != t and o != f:
            od = _EXPERT_GRID - pos[o]
            ok &= np.einsum("ij,ij->i", od, od) > (2 * SPHERE_RADIUS + 0.02) ** 2
    if ok.any():
        g = _EXPERT_GRID[ok] - pos[t]
        return 0.01 + float(np.sqrt(np.einsum("ij,ij->i", g, g).min()))
    return 1.0 + _reference_infeasibility(pos[f], r)


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
    obj, k = action >> 3, action & 7
    qa = env._obj_qadr[obj]
    p, v = env._pusher_q, env._pusher_v
    dx, dy = env._dir_x[k], env._dir_y[k]
    sd.qpos[p] = sd.qpos[qa] - PUSH_OFFSET * dx
    sd.qpos[p + 1] = sd.qpos[qa + 1] - PUSH_OFFSET * dy
    sd.qvel[v] = sd.qvel[v + 1] = 0.0
    sd.ctrl[0], sd.ctrl[1] = dx, dy
    mujoco.mj_step(m, sd, PUSH_PHYSICS_STEPS)
    return sd.qpos[env._xy_index].reshape(NUM_OBJECTS, 2)


def expert_action(env, noise: float = 0.0, rng: np.random.Generator | None = None) -> int:
    """Scripted expert: the push (of the target or reference sphere, else any) whose simulated
    outcome brings the goal closest (see `_expert_cost`). `env` may be wrapped (gym.make).

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
    program = env._program
    t, _, f = PROGRAMS[program]
    current = _expert_cost(env.positions(), program)
    first = [t * 8 + k for k in range(8)] + [f * 8 + k for k in range(8)]
    best_a, best_c = first[0], math.inf
    for a in first:
        c = _expert_cost(_simulate(env, a), program)
        if c < best_c:
            best_a, best_c = a, c
        if c == 0.0:
            return a
    if best_c < current - 1e-3:
        return best_a
    for a in range(NUM_ACTIONS):  # no progress with the two goal spheres: try the others too
        if a in first:
            continue
        c = _expert_cost(_simulate(env, a), program)
        if c < best_c:
            best_a, best_c = a, c
    return best_a


def collect_demos(
    num_episodes: int,
    noise: float = 0.0,
    goal_split: str = "train",
    seed: int = 0,
    max_episode_steps: int = 50,
) -> dict:
    """Roll out the scripted expert; returns the project's demonstration dict.

    observations float32 [N, 24] (full env observation before each action), actions int64 [N]
    (the executed, possibly noisy, actions), instructions unicode [N], episode_ids int64 [N],
    episode_success bool [E], env_id "CLEVR-Robot-v0", state_dim 10. Failed episodes are kept
    (episode_success False). Deterministic given the arguments: the env is seeded once with
    `seed` and the noise generator with `seed + 1`.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    env = ClevrRobotEnv(max_episode_steps=max_episode_steps, goal_split=goal_split)
    rng = np.random.default_rng(seed + 1)
    obs_l, act_l, ins_l, ep_l, succ = [], [], [], [], []
    for ep in range(num_episodes):
        obs, info = env.reset(seed=seed if ep == 0 else None)
        done = False
        success = False
        while not done:
            a = expert_action(env, noise=noise, rng=rng)
            obs_l.append(obs)
            act_l.append(a)
            ins_l.append(info["instruction"])
            ep_l.append(ep)
            obs, _, terminated, truncated, info = env.step(a)
            success = bool(info["success"])
            done = terminated or truncated
        succ.append(success)
    return {
        "observations": np.stack(obs_l).astype(np.float32),
        "actions": np.asarray(act_l, dtype=np.int64),
        "instructions": np.asarray(ins_l, dtype=np.str_),
        "episode_ids": np.asarray(ep_l, dtype=np.int64),
        "episode_success": np.asarray(succ, dtype=bool),
        "env_id": ENV_ID,
        "state_dim": STATE_DIM,
    }
