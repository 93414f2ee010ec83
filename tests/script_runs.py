"""Helpers shared by the PPO script tests: run a script in a subprocess, find its run directory, read its scalars."""

import glob
import os
import subprocess
import sys


def run_script(script, args, cwd, check=True):
    """Run `python script args` in `cwd` on one thread, wandb off; assert success unless check=False."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    proc = subprocess.run([sys.executable, script, *args], cwd=cwd, capture_output=True, text=True, env=env)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_dir(cwd):
    """The one runs/{run_name} directory a script wrote under cwd."""
    dirs = glob.glob(os.path.join(cwd, "runs", "*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def scalars(path):
    """Every tensorboard scalar of a run directory: {tag: [values]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
