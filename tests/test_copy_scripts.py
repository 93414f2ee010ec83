"""The design card's use: copy a script into your own project. A PPO script alone runs vanilla PPO on a gymnasium env;
a PPO script with finetune_prior.py beside it runs LaGO on your own env, from your own demonstrations. Each runs in an
empty directory, with nothing of this repository on the import path."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# A user's own env: CartPole whose info carries an instruction (what the prior reads), registered on import
USER_ENV = textwrap.dedent(
    """
    import gymnasium as gym


    class InstructedCartPole(gym.Wrapper):
        def reset(self, **kwargs):
            obs, info = self.env.reset(**kwargs)
            return obs, {**info, "instruction": "keep the pole upright"}

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            return obs, reward, terminated, truncated, {**info, "instruction": "keep the pole upright"}


    gym.register("InstructedCartPole-v0", entry_point=lambda **kw: InstructedCartPole(gym.make("CartPole-v1", **kw)))
    """
)


def run(args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def copy_of(directory: Path, *scripts) -> Path:
    directory.mkdir(exist_ok=True)
    for script in scripts:
        shutil.copy(REPO / script, directory / script)
    return directory


def test_a_ppo_script_alone_runs_vanilla_ppo(tmp_path):
    work = copy_of(tmp_path / "discrete", "lago_ppo_discrete.py")
    proc = run(["lago_ppo_discrete.py", "--env-id", "CartPole-v1", "--kl-coef", "0", "--total-timesteps", "1024"], work)
    assert "global_step=1024/1024" in proc.stdout
    work = copy_of(tmp_path / "continuous", "lago_ppo_continuous.py")
    flags = ["--env-id", "Pendulum-v1", "--kl-coef", "0", "--total-timesteps", "1024", "--num-steps", "256"]
    proc = run(["lago_ppo_continuous.py", *flags], work)
    assert "global_step=1024/1024" in proc.stdout and sorted(os.listdir(work)) == ["lago_ppo_continuous.py", "runs"]


def test_lago_on_your_own_env_with_two_scripts(tmp_path):
    """Demonstrations of a simple expert (push toward the side the pole leans to) on the user's env, stage 1 on them
    with the tiny model, then LaGO guided by that prior: only the two scripts and the user's module on disk."""
    copy_of(tmp_path, "lago_ppo_discrete.py", "finetune_prior.py")
    (tmp_path / "my_env.py").write_text(USER_ENV)
    rng = np.random.default_rng(0)
    obs = rng.normal(0, 0.05, size=(400, 4)).astype(np.float32)
    actions = (obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64)
    np.savez(
        tmp_path / "demos.npz",
        observations=obs,
        actions=actions,
        instructions=np.array(["keep the pole upright"] * 400),
        episode_ids=np.repeat(np.arange(20), 20),
        episode_success=np.ones(20, bool),
        env_id="my_env:InstructedCartPole-v0",
        state_dim=4,
    )
    env_id = "my_env:InstructedCartPole-v0"
    stage1 = ["finetune_prior.py", "--env-id", env_id, "--llm", "tiny-random", "--demos-path", "demos.npz"]
    run([*stage1, "--epochs", "3", "--output-dir", "prior"], tmp_path)
    ppo = ["lago_ppo_discrete.py", "--env-id", env_id, "--prior-path", "prior", "--llm", "tiny-random"]
    proc = run([*ppo, "--total-timesteps", "1024"], tmp_path)
    assert "LaGO prior: prior (llm tiny-random)" in proc.stdout and "prior_kl=" in proc.stdout
    assert set(os.listdir(tmp_path)) - {"__pycache__"} == {
        "demos.npz", "finetune_prior.py", "lago_ppo_discrete.py", "my_env.py", "prior", "runs",
    }  # fmt: skip
