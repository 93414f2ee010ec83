"""The goal language of CLEVR-Robot: goal programs, their instruction templates, the train /
held-out split and the instruction levels (rephrase, compose, '+' mixtures). No physics here:
`envs.clevr_robot` draws its goals and words its instructions from this file.

Goals: 80 programs (target colour, relation, reference colour), target != reference,
    program string "<target> <relation>_of <reference>", e.g. "red left_of blue" = "the red
    sphere is to the left of the blue sphere" (tested by `envs.clevr_robot.goal_holds`).
    Each program has `len(TEMPLATES)` = 10 natural-language paraphrases (our own wording;
    question forms as in the original and imperative forms). The goal encoding of the
    observation (`goal_encoding`, `GOAL_DIM` = 14) is one-hot target colour (5) + one-hot
    relation (4) + one-hot reference colour (5).

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

Instruction levels (after KALM's evaluation): `LEVELS` = ("train", "heldout", "rephrase", "compose", "hard")
      goal_split="rephrase": all 80 programs x 8 `REPHRASE_TEMPLATES` (640 instructions) in words
        no other instruction uses: colour synonyms `COLOR_SYNONYMS` (red: crimson / scarlet, blue:
        azure / navy, green: emerald / lime, purple: violet / lilac, cyan: turquoise / teal),
        relation wordings `RELATION_SYNONYMS` (left: "to the west of" / "farther west than", right:
        east, behind: "to the north of" / "farther from the viewer than", front: "to the south of"
        / "closer to the viewer than") and new frames (orb / marble / globe). Frame k takes
        target synonym k & 1, reference synonym (k >> 1) & 1, relation wording (k >> 2) & 1.
      goal_split="compose": two relations at once. Goals `COMPOSE_GOALS`: the 1840 unordered pairs
        (p1 < p2) of TRAIN programs about two different pairs of spheres (so never contradictory
        or equivalent). Text (`COMPOSE_FRAMES`, 16): a train imperative phrasing (templates 3, 4,
        5, 9) of p1 and one of p2 joined by " and " (29,440 instructions).
      goal_split="hard": three relations at once (KALM's hard level has two or three). Goals `HARD_GOALS`:
        the 28,400 unordered triples (p1 < p2 < p3) of TRAIN programs about three different pairs of
        spheres, without a cycle (no triangle: "red left_of blue", "blue left_of green", "green left_of
        red" is impossible) and without three spheres on the same side of a fourth (barely feasible
        under KALM's success test: three spheres in one 90-degree sector within 0.39). Text
        (`HARD_FRAMES`, 64): three train imperative phrasings, "A, b and c." (1,817,600 instructions;
        `level_instructions("hard")` lists them all, slowly).
    `LEVEL_RELATIONS[level]`: relations per goal (compose 2, hard 3, the others 1).
    A mixture is "+"-joined distinct LEVELS, e.g. goal_split="train+rephrase+heldout+compose"
    (`parse_goal_split`). `level_instructions(level)` lists a level's instructions in a fixed order.
"""

from __future__ import annotations

import difflib

import numpy as np

COLORS = ("red", "blue", "green", "purple", "cyan")  # sphere i has colour COLORS[i]
RELATIONS = ("left", "right", "behind", "front")
GOAL_DIM = len(COLORS) + len(RELATIONS) + len(COLORS)  # 14

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
LEVELS = ("train", "heldout", "rephrase", "compose", "hard")
SPLIT_NAMES = ("train", "heldout", "all", "rephrase", "compose", "hard")  # what goal_split accepts alone
LEVEL_RELATIONS = {"train": 1, "heldout": 1, "all": 1, "rephrase": 1, "compose": 2, "hard": 3}

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


# hard: three train programs at once; see the module docstring for which triples are left out.
def _hard_goals() -> tuple[tuple[int, int, int], ...]:
    pairs = {p: frozenset((PROGRAMS[p][0], PROGRAMS[p][2])) for p in TRAIN_PROGRAMS}
    out = []
    for i, a in enumerate(TRAIN_PROGRAMS):
        for j in range(i + 1, len(TRAIN_PROGRAMS)):
            b = TRAIN_PROGRAMS[j]
            if pairs[a] == pairs[b]:
                continue
            for c in TRAIN_PROGRAMS[j + 1 :]:
                if pairs[c] != pairs[a] and pairs[c] != pairs[b] and _hard_ok((a, b, c)):
                    out.append((a, b, c))
    return tuple(out)


def _hard_ok(goal) -> bool:
    """A triple of programs about three different pairs of spheres is a hard goal unless its pairs form a
    triangle or one sphere has the three others of its relations on the same side ("x R of c", or "c R' of x"
    with R' the opposite of R)."""
    spheres = [s for p in goal for s in (PROGRAMS[p][0], PROGRAMS[p][2])]
    if len(set(spheres)) == 3:  # three pairs over three spheres: a triangle
        return False
    for c in set(spheres):
        if spheres.count(c) == 3:  # a star around c: the side of each other sphere
            sides = {r if f == c else r ^ 1 for t, r, f in (PROGRAMS[p] for p in goal)}  # r ^ 1: the opposite
            return len(sides) > 1
    return True


HARD_GOALS = _hard_goals()
HARD_FRAMES = tuple(
    (a, b, c)
    for a in _IMPERATIVE_TRAIN_TEMPLATES
    for b in _IMPERATIVE_TRAIN_TEMPLATES
    for c in _IMPERATIVE_TRAIN_TEMPLATES
)


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


def hard_text(goal, template: int) -> str:
    """The "hard" instruction of a three-program goal in frame `template` of HARD_FRAMES: "A, b and c."."""
    g = parse_goals(goal)
    if len(g) != 3:
        raise ValueError(f"a hard goal has three relations ('A and B and C'), got {goal!r}")
    if not isinstance(template, (int, np.integer)) or not 0 <= template < len(HARD_FRAMES):
        raise ValueError(f"hard template must be an integer in [0, {len(HARD_FRAMES)}), got {template!r}")
    a, b, c = (instruction_text(p, k).rstrip(".") for p, k in zip(g, HARD_FRAMES[template]))
    return f"{a}, {b[0].lower() + b[1:]} and {c[0].lower() + c[1:]}."


def goal_string(goal) -> str:
    """Program string of a goal: 'red left_of blue', 'red left_of blue and green front_of cyan' (and a third)."""
    return " and ".join(PROGRAM_STRINGS[p] for p in parse_goals(goal))


def level_text(level: str, goal, template: int) -> str:
    """The instruction of `goal` worded by `level` (one of SPLIT_NAMES) in its template `template`."""
    if level == "rephrase":
        return rephrase_text(goal, template)
    if level == "compose":
        return compose_text(goal, template)
    if level == "hard":
        return hard_text(goal, template)
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


def goal_pool(goal_split: str) -> tuple[tuple, tuple[int, ...]]:
    """(goals, template indices) of one level / split (not a mixture); see the module docstring.

    goals are program indices, except for "compose" (COMPOSE_GOALS, pairs) and "hard" (HARD_GOALS, triples).
    Template indices index TEMPLATES, REPHRASE_TEMPLATES, COMPOSE_FRAMES or HARD_FRAMES."""
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
    if goal_split == "hard":
        return HARD_GOALS, tuple(range(len(HARD_FRAMES)))
    if isinstance(goal_split, str) and "+" in goal_split:
        parse_goal_split(goal_split)  # raises on a bad mixture
        raise ValueError(f"goal_pool takes one level, got the mixture {goal_split!r}; call it for each level")
    _check_split_name(goal_split)
    raise AssertionError("unreachable")


def level_instructions(level: str) -> list[str]:
    """Every instruction string of one level / split, in a fixed order (goals, then templates)."""
    goals, templates = goal_pool(level)
    return [level_text(level, g, k) for g in goals for k in templates]


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
    """Program indices of a goal of one to three relations: anything `parse_goal` takes -> (p,); a string
    "red left_of blue and green front_of cyan" or a list / tuple of two goals -> (p1, p2); three -> (p1, p2, p3).
    The programs of a goal must be about different pairs of spheres."""
    names = isinstance(goal, tuple) and len(goal) == 3 and all(isinstance(g, str) and " " not in g for g in goal)
    if isinstance(goal, str) and " and " in goal:
        parts = goal.split(" and ")
    elif isinstance(goal, (tuple, list)) and not names:  # a sequence of goals (a tuple of 3 names is one goal)
        if len(goal) == 1:
            return (parse_goal(goal[0]),)
        parts = list(goal)
    else:
        return (parse_goal(goal),)
    if len(parts) not in (2, 3):
        raise ValueError(f"a goal has one to three relations ('A', 'A and B', 'A and B and C'), got {goal!r}")
    g = tuple(parse_goal(p) for p in parts)
    pairs = [{PROGRAMS[p][0], PROGRAMS[p][2]} for p in g]
    if any(pairs[i] == pairs[j] for i in range(len(g)) for j in range(i)):
        raise ValueError(
            f"two relations of goal {goal!r} are about the same two spheres; a goal of several relations needs "
            f"different pairs of spheres, e.g. 'red left_of blue and green front_of cyan'"
        )
    return g


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
