"""Helpers shared by the PPO script tests: run a script (in a subprocess or in this process), find its run directory,
read its tensorboard scalars and hyperparameters."""

import glob
import os
import runpy
import subprocess
import sys

import torch


def run_script(script, args, cwd, check=True):
    """Run `python script args` in `cwd` on one thread, wandb off; assert success unless check=False."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    run = [sys.executable, script, *args]
    proc = subprocess.run(run, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def run_in_process(script, args, cwd, monkeypatch):
    """Run `script` as __main__ in this process (its imports are cached: fast), in `cwd`, on one torch thread, so that
    a test can watch or patch what it calls; returns the script's globals at the end (agent, rewards, b_obs, ...)."""
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return runpy.run_path(str(script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)


def run_dir(cwd):
    """The one runs/{run_name} directory a script wrote under cwd."""
    dirs = glob.glob(os.path.join(cwd, "runs", "*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


def _events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(path):
    """Every tensorboard scalar of a run directory: {tag: [values]}."""
    acc = _events(path)
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def scalar_steps(path):
    """Every tensorboard scalar of a run directory with its global step: {tag: [(step, value)]}."""
    acc = _events(path)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def hyperparameters(path):
    """The run's arguments as the script logged them (the "hyperparameters" text table): {name: value as text}."""
    acc = _events(path)
    (event,) = acc.Tensors("hyperparameters/text_summary")
    table = event.tensor_proto.string_val[0].decode()
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {name: value for name, value in rows}
