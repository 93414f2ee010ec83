"""A picture of the prior at work: an agent on CLEVR-Robot (GIF) or Meta-World (PNG strip), the prior drawn on.

A trained agent acts; at every frame the prior's action distribution at that state is drawn on the scene.

    python -m benchmark.prior_picture clevr runs/RUN/lago_ppo_discrete.cleanrl_model \\
        --prior-path priors/CLEVR-Robot-v0__all-MiniLM-L6-v2 --out docs/prior_at_work.gif
    python -m benchmark.prior_picture metaworld --prior-path PRIOR_DIR --task reach-v3 \\
        --out docs/prior_at_work_metaworld.png [--model runs/RUN/lago_ppo_continuous.cleanrl_model]

CLEVR-Robot (`clevr`): one episode per level of --levels (default train, heldout, rephrase, compose: a compose goal
only for an agent that reads two goal slots, i.e. trained with compose in --goal-split; otherwise it is left out with
a note), each on `gym.make(env_id, goal_split=level, goal_slots=<the agent's>, render_mode="rgb_array")` reset with
seed + 100,000 + i (benchmark.evaluate's evaluation seeds), the goal and its wording drawn by the env. A frame per push:
the scene before it, the instruction, and the prior p(a | s, instruction) over the 40 actions drawn as arrows, one per
sphere and push direction (envs.clevr_robot.DIRECTIONS), each arrow's length and width growing linearly with the
square root of its probability (below 0.5% none is drawn). The push the policy then makes is the yellow arrow behind
the sphere, where the pusher starts. Actions are sampled from the agent (as benchmark.evaluate does, from a torch
generator seeded with the env's seed), or its argmax with --greedy. After the last push (success, or --max-steps
pushes) one more frame shows the end state. Table coordinates (x, y) map to image pixels by the renderer's own geometry
(envs.clevr_robot: a top-down view, 200 px per metre, x right, y down).

Meta-World (`metaworld`): one episode of --task (env seed seed + 100,000) seen from Meta-World's "corner" camera, until
its first success or --steps steps, driven by the agent of --model (sampled actions as in training; its mean with
--greedy) or, without one, by the prior's mean action. A panel every --every steps and one at the end: the prior's mean
action (x, y, z) drawn as a white arrow from the gripper (the hand displacement that ARROW_STEPS = 20 steps of it
command, projected through the camera's pinhole model), the agent's action as a yellow one, the goal ringed. The
corner camera is mounted upside down: its frames are turned 180 degrees, and the projected points with them.
Offscreen rendering: envs.metaworld.make_env's (MUJOCO_GL=egl where it is unset and there is no display).

Deterministic given --seed. No GPU needed.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the scripts and envs/ live at the repository root
    sys.path.insert(0, str(REPO))

from benchmark.evaluate import EVAL_SEED_OFFSET, _sample, _spaces, load_continuous_agent, load_model
from finetune_prior import PriorError, action_distribution, load_prior  # the prior: one import, here

DEFAULT_LEVELS = ("train", "heldout", "rephrase", "compose")
LEVEL_LABELS = {
    "train": "train goal (demonstrated)",
    "heldout": "held-out goal, unseen wording",
    "rephrase": "rephrased: words never demonstrated",
    "compose": "composed: two relations at once",
    "hard": "hard: three relations at once",
    "all": "any goal, any wording",
}
CLEVR_VIEW = ((-0.68, 0.68), (-0.52, 0.76))  # the table (walls at x +-0.6, y -0.3 / 0.7) and the pusher's home
DIRECTION_NAMES = ("right", "front", "left", "behind", "front-right", "front-left", "behind-right", "behind-left")
PRIOR_COLOR = "#15153a"  # the prior's arrows: dark on the grey table, distinct from the sphere colours
POLICY_COLOR = "#ffd21f"  # the policy's action: yellow, black edge
MIN_PROB = 0.005  # prior arrows below this probability are not drawn
FRAME_MS, LAST_FRAME_MS = 900, 2000


# ---------------------------------------------------------------------------------------------------------------------
# shared drawing helpers (matplotlib's object API: no pyplot, no global backend state)
# ---------------------------------------------------------------------------------------------------------------------
def _figure(width_px: int, height_px: int, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _pixels(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _arrow(ax, start, vector, width, color, edge=None, alpha=1.0, zorder=3, linewidth=0.0):
    from matplotlib.patches import FancyArrow

    ax.add_patch(
        FancyArrow(
            float(start[0]),
            float(start[1]),
            float(vector[0]),
            float(vector[1]),
            width=width,
            head_width=2.4 * width,
            head_length=min(2.0 * width, 0.8 * float(np.hypot(*vector))),
            length_includes_head=True,
            facecolor=color,
            edgecolor=edge or color,
            linewidth=linewidth,
            alpha=alpha,
            zorder=zorder,
        )
    )


# ---------------------------------------------------------------------------------------------------------------------
# CLEVR-Robot
# ---------------------------------------------------------------------------------------------------------------------
def clevr_world_to_pixel(xy) -> np.ndarray:
    """Table coordinates (x, y) [..., 2] -> (column, row) pixel coordinates [..., 2] of ClevrRobotEnv's rgb_array
    frame (pixel centres at integers): the renderer draws the window _VIEW_X x _VIEW_Y at _PX_PER_M, x to the right,
    y downward (front of the table at the bottom)."""
    from envs.clevr_robot import _PX_PER_M, _VIEW_X, _VIEW_Y

    xy = np.asarray(xy, dtype=np.float64)
    return np.stack([(xy[..., 0] - _VIEW_X[0]) * _PX_PER_M - 0.5, (xy[..., 1] - _VIEW_Y[0]) * _PX_PER_M - 0.5], -1)


def clevr_episodes(
    model_path, prior_path, levels=DEFAULT_LEVELS, seed=1, max_steps=8, greedy=False, env_id="CLEVR-Robot-v0"
) -> tuple[list[dict], list[str]]:
    """Run the saved agent for one episode per level; return (frames, notes). A frame: the rendered scene, sphere
    positions, the prior's and the policy's probabilities over the 40 actions at that state and the action taken
    (None on an episode's last frame), the instruction, level, push index and success."""
    import gymnasium as gym
    import torch

    import envs  # noqa: F401  (registers CLEVR-Robot-v0)
    import lago_ppo_discrete
    from envs.clevr_language import GOAL_DIM, LEVEL_RELATIONS
    from envs.clevr_robot import STATE_DIM

    kind, state_dict, _ = load_model(model_path)
    if kind != "discrete":
        raise ValueError(f"{model_path} holds a lago_ppo_continuous.py agent: use the metaworld command")
    in_dim = state_dict["actor.0.weight"].shape[1]
    slots, rest = divmod(in_dim - STATE_DIM, GOAL_DIM)
    if rest or slots not in (1, 2, 3):
        raise ValueError(f"{model_path}: an agent of {in_dim} inputs is no CLEVR-Robot agent (24, 38 or 52 inputs)")
    from benchmark.plot import read_hyperparameters

    residual = read_hyperparameters(Path(model_path).parent).get("residual_policy") == "True"  # acts on the prior
    prior = load_prior(str(prior_path))
    if prior.config["action_space"] != {"type": "discrete", "n": 40}:
        raise ValueError(f"{prior_path} is not a CLEVR-Robot prior (its actions: {prior.config['action_space']})")
    frames, notes = [], []
    for i, level in enumerate(levels):
        need = max(LEVEL_RELATIONS[lv] for lv in level.split("+"))
        if need > slots:
            notes.append(
                f"left out level {level!r}: the agent reads {slots} goal slot(s) ({in_dim} inputs), a {level!r} goal "
                f"needs {need}; train with it in --goal-split for that"
            )
            continue
        env = gym.make(
            env_id,
            goal_split=level,
            goal_slots=slots,
            render_mode="rgb_array",
            disable_env_checker=True,
            max_episode_steps=max(max_steps + 1, 50),
        )
        agent = lago_ppo_discrete.Agent(_spaces(env.observation_space, env.action_space))
        agent.load_state_dict(state_dict)
        env_seed = seed + EVAL_SEED_OFFSET + i
        generator = torch.Generator().manual_seed(env_seed)
        obs, info = env.reset(seed=env_seed)
        base = env.unwrapped
        for t in range(max_steps + 1):
            frame = {
                "image": env.render(),
                "positions": base.positions().copy(),
                "instruction": info["instruction"],
                "goal": info["goal"],
                "level": info["level"],
                "push": t,
                "success": bool(info["success"]),
                "action": None,
            }
            frames.append(frame)
            if t == max_steps or info["success"]:
                break
            with torch.inference_mode():
                x = torch.tensor(obs, dtype=torch.float32)[None]
                prior_logits = prior(obs[None], [info["instruction"]]).float()
                dist = agent.get_action_and_value(
                    x, torch.zeros(1, dtype=torch.long), prior_logits if residual else None
                )[4]
                action = int(dist.probs.argmax()) if greedy else int(_sample(dist, generator).item())
                prior_probs = action_distribution(prior_logits).probs[0]
            frame.update(action=action, prior=prior_probs.float().numpy(), policy=dist.probs[0].numpy())
            obs, _, _, _, info = env.step(action)
        env.close()
    return frames, notes


def draw_clevr_frame(frame: dict, width: int = 360) -> np.ndarray:
    """One frame as an RGB uint8 array: the level and instruction on top, the scene with the prior's arrows and the
    policy's push, a line of numbers below."""
    from envs.clevr_robot import COLORS, DIRECTIONS, SPHERE_RADIUS

    (x0, y0), (x1, y1) = clevr_world_to_pixel(np.array(CLEVR_VIEW).T)
    scene_h = round(width * (y1 - y0) / (x1 - x0))
    top, bottom = 70, 50
    height = top + scene_h + bottom
    fig = _figure(width, height)
    ax = fig.add_axes((0, bottom / height, 1, scene_h / height))
    ax.imshow(frame["image"], interpolation="bilinear")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y1, y0)
    ax.axis("off")
    px_per_m = float(np.diff(clevr_world_to_pixel(np.array([[0.0, 0.0], [1.0, 0.0]])), axis=0)[0, 0])
    centres = clevr_world_to_pixel(frame["positions"])
    units = DIRECTIONS / np.linalg.norm(DIRECTIONS, axis=1, keepdims=True)
    r = SPHERE_RADIUS * px_per_m
    action = frame["action"]
    if action is not None:
        probs = frame["prior"]
        for a in np.argsort(probs):  # small ones first: the likely arrows on top
            p = float(probs[a])
            if p < MIN_PROB:
                continue
            u = units[a % 8]
            s = np.sqrt(p)
            length = (0.03 + 0.25 * s) * px_per_m
            _arrow(
                ax,
                centres[a // 8] + u * (r + 2),
                u * length,
                (0.006 + 0.028 * s) * px_per_m,
                PRIOR_COLOR,
                alpha=0.55 + 0.45 * s,
                zorder=3,
            )
        u = units[action % 8]  # the policy's push: from where the pusher starts, toward the sphere
        _arrow(
            ax,
            centres[action // 8] - u * (r + 0.2 * px_per_m),
            u * 0.19 * px_per_m,
            0.03 * px_per_m,
            POLICY_COLOR,
            edge="black",
            zorder=5,
            linewidth=1.0,
        )
    fig.text(
        0.02,
        1 - 15 / height,
        f"{LEVEL_LABELS.get(frame['level'], frame['level'])}",
        fontsize=9,
        fontweight="bold",
        va="center",
        color="#333333",
    )
    lines = textwrap.wrap(f"\u201c{frame['instruction']}\u201d", 50)[:3]
    fig.text(0.02, 1 - 30 / height, "\n".join(lines), fontsize=9.5, va="top", linespacing=1.15)
    if action is not None:
        who, where = COLORS[action // 8], DIRECTION_NAMES[action % 8]
        status = f"push {frame['push'] + 1}: {who} {where}  \u2022  policy p {frame['policy'][action]:.2f}"
        status += f"  \u2022  prior p {frame['prior'][action]:.2f}"
        legend = "dark arrows: the prior p(a | s, instruction), bigger = likelier\nyellow: the push the policy makes"
    else:
        n = frame["push"]
        pushes = f"{n} push{'es' if n != 1 else ''}"
        status = f"goal reached after {pushes}" if frame["success"] else f"goal not reached after {pushes}"
        legend = f"goal: {frame['goal']}"
    fig.text(0.02, 38 / height, status, fontsize=8.5, va="center", color="#111111")
    fig.text(0.02, 4 / height, legend, fontsize=7.5, va="bottom", color="#555555", linespacing=1.15)
    return _pixels(fig)


def write_gif(images: list[np.ndarray], durations: list[int], path: str | Path, colors: int = 128) -> None:
    """A looping GIF of RGB frames, each reduced to its own `colors`-colour palette (no dithering: flat colours
    compress well)."""
    from PIL import Image

    frames = [
        Image.fromarray(im).quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        for im in images
    ]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=True, disposal=1)


def clevr_picture(
    model_path,
    prior_path,
    out,
    levels=DEFAULT_LEVELS,
    seed=1,
    max_steps=8,
    greedy=False,
    env_id="CLEVR-Robot-v0",
    width=360,
) -> dict:
    frames, notes = clevr_episodes(model_path, prior_path, levels, seed, max_steps, greedy, env_id)
    if not frames:
        raise ValueError("no level left to show: " + "; ".join(notes))
    images = [draw_clevr_frame(f, width) for f in frames]
    durations = [FRAME_MS if f["action"] is not None else LAST_FRAME_MS for f in frames]
    write_gif(images, durations, out)
    episodes = [
        {
            "level": f["level"],
            "instruction": f["instruction"],
            "goal": f["goal"],
            "pushes": f["push"],
            "success": f["success"],
        }
        for f in frames
        if f["action"] is None
    ]
    return {
        "out": str(out),
        "frames": len(frames),
        "size": list(images[0].shape[1::-1]),
        "bytes": os.path.getsize(out),
        "episodes": episodes,
        "notes": notes,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Meta-World
# ---------------------------------------------------------------------------------------------------------------------
MW_CAMERA = "corner"
ARROW_STEPS = 20  # the mean-action arrow: the hand displacement that this many steps of the action command


def _metaworld_env(task: str, seed: int, max_episode_steps: int):
    """A Meta-World task (envs.metaworld.make_env) that renders 480 x 480 frames from MW_CAMERA."""
    from envs.metaworld import make_env

    return make_env(task, seed, max_episode_steps=max_episode_steps, render_mode="rgb_array", camera_name=MW_CAMERA)


def _camera_projector(sawyer, size: int):
    """(world point [3] -> (column, row) in the upright frame): the pinhole projection of MW_CAMERA (MuJoCo cameras
    look along their -z axis, y up). Meta-World's corner camera is mounted upside down: its raw frame, which this
    projection matches, is turned 180 degrees for the picture, and so are the projected points."""
    import mujoco

    m, d = sawyer.model, sawyer.data
    cam = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, MW_CAMERA)
    pos, rot = d.cam_xpos[cam].copy(), d.cam_xmat[cam].reshape(3, 3).copy()
    focal = (size / 2) / np.tan(np.deg2rad(m.cam_fovy[cam]) / 2)

    def project(point):
        c = rot.T @ (np.asarray(point, dtype=np.float64) - pos)
        col, row = size / 2 + focal * c[0] / -c[2], size / 2 - focal * c[1] / -c[2]
        return np.array([size - 1 - col, size - 1 - row])  # the frame turned upright

    return project


def metaworld_frames(prior_path, task="reach-v3", seed=1, steps=200, every=40, model_path=None, greedy=False) -> dict:
    """Run one episode until its first success or `steps` steps; every `every` steps and at its end record the upright
    camera frame, the gripper, the goal, the prior's mean action and (with an agent) the agent's action, in pixel
    coordinates of the frame."""
    import torch

    import lago_ppo_continuous

    prior = load_prior(str(prior_path))
    if prior.config["action_space"].get("type") != "continuous":
        raise ValueError(f"{prior_path} is not a Meta-World prior (its actions: {prior.config['action_space']})")
    env_seed = seed + EVAL_SEED_OFFSET
    env = _metaworld_env(task, env_seed, max(steps, 1) + 1)
    agent = obs_rms = None
    if model_path is not None:
        agent, obs_rms = load_continuous_agent(model_path, env.observation_space, env.action_space)
    generator = torch.Generator().manual_seed(env_seed)
    obs, info = env.reset(seed=env_seed)
    sawyer = env.unwrapped
    project = _camera_projector(sawyer, sawyer.height)
    panels = []
    for t in range(steps + 1):
        end = bool(info["success"]) or t == steps
        with torch.inference_mode():
            dist = action_distribution(prior(obs[None], [info["instruction"]]))
            mean, std = dist.mean[0].float().numpy(), dist.stddev[0].float().numpy()
            if agent is not None:
                x = torch.tensor(lago_ppo_continuous.normalize_obs(obs_rms, obs), dtype=torch.float32)[None]
                policy = agent.get_action_and_value(x, torch.zeros((1, 4)))[4]
                act = (policy.mean if greedy else _sample(policy, generator))[0].numpy()
            else:
                act = mean
        act = np.clip(act, -1.0, 1.0)
        if t % every == 0 or end:
            hand = np.asarray(sawyer.tcp_center, dtype=np.float64)
            scale = ARROW_STEPS * sawyer.action_scale
            panels.append(
                {
                    "image": np.ascontiguousarray(env.render()[::-1, ::-1]),
                    "t": t,
                    "success": bool(info["success"]),
                    "hand": project(hand),
                    "goal": project(obs[36:39]),
                    "prior_tip": project(hand + scale * np.clip(mean[:3], -1, 1)),
                    "agent_tip": None if agent is None else project(hand + scale * act[:3]),
                    "mean": mean,
                    "std": std,
                }
            )
        if end:
            break
        obs, _, _, _, info = env.step(act.astype(np.float32))
    instruction = info["instruction"]
    env.close()
    success_at = t if info["success"] else None
    return {
        "panels": panels,
        "instruction": instruction,
        "task": task,
        "success_at": success_at,
        "driver": "prior mean" if agent is None else "agent mean" if greedy else "agent",
    }


def draw_metaworld_strip(run: dict, panel_px: int = 260) -> np.ndarray:
    from matplotlib.patches import Circle

    panels = run["panels"]
    size = panels[0]["image"].shape[0]
    # one square crop for all panels: the gripper's path, the goal and the arrows, with a margin
    points = np.array(
        [q for p in panels for q in (p["hand"], p["goal"], p["prior_tip"], p["agent_tip"]) if q is not None]
    )
    half = min(size / 2, max(np.ptp(points, axis=0).max() / 2 + 0.12 * size, 0.22 * size))
    centre = np.clip((points.min(0) + points.max(0)) / 2, half, size - half)
    (x0, y0), (x1, y1) = centre - half, centre + half
    driven = {
        "agent": "the agent's sampled actions (yellow arrow)",
        "agent mean": "the agent's mean action (yellow arrow)",
        "prior mean": "the prior's mean action",
    }[run["driver"]]
    caption = textwrap.wrap(
        f"white arrow: the prior's mean action (x, y, z), as the hand displacement {ARROW_STEPS} steps of it command, "
        f"drawn from the gripper; green ring: the goal; the episode is driven by {driven}",
        int(panel_px * len(panels) / 5.6),
    )
    top, bottom = 32 + 13 * len(caption), 34
    label = 18
    width, height = panel_px * len(panels), top + label + panel_px + bottom
    fig = _figure(width, height)
    for k, p in enumerate(panels):
        ax = fig.add_axes(((k * panel_px + 2) / width, bottom / height, (panel_px - 4) / width, panel_px / height))
        ax.imshow(p["image"], interpolation="bilinear")
        ax.set_xlim(x0, x1)
        ax.set_ylim(y1, y0)
        ax.axis("off")
        scale = (x1 - x0) / size  # arrow and ring sizes follow the crop
        ax.add_patch(Circle(tuple(p["goal"]), 14 * scale, fill=False, edgecolor="#39ff14", linewidth=1.8, zorder=4))
        vec = p["prior_tip"] - p["hand"]
        if np.hypot(*vec) > 1.0:
            _arrow(ax, p["hand"], vec, 6 * scale, "white", edge="black", zorder=5, linewidth=1.0)
        if p["agent_tip"] is not None:
            vec = p["agent_tip"] - p["hand"]
            if np.hypot(*vec) > 1.0:
                _arrow(ax, p["hand"], vec, 5 * scale, POLICY_COLOR, edge="black", zorder=6, linewidth=0.8)
        m = p["mean"]
        fig.text(
            (k + 0.5) * panel_px / width,
            (bottom + panel_px + label / 2) / height,
            f"t = {p['t']}" + ("  (success)" if p["success"] else ""),
            fontsize=9,
            ha="center",
            va="center",
            fontweight="bold" if p["success"] else "normal",
        )
        fig.text(
            (k + 0.5) * panel_px / width,
            (bottom - 12) / height,
            f"prior mean ({m[0]:+.2f}, {m[1]:+.2f}, {m[2]:+.2f})",
            fontsize=7.5,
            ha="center",
            va="center",
            color="#333333",
        )
    fig.text(
        0.005,
        1 - 14 / height,
        f"Meta-World {run['task']}: \u201c{run['instruction']}\u201d",
        fontsize=10,
        fontweight="bold",
        va="center",
    )
    fig.text(0.005, 1 - 25 / height, "\n".join(caption), fontsize=8, va="top", color="#444444", linespacing=1.1)
    return _pixels(fig)


def metaworld_picture(
    prior_path, out, task="reach-v3", seed=1, steps=200, every=40, model_path=None, greedy=False
) -> dict:
    from PIL import Image

    run = metaworld_frames(prior_path, task, seed, steps, every, model_path, greedy)
    strip = draw_metaworld_strip(run)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(strip).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    return {
        "out": str(out),
        "panels": len(run["panels"]),
        "size": list(strip.shape[1::-1]),
        "bytes": os.path.getsize(out),
        "instruction": run["instruction"],
        "success_at": run["success_at"],
        "driver": run["driver"],
    }


# ---------------------------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="env", required=True)
    c = sub.add_parser("clevr", help="a GIF of a lago_ppo_discrete.py agent on CLEVR-Robot with its prior's arrows")
    c.add_argument("model", help="runs/{run_name}/lago_ppo_discrete.cleanrl_model, written by --save-model")
    c.add_argument("--prior-path", required=True, help="the prior's directory (finetune_prior.py's output)")
    c.add_argument("--out", default="docs/prior_at_work.gif")
    c.add_argument("--levels", default=",".join(DEFAULT_LEVELS), help="one episode per level, a comma list")
    c.add_argument("--seed", type=int, default=1, help="the run's --seed (the episodes' seeds add 100,000 + i)")
    c.add_argument("--max-steps", type=int, default=8, help="pushes per episode at most")
    c.add_argument("--greedy", action="store_true", help="the agent's most likely action instead of a sample")
    c.add_argument("--env-id", default="CLEVR-Robot-v0", help="the run's --env-id (CLEVR-Robot-KALM-v0 too)")
    c.add_argument("--width", type=int, default=360, help="frame width in pixels")
    m = sub.add_parser("metaworld", help="a frame strip (PNG) of a Meta-World task with the prior's mean action")
    m.add_argument("--prior-path", required=True, help="a Meta-World prior's directory (finetune_prior.py's output)")
    m.add_argument("--task", default="reach-v3")
    m.add_argument(
        "--model",
        default=None,
        help="a lago_ppo_continuous.py --save-model file (default: none, the prior's mean action drives the episode)",
    )
    m.add_argument("--greedy", action="store_true", help="the agent's mean action instead of a sample")
    m.add_argument("--out", default="docs/prior_at_work_metaworld.png")
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--steps", type=int, default=200, help="episode steps at most (it ends at success)")
    m.add_argument("--every", type=int, default=40, help="a panel every this many steps, and one at the end")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.env == "clevr":
        levels = tuple(s.strip() for s in args.levels.split(",") if s.strip())
        result = clevr_picture(
            args.model,
            args.prior_path,
            args.out,
            levels,
            args.seed,
            args.max_steps,
            args.greedy,
            args.env_id,
            args.width,
        )
        for note in result["notes"]:
            print(f"note: {note}")
        for e in result["episodes"]:
            print(
                f"{e['level']}: {e['instruction']!r} -> {'success' if e['success'] else 'no success'} after "
                f"{e['pushes']} pushes"
            )
        print(
            f"wrote {result['out']}: {result['frames']} frames of {result['size'][0]}x{result['size'][1]}, "
            f"{result['bytes'] / 1024:.0f} KiB"
        )
    else:
        result = metaworld_picture(
            args.prior_path, args.out, args.task, args.seed, args.steps, args.every, args.model, args.greedy
        )
        print(
            f"wrote {result['out']}: {result['panels']} panels, {result['size'][0]}x{result['size'][1]}, "
            f"{result['bytes'] / 1024:.0f} KiB; driven by the {result['driver']}, success at step "
            f"{result['success_at']}"
        )
    return result


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError, PriorError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
