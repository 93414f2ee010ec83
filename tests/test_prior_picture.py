"""benchmark/prior_picture.py: the GIF of an agent on CLEVR-Robot with its prior's arrows, and the Meta-World strip.

An untrained agent (the script's Agent, seeded) and the session's tiny priors: a few frames each."""

import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageSequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _untrained_clevr_agent(path):
    import gymnasium as gym

    import envs  # noqa: F401
    import lago_ppo_discrete
    from benchmark.evaluate import _spaces

    env = gym.make("CLEVR-Robot-v0")
    torch.manual_seed(0)
    torch.save(lago_ppo_discrete.Agent(_spaces(env.observation_space, env.action_space)).state_dict(), path)
    return str(path)


def test_clevr_gif(tiny_clevr_prior, tmp_path):
    from benchmark import prior_picture
    from envs.clevr_robot import COLOR_RGB, ClevrRobotEnv

    # the projection: each sphere's centre lands on a pixel of its colour in the rendered frame
    env = ClevrRobotEnv(render_mode="rgb_array")
    env.reset(seed=3)
    img = env.render()
    for i, (col, row) in enumerate(np.rint(prior_picture.clevr_world_to_pixel(env.positions())).astype(int)):
        assert tuple(img[row, col]) == COLOR_RGB[i]

    model = _untrained_clevr_agent(tmp_path / "agent.cleanrl_model")
    out = tmp_path / "picture.gif"
    threads = torch.get_num_threads()
    try:
        result = prior_picture.main(
            [
                "clevr",
                model,
                "--prior-path",
                tiny_clevr_prior,
                "--out",
                str(out),
                "--levels",
                "train,compose",
                "--max-steps",
                "2",
            ]
        )
    finally:
        torch.set_num_threads(threads)
    assert len(result["notes"]) == 1 and "'compose'" in result["notes"][0]  # the agent reads one goal slot
    (episode,) = result["episodes"]
    frames_expected = (episode["pushes"] + 1) if episode["success"] else 3  # 2 pushes + the end state
    gif = Image.open(out)
    assert gif.n_frames == result["frames"] == frames_expected == 3
    assert gif.size == tuple(result["size"]) and gif.size[0] == 360 and 400 < gif.size[1] < 520
    frames = [np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(gif)]
    for a, b in itertools.pairwise(frames):
        assert np.abs(a - b).sum(-1).astype(bool).mean() > 0.005  # the scene, the arrows or the text changed
    assert out.stat().st_size < 1_000_000


def test_metaworld_strip(tiny_reach_prior, tmp_path):
    from benchmark import prior_picture

    out = tmp_path / "strip.png"
    threads = torch.get_num_threads()
    try:
        result = prior_picture.main(
            ["metaworld", "--prior-path", tiny_reach_prior, "--out", str(out), "--steps", "2", "--every", "1"]
        )
    finally:
        torch.set_num_threads(threads)
    assert result["panels"] == 3 and result["driver"] == "prior mean"
    png = Image.open(out)
    assert png.size == tuple(result["size"]) and png.size[0] == 3 * 260
