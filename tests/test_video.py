"""--capture-video in both PPO scripts, the CleanRL way: env 0 is made with render_mode="rgb_array" and wrapped in
gymnasium's RecordVideo, which writes videos/{run_name}/rl-video-episode-{k}.mp4 (moviepy) for episodes 0, 1, 8, ...

Each test runs a script as CI does, with no display and MUJOCO_GL unset (envs.metaworld.make_env then picks EGL), and
reads the mp4 back with imageio's ffmpeg plugin (imageio-ffmpeg, which moviepy brings). An episode of n steps is
n + 1 frames (reset and every step); moviepy 2.2.1 may drop the last one (ImageSequenceClip's duration is a sum of
floats: Zulko/moviepy#2507), so a count of n is accepted too.
"""

import glob
import os
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import script_runs

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def read_video(path):
    """The frames of an mp4: uint8 array (frames, height, width, 3)."""
    return np.stack(list(iio.imiter(path, plugin="FFMPEG")))


def videos(cwd):
    """{file name: frames} of the one videos/{run_name} directory a script wrote under cwd."""
    dirs = glob.glob(os.path.join(cwd, "videos", "*"))
    assert len(dirs) == 1, dirs
    run_name = os.path.basename(dirs[0])
    assert run_name == os.path.basename(script_runs.run_dir(cwd)), "videos/ and runs/ use the same run_name"
    return {os.path.basename(f): read_video(f) for f in sorted(glob.glob(os.path.join(dirs[0], "*.mp4")))}


def check_frames(frames, shape, most):
    assert frames.dtype == np.uint8 and frames.shape[1:] == shape, frames.shape
    assert 2 <= len(frames) <= most, len(frames)
    assert len({frame.tobytes() for frame in frames}) > 1, "all frames are identical"
    assert frames.std() > 10, "a blank video"


@pytest.fixture
def no_display(monkeypatch):
    """CI's environment: no display, MUJOCO_GL unset (run_script copies os.environ when it runs)."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.delenv(name, raising=False)


def test_discrete_capture_video(tmp_path, no_display):
    steps = 10
    args = ["--kl-coef", "0", "--capture-video", "--total-timesteps", "128", "--num-envs", "2", "--num-steps", "64"]
    script_runs.run_script(str(REPO / "lago_ppo_discrete.py"), [*args, "--max-episode-steps", str(steps)], tmp_path)
    found = videos(tmp_path)
    # env 0 ends at least 6 episodes in 64 steps: episodes 0 and 1 are recorded (8 is not reached); env 1 records none
    assert sorted(found) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"], sorted(found)
    for frames in found.values():  # an episode may end early on success: up to steps + 1 frames
        check_frames(frames, (280, 300, 3), steps + 1)


def test_discrete_make_env_records_every_step(tmp_path, monkeypatch):
    """The discrete script's make_env: one episode to its end, every frame of it in the file."""
    import envs  # noqa: F401  (registers CLEVR-Robot-v0, as the script does)
    import lago_ppo_discrete

    monkeypatch.chdir(tmp_path)
    env = lago_ppo_discrete.make_env("CLEVR-Robot-v0", 0, True, "run", max_episode_steps=10)()
    env.reset(seed=0)
    env.action_space.seed(0)
    n, done, first = 0, False, env.render()
    while not done:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        n, done = n + 1, terminated or truncated
    env.close()
    frames = read_video(tmp_path / "videos" / "run" / "rl-video-episode-0.mp4")
    assert len(frames) in (n, n + 1), (len(frames), n)
    check_frames(frames, (280, 300, 3), n + 1)
    assert np.abs(frames[0].astype(int) - first).mean() < 3, "the first frame is the reset's (h264 is lossy)"


def test_continuous_capture_video(tmp_path, no_display):
    steps = 5  # 8 steps of env 0: episode 0 (5 steps: 6 frames), episode 1 (3 steps: 4 frames) written at close
    # few frames: MuJoCo renders 480x480 in software here (EGL on Mesa's llvmpipe), ~0.3 s a frame on a shared core
    args = ["--env-id", "reach-v3", "--kl-coef", "0", "--capture-video", "--total-timesteps", "8"]
    args += ["--num-envs", "1", "--num-steps", "8", "--num-minibatches", "2", "--update-epochs", "1"]
    script_runs.run_script(str(REPO / "lago_ppo_continuous.py"), [*args, "--max-episode-steps", str(steps)], tmp_path)
    found = videos(tmp_path)
    assert sorted(found) == ["rl-video-episode-0.mp4", "rl-video-episode-1.mp4"], sorted(found)
    assert len(found["rl-video-episode-0.mp4"]) in (steps, steps + 1)  # no early end: reach-v3 runs to truncation
    assert len(found["rl-video-episode-1.mp4"]) in (3, 4)
    for frames in found.values():
        check_frames(frames, (480, 480, 3), steps + 1)


def test_metaworld_render_mode_checked():
    from envs.metaworld import make_env

    with pytest.raises(ValueError, match="render_mode"):
        make_env("reach-v3", 0, render_mode="rgb")
    with pytest.raises(ValueError, match="camera_name"):
        make_env("reach-v3", 0, camera_name="corner")
