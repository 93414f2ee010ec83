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
    one-relation goal fills slot 1 and leaves slot 2 zeros, a "compose" goal fills both.

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

Instruction levels (after KALM's evaluation): `LEVELS` = ("train", "heldout", "rephrase", "compose")
      goal_split="rephrase": all 80 programs x 8 `REPHRASE_TEMPLATES` (640 instructions) in words
        no other instruction uses: colour synonyms `COLOR_SYNONYMS` (red: crimson / scarlet, blue:
        azure / navy, green: emerald / lime, purple: violet / lilac, cyan: turquoise / teal),
        relation wordings `RELATION_SYNONYMS` (left: "to the west of" / "farther west than", right:
        east, behind: "to the north of" / "farther from the viewer than", front: "to the south of"
        / "closer to the viewer than") and new frames (orb / marble / globe). Frame k takes
        target synonym k & 1, reference synonym (k >> 1) & 1, relation wording (k >> 2) & 1.
      goal_split="compose": two relations at once. Goals `COMPOSE_GOALS`: the 1840 unordered pairs
        (p1 < p2) of TRAIN programs about two different pairs of spheres (so never contradictory
        or equivalent); both must be false at reset; success (reward 1, termination) iff both
        hold. Text (`COMPOSE_FRAMES`, 16): a train imperative phrasing (templates 3, 4, 5, 9) of
        p1 and one of p2 joined by " and " (29,440 instructions). Needs `goal_slots=2`.
    A mixture, goal_split="train+rephrase+heldout+compose" ("+"-joined distinct LEVELS), draws the
    level of each episode uniformly with `np_random` (then the goal among the level's false goals);
    a single level or split draws no level, so its random stream is the one above.
    `level_instructions(level)` lists a level's instructions, `split_instructions` a split's or
    mixture's. `reset(options={"level": ...})` fixes the level; options "goal" also takes
    "A and B" (or a pair) for a compose goal; "template" indexes the level's frames.

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
    info at reset and every step: "success" (bool), "instruction" (str), "goal" (str, "A and B"
    for a compose goal), "level" (str, e.g. "train", "rephrase").

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
    takes the best; if no such push makes progress it considers all 40 actions. Two-relation
    goals: see `_compose_expert_action`; rephrased goals are the same programs. With
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


# ---------------------------------------------------------------------------------------
# Instruction levels beyond train / heldout (after KALM's evaluation): "rephrase", "compose"
# ---------------------------------------------------------------------------------------
LEVELS = ("train", "heldout", "rephrase", "compose")
SPLIT_NAMES = ("train", "heldout", "all", "rephrase", "compose")  # what goal_split accepts alone

# rephrase: every program in words no train/held-out instruction uses (fixed by hand from ordinary
# English, not tuned to any model). Compass words follow the top-down view: right = +x = east,
# behind = -y = north (image up); the viewer stands in front of the table.
COLOR_SYNONYMS = {
    "red": ("crimson", "scarlet"),
    "blue": ("azure", "navy"),
    "green": ("emerald", "lime"),
    "purple": ("violet", "lilac"),
    "cyan": ("turquoise", "teal"),
}
RELATION_SYNONYMS = {
    "left": ("to the west of", "farther west than"),
    "right": ("to the east of", "farther east than"),
    "behind": ("to the north of", "farther from the viewer than"),
    "front": ("to the south of", "closer to the viewer than"),
}
# Frame k uses target synonym k & 1, reference synonym (k >> 1) & 1, relation synonym (k >> 2) & 1:
# the 8 frames cover each of the 8 combinations once.
REPHRASE_TEMPLATES = (
    "Slide the {t} orb {rel} the {f} orb.",
    "I would like the {t} marble to be {rel} the {f} marble.",
    "Could you shove the {t} globe {rel} the {f} globe?",
    "Arrange the table so that the {t} orb lies {rel} the {f} orb.",
    "Is the {t} marble located {rel} the {f} marble?",
    "Nudge the {t} globe until it rests {rel} the {f} globe.",
    "Find the {f} orb and bring the {t} orb {rel} it.",
    "Your task: the {t} marble must finish {rel} the {f} marble.",
)

# compose: two train programs at once. The pairs: unordered pairs of TRAIN programs (in index
# order) that are about two different pairs of spheres (so never contradictory nor equivalent,
# e.g. "red left_of blue" / "blue right_of red"); 1840 pairs. Text: two train imperative
# phrasings joined by " and " (frame = (template of goal 1, template of goal 2)), 16 frames.
_IMPERATIVE_TRAIN_TEMPLATES = (3, 4, 5, 9)
COMPOSE_FRAMES = tuple((a, b) for a in _IMPERATIVE_TRAIN_TEMPLATES for b in _IMPERATIVE_TRAIN_TEMPLATES)
COMPOSE_GOALS = tuple(
    (a, b)
    for i, a in enumerate(TRAIN_PROGRAMS)
    for b in TRAIN_PROGRAMS[i + 1 :]
    if {PROGRAMS[a][0], PROGRAMS[a][2]} != {PROGRAMS[b][0], PROGRAMS[b][2]}
)
_COMPOSE_FIRST = np.array([a for a, _ in COMPOSE_GOALS])
_COMPOSE_SECOND = np.array([b for _, b in COMPOSE_GOALS])


def rephrase_text(program: int | str, template: int) -> str:
    """The "rephrase" instruction of `program` in frame `template` of REPHRASE_TEMPLATES."""
    p = parse_goal(program)
    if not isinstance(template, (int, np.integer)) or not 0 <= template < len(REPHRASE_TEMPLATES):
        raise ValueError(f"rephrase template must be an integer in [0, {len(REPHRASE_TEMPLATES)}), got {template!r}")
    t, r, f = PROGRAMS[p]
    return REPHRASE_TEMPLATES[template].format(
        t=COLOR_SYNONYMS[COLORS[t]][template & 1],
        f=COLOR_SYNONYMS[COLORS[f]][(template >> 1) & 1],
        rel=RELATION_SYNONYMS[RELATIONS[r]][(template >> 2) & 1],
    )


def compose_text(goal, template: int) -> str:
    """The "compose" instruction of a two-program goal in frame `template` of COMPOSE_FRAMES."""
    a, b = _parse_pair(goal)
    if not isinstance(template, (int, np.integer)) or not 0 <= template < len(COMPOSE_FRAMES):
        raise ValueError(f"compose template must be an integer in [0, {len(COMPOSE_FRAMES)}), got {template!r}")
    ka, kb = COMPOSE_FRAMES[template]
    second = instruction_text(b, kb)
    return instruction_text(a, ka).rstrip(".") + " and " + second[0].lower() + second[1:]


def goal_string(goal) -> str:
    """Program string of a goal: 'red left_of blue', or 'red left_of blue and green front_of cyan'."""
    return " and ".join(PROGRAM_STRINGS[p] for p in parse_goals(goal))


def level_text(level: str, goal, template: int) -> str:
    """The instruction of `goal` worded by `level` (one of SPLIT_NAMES) in its template `template`."""
    if level == "rephrase":
        return rephrase_text(goal, template)
    if level == "compose":
        return compose_text(goal, template)
    _check_split_name(level)
    return instruction_text(goal, template)


def _check_split_name(name) -> str:
    if name not in SPLIT_NAMES:
        raise ValueError(
            f"unknown goal_split {name!r}; accepted: {', '.join(repr(s) for s in SPLIT_NAMES)}, or a '+'-joined "
            f"mixture of levels from {LEVELS}, e.g. 'train+rephrase+heldout+compose'"
        )
    return name


def parse_goal_split(goal_split: str) -> tuple[str, ...]:
    """The levels of a goal_split: ('train',) for "train", ('train', 'compose') for "train+compose".

    A mixture is two or more distinct names of LEVELS joined by "+"; "all" stands alone.
    Raises ValueError saying what is accepted."""
    if not isinstance(goal_split, str):
        _check_split_name(goal_split)
    if "+" not in goal_split:
        return (_check_split_name(goal_split),)
    parts = tuple(s.strip() for s in goal_split.split("+"))
    for s in parts:
        if s not in LEVELS:
            raise ValueError(
                f"unknown level {s!r} in goal_split mixture {goal_split!r}; a mixture joins two or more distinct "
                f"levels from {LEVELS} with '+', e.g. 'train+rephrase+heldout+compose'"
            )
    if len(set(parts)) != len(parts):
        raise ValueError(f"goal_split mixture {goal_split!r} names a level twice; each level of {LEVELS} at most once")
    return parts


def run_levels(goal_split: str, eval_levels: str | None = None) -> tuple[list[str], int | None]:
    """The instruction levels of a PPO run: (levels evaluated at the end, goal_slots of every env: 2 if a training or
    evaluated level is "compose", else None, the env's default). `eval_levels` is a comma list (None: train, heldout,
    then the other levels of goal_split). Raises ValueError naming the PPO scripts' flag and what is accepted."""
    try:
        train_levels = parse_goal_split(goal_split)
    except ValueError as e:
        raise ValueError(f"--goal-split: {e}") from None
    if eval_levels is None:
        evaluated = ["train", "heldout"] + [level for level in train_levels if level not in ("train", "heldout")]
    else:
        evaluated = [s.strip() for s in eval_levels.split(",")]
        for s in evaluated:
            if s not in SPLIT_NAMES:
                raise ValueError(
                    f"unknown level {s!r} in --eval-levels {eval_levels!r}; accepted: a comma list of "
                    f"{', '.join(SPLIT_NAMES)} (each at most once), e.g. train,heldout,rephrase,compose"
                )
        if len(set(evaluated)) != len(evaluated):
            raise ValueError(
                f"--eval-levels {eval_levels!r} names a level twice; each of {', '.join(SPLIT_NAMES)} at most once"
            )
    goal_slots = 2 if "compose" in (*train_levels, *evaluated) else None
    return evaluated, goal_slots


def goal_pool(goal_split: str) -> tuple[tuple, tuple[int, ...]]:
    """(goals, template indices) of one level / split (not a mixture); see the module docstring.

    goals are program indices, except for "compose" where they are (program, program) pairs
    (COMPOSE_GOALS). Template indices index TEMPLATES, REPHRASE_TEMPLATES or COMPOSE_FRAMES."""
    if goal_split == "train":
        return TRAIN_PROGRAMS, TRAIN_TEMPLATES
    if goal_split == "heldout":
        return HELDOUT_PROGRAMS, HELDOUT_TEMPLATES
    if goal_split == "all":
        return tuple(range(len(PROGRAMS))), tuple(range(len(TEMPLATES)))
    if goal_split == "rephrase":
        return tuple(range(len(PROGRAMS))), tuple(range(len(REPHRASE_TEMPLATES)))
    if goal_split == "compose":
        return COMPOSE_GOALS, tuple(range(len(COMPOSE_FRAMES)))
    if isinstance(goal_split, str) and "+" in goal_split:
        parse_goal_split(goal_split)  # raises on a bad mixture
        raise ValueError(f"goal_pool takes one level, got the mixture {goal_split!r}; call it for each level")
    _check_split_name(goal_split)
    raise AssertionError("unreachable")


def level_instructions(level: str) -> list[str]:
    """Every instruction string of one level / split, in a fixed order (goals, then templates)."""
    goals, templates = goal_pool(level)
    return [level_text(level, g, k) for g in goals for k in templates]


def split_instructions(goal_split: str) -> list[str]:
    """Every instruction string of a goal split or mixture (for building vocabularies, checking overlap...)."""
    return [s for level in parse_goal_split(goal_split) for s in level_instructions(level)]


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


def parse_goals(goal) -> tuple[int, ...]:
    """Program indices of a one- or two-relation goal: anything `parse_goal` takes -> (p,); a string
    "red left_of blue and green front_of cyan" or a pair (list / tuple of two goals) -> (p1, p2).
    The two programs of a pair must be about two different pairs of spheres."""
    if isinstance(goal, str) and " and " in goal:
        parts = [s for s in goal.split(" and ")]
    elif isinstance(goal, (tuple, list)) and len(goal) == 2:
        parts = list(goal)
    elif isinstance(goal, (tuple, list)) and len(goal) == 1:
        return (parse_goal(goal[0]),)
    else:
        return (parse_goal(goal),)
    if len(parts) != 2:
        raise ValueError(f"a goal has one or two relations ('A' or 'A and B'), got {goal!r}")
    a, b = (parse_goal(p) for p in parts)
    if {PROGRAMS[a][0], PROGRAMS[a][2]} == {PROGRAMS[b][0], PROGRAMS[b][2]}:
        raise ValueError(
            f"the two relations of goal {goal!r} are about the same two spheres; a two-relation goal needs "
            f"two different pairs of spheres, e.g. 'red left_of blue and green front_of cyan'"
        )
    return (a, b)


def _parse_pair(goal) -> tuple[int, int]:
    g = parse_goals(goal)
    if len(g) != 2:
        raise ValueError(f"a compose goal has two relations ('A and B'), got {goal!r}")
    return g


def goal_encoding(program: int | str) -> np.ndarray:
    """The fixed-size float32 goal encoding (GOAL_DIM,) of a program: one-hots target|relation|reference."""
    t, r, f = PROGRAMS[parse_goal(program)]
    enc = np.zeros(GOAL_DIM, dtype=np.float32)
    enc[t] = 1.0
    enc[len(COLORS) + r] = 1.0
    enc[len(COLORS) + len(RELATIONS) + f] = 1.0
    return enc


_GOAL_ENCODINGS = np.stack([goal_encoding(i) for i in range(len(PROGRAMS))])
_PROGRAM_T = np.array([t for t, _, _ in PROGRAMS])
_PROGRAM_F = np.array([f for _, _, f in PROGRAMS])
_PROGRAM_DIR = RELATION_VECTORS[[r for _, r, _ in PROGRAMS]]


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


def goal_holds(positions, program) -> bool:
    """Whether a goal holds for sphere positions (5, 2) (or a flat 10-vector); a two-relation goal
    ("A and B", see `parse_goals`) holds iff both relations hold."""
    pos = np.asarray(positions, dtype=np.float64).reshape(NUM_OBJECTS, 2)
    for p in parse_goals(program):
        t, r, f = PROGRAMS[p]
        d = RELATION_VECTORS[r]
        if not _holds(pos[t, 0] - pos[f, 0], pos[t, 1] - pos[f, 1], d[0], d[1]):
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
        goal_slots: int = 1,
    ):
        levels = parse_goal_split(goal_split)  # validates
        if not isinstance(goal_slots, (int, np.integer)) or isinstance(goal_slots, bool) or goal_slots not in (1, 2):
            raise ValueError(f"goal_slots must be 1 or 2 (goal encodings in the observation), got {goal_slots!r}")
        if "compose" in levels and goal_slots != 2:
            raise ValueError(
                f"goal_split {goal_split!r} has the 'compose' level (two relations at once), whose goal encoding needs "
                f"two slots: pass goal_slots=2 (observation of {STATE_DIM} + 2 * {GOAL_DIM} = "
                f"{STATE_DIM + 2 * GOAL_DIM} dims), e.g. "
                f"gym.make('CLEVR-Robot-v0', goal_split={goal_split!r}, goal_slots=2)"
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
        self._expert_data = None  # (scratch MjData, state buffer) for expert_action's look-ahead
        self._render_grid = None

    # ------------------------------------------------------------------ public helpers
    @property
    def program(self) -> str:
        """The current goal program string, e.g. 'red left_of blue' ('A and B' for a compose goal)."""
        return self._goal_str

    @property
    def goal(self) -> tuple[int, ...]:
        """Program indices of the current goal: (p,) or (p1, p2) for a compose goal."""
        return self._goal

    @property
    def level(self) -> str:
        """The level of the current episode's goal and wording ('train', 'rephrase', 'compose', ...)."""
        return self._level

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

    def set_goal(self, goal, template: int | None = None, level: str | None = None) -> None:
        """Set the goal (program string, tuple or index; 'A and B' or a pair for a compose goal), its
        wording level (None: the current level if it fits the goal, else 'compose' for a pair and the
        env's first one-relation level otherwise) and template (None: the level's first template)."""
        g = parse_goals(goal)
        if level is None:
            level = self._level if (self._level == "compose") == (len(g) == 2) else self._level_for(g, None)
        level = self._check_level(level, g)
        pool_templates = self._pools[level][1] if level in self._pools else goal_pool(level)[1]
        self._set_goal(g, pool_templates[0] if template is None else self._check_template(template, level), level)

    def goal_holds(self) -> bool:
        """Whether the current goal (both relations of a compose goal) holds in the current scene."""
        return goal_holds(self.positions(), self._goal)

    def programs_holding(self) -> np.ndarray:
        """bool (80,): which of the 80 programs hold in the current scene.

        The same test as `goal_holds(self.positions(), p)` for every program p, vectorised so that
        reset's compose level checks its 1840 pairs with one call (it compares sqrt(dist^2) < 0.7 where
        `_holds` compares dist^2 < 0.7^2: the two can differ only within a rounding error of the
        threshold; tests/test_clevr_robot.py checks that they agree on random scenes)."""
        pos = self.positions()
        diff = pos[_PROGRAM_T] - pos[_PROGRAM_F]
        dist = np.sqrt(np.einsum("ij,ij->i", diff, diff))
        return (dist < RELATION_MAX_DIST) & (np.einsum("ij,ij->i", diff, _PROGRAM_DIR) > RELATION_COS * dist)

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
                if not any(goal_holds(pos, p) for p in fixed):
                    goal = fixed
                    break
                continue
            if level == "compose":
                holding = self.programs_holding()
                false = np.flatnonzero(~(holding[_COMPOSE_FIRST] | holding[_COMPOSE_SECOND]))
                if false.size:
                    goal = goals[int(false[int(rng.integers(false.size))])]
                    break
                continue
            false = [p for p in goals if not goal_holds(pos, p)]
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
        (`step`) or the expert's scratch copy (`_simulate`). The pusher goes PUSH_OFFSET behind the
        sphere centre at rest, the motor controls are the direction, then PUSH_PHYSICS_STEPS steps."""
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
        n = len(goal_pool(level)[1]) if level in ("rephrase", "compose") else len(TEMPLATES)
        if isinstance(template, (int, np.integer)) and not isinstance(template, bool) and 0 <= template < n:
            return int(template)
        what = "template" if n == len(TEMPLATES) else f"template of level {level!r}"
        raise ValueError(f"{what} must be an integer in [0, {n}), got {template!r}")

    def _check_level(self, level, goal: tuple[int, ...] | None) -> str:
        """Validate an explicitly asked level (any of SPLIT_NAMES) against goal_slots and the goal."""
        if level not in SPLIT_NAMES:
            raise ValueError(f"unknown level {level!r}; accepted: {', '.join(repr(s) for s in SPLIT_NAMES)}")
        if level == "compose" and self.goal_slots != 2:
            raise ValueError("level 'compose' (two relations at once) needs an env made with goal_slots=2")
        if goal is not None and (level == "compose") != (len(goal) == 2):
            raise ValueError(
                f"level {level!r} does not fit goal {goal_string(goal)!r}: 'compose' words two-relation goals "
                f"('A and B'), the other levels one-relation goals"
            )
        return level

    def _level_for(self, goal: tuple[int, ...] | None, rng) -> str:
        """The level of an episode: one of the env's levels (drawn uniformly with `rng` when there are
        several) that fits `goal` (None: any)."""
        levels = self.levels
        if goal is not None:
            levels = tuple(lv for lv in levels if (lv == "compose") == (len(goal) == 2))
            if not levels:
                if len(goal) == 2:
                    return self._check_level("compose", goal)
                raise ValueError(
                    f"goal {goal_string(goal)!r} has one relation but this env's goal_split {self.goal_split!r} "
                    f"words two-relation goals only: pass options={{'level': 'train'}} (or another one-relation level)"
                )
        if len(levels) == 1 or rng is None:
            return levels[0]
        return levels[int(rng.integers(len(levels)))]

    def _set_goal(self, goal: tuple[int, ...], template: int, level: str) -> None:
        self._goal, self._program, self._template, self._level = goal, goal[0], template, level
        if len(goal) == 2 and self.goal_slots != 2:
            raise ValueError("a two-relation goal needs an env made with goal_slots=2")
        enc = np.zeros(self.goal_slots * GOAL_DIM, dtype=np.float32)
        for i, p in enumerate(goal):
            enc[i * GOAL_DIM : (i + 1) * GOAL_DIM] = _GOAL_ENCODINGS[p]
        self._goal_enc = enc
        self._instruction = level_text(level, goal if len(goal) == 2 else goal[0], template)
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
    env._push(sd, action)
    return sd.qpos[env._xy_index].reshape(NUM_OBJECTS, 2)


def _goal_cost(pos: np.ndarray, goal: tuple[int, ...]) -> float:
    """The expert's cost of a goal: `_expert_cost` of a one-relation goal; for two relations, the sum
    over the relations that do not hold of (0.5 + their cost), so that a push that breaks a relation
    that holds is taken only when it brings the other one much closer."""
    if len(goal) == 1:
        return _expert_cost(pos, goal[0])
    total = 0.0
    for p in goal:
        c = _expert_cost(pos, p)
        if c > 0.0:
            total += 0.5 + c
    return total


def _compose_expert_action(env: ClevrRobotEnv, pos: np.ndarray, goal: tuple[int, int]) -> int:
    """Expert push for a two-relation goal: the pushes of the spheres of the relations that do not
    hold yet first, then all 40, scored by `_goal_cost` (which keeps a relation that holds unless
    breaking it pays off). Where no push gains at least 0.01 (a local minimum, e.g. the relation
    that holds blocks the other one), it works on the relations that do not hold alone, even if
    that breaks the other one."""
    current = _goal_cost(pos, goal)
    todo = [p for p in goal if not goal_holds(pos, p)]
    objects: list[int] = []
    for p in todo + [p for p in goal if p not in todo]:
        t, _, f = PROGRAMS[p]
        objects += [o for o in (t, f) if o not in objects]
    order = [o * 8 + k for o in objects for k in range(8)]
    order += [a for a in range(NUM_ACTIONS) if a not in order]
    outcomes = {}
    best_a, best_c = order[0], math.inf
    for i, a in enumerate(order):
        if i == 8 * len(objects) and best_c < current - 0.01:
            return best_a  # progress with the goal's spheres: no need to try the others
        outcomes[a] = after = _simulate(env, a).copy()
        c = _goal_cost(after, goal)
        if c < best_c:
            best_a, best_c = a, c
        if c == 0.0:
            return a
    if best_c < current - 0.01:
        return best_a
    return min(order, key=lambda a: sum(_expert_cost(outcomes[a], p) for p in todo))


def expert_action(env, noise: float = 0.0, rng: np.random.Generator | None = None) -> int:
    """Scripted expert: the push (of the goal's spheres first, else any) whose simulated outcome
    brings the goal closest (see `_expert_cost`; two-relation goals: `_goal_cost`, spheres of the
    relations that do not hold yet first). The wording level does not matter (a rephrased
    instruction has the same program). `env` may be wrapped (gym.make).

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
    goal = env._goal
    pos = env.positions()
    if len(goal) == 2:
        return _compose_expert_action(env, pos, goal)
    current = _goal_cost(pos, goal)
    objects: list[int] = []
    for p in sorted(goal, key=lambda p: goal_holds(pos, p)):  # relations that do not hold first
        t, _, f = PROGRAMS[p]
        objects += [o for o in (t, f) if o not in objects]
    first = [o * 8 + k for o in objects for k in range(8)]
    best_a, best_c = first[0], math.inf
    for a in first:
        c = _goal_cost(_simulate(env, a), goal)
        if c < best_c:
            best_a, best_c = a, c
        if c == 0.0:
            return a
    if best_c < current - 1e-3:
        return best_a
    for a in range(NUM_ACTIONS):  # no progress with the goal's spheres: try the others too
        if a in first:
            continue
        c = _goal_cost(_simulate(env, a), goal)
        if c < best_c:
            best_a, best_c = a, c
    return best_a


def collect_demos(
    num_episodes: int,
    noise: float = 0.0,
    goal_split: str = "train",
    seed: int = 0,
    max_episode_steps: int = 50,
    goal_slots: int | None = None,
) -> dict:
    """Roll out the scripted expert; returns the project's demonstration dict.

    goal_split: any level, split or "+"-mixture the env takes (e.g. "rephrase", "compose",
    "train+compose"). goal_slots: of the env (None: 2 when the split has the 'compose' level, else 1).
    observations float32 [N, 10 + goal_slots * 14] (24 with one slot; full env observation before
    each action), actions int64 [N] (the executed, possibly noisy, actions), instructions unicode
    [N], episode_ids int64 [N], episode_success bool [E], env_id "CLEVR-Robot-v0", state_dim 10;
    for a mixture also levels unicode [N] (the level of each step's episode). Failed episodes are
    kept (episode_success False). Deterministic given the arguments: the env is seeded once with
    `seed` and the noise generator with `seed + 1`.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes must be >= 1, got {num_episodes}")
    if goal_slots is None:
        goal_slots = 2 if "compose" in parse_goal_split(goal_split) else 1
    env = ClevrRobotEnv(max_episode_steps=max_episode_steps, goal_split=goal_split, goal_slots=goal_slots)
    rng = np.random.default_rng(seed + 1)
    obs_l, act_l, ins_l, ep_l, succ, lev_l = [], [], [], [], [], []
    for ep in range(num_episodes):
        obs, info = env.reset(seed=seed if ep == 0 else None)
        done = False
        success = False
        while not done:
            a = expert_action(env, noise=noise, rng=rng)
            obs_l.append(obs)
            act_l.append(a)
            ins_l.append(info["instruction"])
            lev_l.append(info["level"])
            ep_l.append(ep)
            obs, _, terminated, truncated, info = env.step(a)
            success = bool(info["success"])
            done = terminated or truncated
        succ.append(success)
    demos = {
        "observations": np.stack(obs_l).astype(np.float32),
        "actions": np.asarray(act_l, dtype=np.int64),
        "instructions": np.asarray(ins_l, dtype=np.str_),
        "episode_ids": np.asarray(ep_l, dtype=np.int64),
        "episode_success": np.asarray(succ, dtype=bool),
        "env_id": ENV_ID,
        "state_dim": STATE_DIM,
    }
    if len(env.levels) > 1:
        demos["levels"] = np.asarray(lev_l, dtype=np.str_)
    return demos


def level_success(
    goal_split: str, episodes: int = 200, policy: str = "random", seed: int = 0, max_episode_steps: int = 50
) -> dict:
    """Success rate of uniform random actions ("random") or of the expert ("expert") on a level,
    split or mixture: `episodes` episodes of at most `max_episode_steps` steps, the env seeded once
    with `seed` (goal_slots 2 when the split has 'compose'), the random actions from seed + 1."""
    if policy not in ("random", "expert"):
        raise ValueError(f"policy must be 'random' or 'expert', got {policy!r}")
    slots = 2 if "compose" in parse_goal_split(goal_split) else 1
    env = ClevrRobotEnv(max_episode_steps=max_episode_steps, goal_split=goal_split, goal_slots=slots)
    rng = np.random.default_rng(seed + 1)
    wins, steps = 0, 0
    for ep in range(episodes):
        env.reset(seed=seed if ep == 0 else None)
        while True:
            a = int(rng.integers(NUM_ACTIONS)) if policy == "random" else expert_action(env)
            *_, terminated, truncated, info = env.step(a)
            steps += 1
            if terminated or truncated:
                break
        wins += bool(info["success"])
    return {
        "goal_split": goal_split,
        "policy": policy,
        "episodes": episodes,
        "success_rate": wins / episodes,
        "steps_per_episode": steps / episodes,
    }


if __name__ == "__main__":  # python -m envs.clevr_robot --policy random --episodes 200 --seed 0
    import argparse

    parser = argparse.ArgumentParser(description="success rate per instruction level (CLEVR-Robot)")
    parser.add_argument("--levels", default=",".join(LEVELS), help="comma-separated levels / splits / mixtures")
    parser.add_argument("--policy", default="random", choices=("random", "expert"))
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-episode-steps", type=int, default=50)
    cli = parser.parse_args()
    for name in cli.levels.split(","):
        r = level_success(name, cli.episodes, cli.policy, cli.seed, cli.max_episode_steps)
        print(
            f"{cli.policy}, goal_split={name!r}, {cli.episodes} episodes of <= {cli.max_episode_steps} steps: "
            f"success {r['success_rate']:.3f}, {r['steps_per_episode']:.2f} steps per episode",
            flush=True,
        )
