"""Correctness of both PPO scripts, pinned on values they must compute: the truncation bootstrap in a real run,
paired seeds with and without guidance, the adaptive beta's direction in a real run, the continuous prior reading
raw observations, bad flags refused, an interrupted fine-tuning leaving no half-written prior, and the default prior
made on first use (stage 1 from inside stage 2). What one update computes (loss, gradients, GAE, the bootstrap
against written-out formulas) is pinned in tests/test_ppo_math.py."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import script_runs
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import finetune_prior
import finetune_prior as fp
import lago_ppo_discrete

DISCRETE, CONTINUOUS = str(REPO / "lago_ppo_discrete.py"), str(REPO / "lago_ppo_continuous.py")
# tiny budgets: one or a few rollouts of 2 envs
CLEVR_TINY = [
    "--num-envs",
    "2",
    "--num-steps",
    "64",
    "--total-timesteps",
    "128",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
]
REACH_TINY = [
    "--num-envs",
    "2",
    "--num-steps",
    "40",
    "--total-timesteps",
    "80",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "1",
    "--max-episode-steps",
    "16",
]


def scalar_events(run_dir, tag):
    """[(step, value)] of one tensorboard scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def run_in_process(script, argv, cwd, monkeypatch):
    """Run a script as __main__ in this process (so a test can watch what it hands the prior); its globals."""
    return script_runs.run_in_process(script, argv, cwd, monkeypatch)


# ------------------------------------------------------------------------------------------------------------
# The truncation bootstrap in a real run (the exact values: tests/test_ppo_math.py)
# ------------------------------------------------------------------------------------------------------------
def test_the_script_bootstraps_its_truncations(tmp_path, monkeypatch):
    """CLEVR-Robot pays 1 on success and 0 otherwise; with 3-step episodes most end by truncation, and the script must
    add gamma * V(final obs) there: the last rollout's stored rewards then hold values other than 0 and 1."""
    run = run_in_process(
        DISCRETE,
        [
            "--kl-coef",
            "0",
            "--max-episode-steps",
            "3",
            "--num-envs",
            "2",
            "--num-steps",
            "32",
            "--total-timesteps",
            "64",
        ],
        tmp_path,
        monkeypatch,
    )
    rewards = run["rewards"].flatten()
    bootstrapped = (rewards != 0) & (rewards != 1)
    assert bootstrapped.sum() >= 5, rewards
    assert (rewards[bootstrapped].abs() < 2).all()  # gamma * V of a freshly initialised critic: small


# ------------------------------------------------------------------------------------------------------------
# Paired seeds: the prior consumes nothing of the run's random streams
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_same_seed_same_first_rollout_with_and_without_guidance(kind, tiny_clevr_prior, tiny_reach_prior, tmp_path):
    script, prior, budget = (
        (DISCRETE, tiny_clevr_prior, CLEVR_TINY) if kind == "discrete" else (CONTINUOUS, tiny_reach_prior, REACH_TINY)
    )
    first_rollout = {}
    for name, guidance in (("ppo", ["--kl-coef", "0"]), ("lago", ["--kl-coef", "1", "--prior-path", prior])):
        (tmp_path / name).mkdir()
        script_runs.run_script(script, ["--llm", "tiny-random", *guidance, *budget], tmp_path / name)
        rdir = script_runs.run_dir(str(tmp_path / name))
        first_rollout[name] = [scalar_events(rdir, tag) for tag in ("charts/episodic_length", "charts/episodic_return")]
    lengths, returns = first_rollout["ppo"]
    assert len(lengths) >= 2 and len({round(r, 6) for _, r in returns}) >= 1  # episodes ended in the rollout
    assert first_rollout["lago"] == first_rollout["ppo"]


# ------------------------------------------------------------------------------------------------------------
# The adaptive beta moves the right way in a real run, driven by the rollout policy's KL
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, factor", [(1000.0, 0.9), (1e-6, 1.1)])
def test_adaptive_beta_follows_the_kl_target(target, factor, tiny_clevr_prior, tmp_path):
    """KL far below the target: beta shrinks by the controller's full 10% every update; far above: grows by 10%."""
    script_runs.run_script(
        DISCRETE,
        [
            "--llm",
            "tiny-random",
            "--prior-path",
            tiny_clevr_prior,
            "--kl-coef",
            "0.5",
            "--kl-schedule",
            "adaptive",
            "--kl-target",
            str(target),
            "--num-envs",
            "2",
            "--num-steps",
            "16",
            "--total-timesteps",
            "96",
        ],
        tmp_path,
    )
    logs = script_runs.scalars(script_runs.run_dir(str(tmp_path)))
    np.testing.assert_allclose(logs["charts/kl_coef"], [0.5, 0.5 * factor, 0.5 * factor**2], rtol=1e-3)
    assert len(logs["losses/prior_kl"]) == 3 and min(logs["losses/prior_kl"]) > 0


# ------------------------------------------------------------------------------------------------------------
# What the continuous prior reads: the raw observations, not the policy's normalised ones
# ------------------------------------------------------------------------------------------------------------
class RecordingPrior:
    """The real prior, with a record of the observations it was given."""

    def __init__(self, prior):
        self.prior, self.config, self.seen = prior, prior.config, []

    def __call__(self, observations, instructions):
        self.seen.append(torch.as_tensor(observations).clone())
        return self.prior(observations, instructions)


def test_continuous_prior_reads_raw_observations(tiny_reach_prior, tmp_path, monkeypatch):
    recorders = []
    load = fp.load_prior

    def recording_load(*args, **kwargs):
        recorders.append(RecordingPrior(load(*args, **kwargs)))
        return recorders[-1]

    monkeypatch.setattr(fp, "load_prior", recording_load)
    run_in_process(
        CONTINUOUS, ["--prior-path", tiny_reach_prior, "--llm", "tiny-random", *REACH_TINY], tmp_path, monkeypatch
    )
    seen = torch.cat(recorders[0].seen)
    assert seen.shape == (80, 39)
    # reach-v3's raw goal (obs 36:39) lies in x [-0.1, 0.1], y [0.8, 0.9], z [0.05, 0.3]; the hand is above the table
    assert (seen[:, 37] > 0.75).all() and (seen[:, 37] < 0.95).all() and (seen[:, 36].abs() < 0.15).all()
    assert (seen[:, 2] > 0).all()


# ------------------------------------------------------------------------------------------------------------
# Bad flags: one line that says what is accepted, never a traceback or a silently wrong run
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("script", [DISCRETE, CONTINUOUS], ids=["discrete", "continuous"])
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--kl-coef", "-1"], "--kl-coef >= 0 (0: vanilla PPO)"),
        (["--kl-schedule", "adaptive", "--kl-target", "0"], "--kl-target > 0"),
        (["--prior-fraction", "0"], "0 < --prior-fraction <= 1"),
        (["--prior-batch-size", "0"], "--prior-batch-size >= 1"),
        (["--num-envs", "0"], "--num-envs"),
        (["--num-minibatches", "0"], "--num-minibatches"),
        (["--update-epochs", "0"], "--update-epochs"),
        (["--num-envs", "2", "--num-steps", "10", "--total-timesteps", "19"], "--total-timesteps >= --num-envs x"),
        (["--num-envs", "4", "--num-steps", "128", "--num-minibatches", "7"], "--num-minibatches dividing"),
    ],
)
def test_bad_flags_are_refused(script, flags, message, tmp_path, monkeypatch):
    with pytest.raises(SystemExit) as e:
        run_in_process(script, flags, tmp_path, monkeypatch)
    assert str(e.value.code).startswith("error: ") and message in str(e.value.code)
    assert "\n" not in str(e.value.code)  # one line
    assert not (tmp_path / "runs").exists()


def test_residual_policy_flags_are_refused(tmp_path, monkeypatch):
    for flags in (["--kl-coef", "0"], ["--prior-fraction", "0.5"]):
        with pytest.raises(SystemExit) as e:
            run_in_process(DISCRETE, ["--residual-policy", *flags], tmp_path, monkeypatch)
        assert str(e.value.code).startswith("error: --residual-policy") and "\n" not in str(e.value.code)


# ------------------------------------------------------------------------------------------------------------
# --residual-policy (ours): the policy's logits are the prior's plus the actor's
# ------------------------------------------------------------------------------------------------------------
def test_residual_policy_starts_as_its_prior_and_is_evaluated_with_it(tiny_clevr_prior, tmp_path):
    from benchmark.evaluate import evaluate_discrete

    first_kl, models = {}, {}
    for name, flags in (("kl", []), ("residual", ["--residual-policy"])):
        (tmp_path / name).mkdir()
        args = ["--llm", "tiny-random", "--prior-path", tiny_clevr_prior, "--save-model", *flags, *CLEVR_TINY]
        script_runs.run_script(DISCRETE, args, tmp_path / name)
        rdir = script_runs.run_dir(str(tmp_path / name))
        first_kl[name] = script_runs.scalars(rdir)["losses/prior_kl"][0]
        models[name] = next(Path(rdir).glob("*.cleanrl_model"))
    # the first rollout's policy: the actor's logits start near 0 (its last layer's std 0.01), so the residual
    # policy is its prior, where the plain actor is near uniform over the 40 pushes
    assert first_kl["residual"] < 1e-3 and first_kl["kl"] > 0.05
    with pytest.raises(ValueError, match="--residual-policy"):
        evaluate_discrete(models["residual"], 2, seed=1, levels=("train",))
    with pytest.raises(ValueError, match="without --residual-policy"):
        evaluate_discrete(models["kl"], 2, seed=1, levels=("train",), residual_prior=tiny_clevr_prior)
    runs = [evaluate_discrete(models["residual"], 4, 1, ("train",), residual_prior=tiny_clevr_prior) for _ in "ab"]
    assert runs[0] == runs[1] and runs[0]["train"]["episodes"] == 4


@pytest.mark.parametrize("broken", ["heads.safetensors", "adapter/adapter_model.safetensors"])
def test_truncated_prior_files_are_refused(broken, tiny_clevr_prior, tmp_path):
    path = tmp_path / "prior"
    shutil.copytree(tiny_clevr_prior, path)
    data = (path / broken).read_bytes()
    (path / broken).write_bytes(data[: len(data) // 2])
    args = lago_ppo_discrete.Args(llm="tiny-random", prior_path=str(path))
    envs = lago_ppo_discrete.gym.vector.SyncVectorEnv([lago_ppo_discrete.make_env("CLEVR-Robot-v0", 0, False, "x")])
    with pytest.raises(fp.PriorError, match=f"{broken} in the prior at .* is corrupt or truncated"):
        fp.load_guidance_prior(args.env_id, args.llm, args.prior_path, envs)


# ------------------------------------------------------------------------------------------------------------
# Interrupts: no half-written prior, and a message that says so
# ------------------------------------------------------------------------------------------------------------
def interrupt_after(cmd, cwd, marker):
    """Start cmd, send Ctrl-C (SIGINT) once a line containing `marker` is printed; (returncode, stdout, stderr)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled", PYTHONUNBUFFERED="1")
    # SIGINT back to its default in the child: a test run started in the background inherits it ignored
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=restore
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if marker in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, "".join(lines) + out, err


def test_ctrl_c_during_fine_tuning_saves_nothing(tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "finetune_prior.py"),
        "--env-id",
        "CLEVR-Robot-v0",
        "--llm",
        "tiny-random",
        "--num-episodes",
        "30",
        "--epochs",
        "1000",
    ]
    code, _, err = interrupt_after(cmd, tmp_path, "before training")
    assert code == 130 and "Traceback" not in err
    assert "interrupted: no prior was saved to priors/CLEVR-Robot-v0__tiny-random" in err
    assert not (tmp_path / "priors").exists()
    assert [p.name for p in (tmp_path / "demos").iterdir()] == [
        "CLEVR-Robot-v0__30ep__noise0.3__expert__train__seed1__T50.npz"
    ]
    again = subprocess.run([*cmd[:-1], "1"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and "reusing the demonstrations in demos/CLEVR-Robot-v0__30ep" in again.stdout


def test_interrupted_save_keeps_the_previous_prior(tiny_clevr_prior, tmp_path, monkeypatch):
    target = tmp_path / "prior"
    shutil.copytree(tiny_clevr_prior, target)
    before = sorted(p.name for p in target.rglob("*"))
    prior = fp.load_prior(str(target))

    def interrupted_save(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fp, "save_file", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        fp.save_prior(prior, str(target))
    assert [p.name for p in tmp_path.iterdir()] == ["prior"]  # no temporary directory left
    assert sorted(p.name for p in target.rglob("*")) == before


# ------------------------------------------------------------------------------------------------------------
# The prior ignores observation dims that never varied in the demonstrations
# ------------------------------------------------------------------------------------------------------------
def test_dims_constant_in_the_demos_do_not_move_the_prior(tiny_reach_run):
    prior = fp.load_prior(tiny_reach_run["prior"])
    ignored = prior.config["obs_ignored"]
    demos = np.load(tiny_reach_run["demos"])
    states = demos["observations"][:8].astype(np.float32)
    assert ignored and set(ignored) == set(np.flatnonzero(demos["observations"].std(0) < finetune_prior.OBS_STD_MIN))
    moved = states.copy()
    moved[:, ignored] += 3.0  # e.g. the object knocked over: a state no demonstration showed
    informative = next(i for i in range(39) if i not in ignored)
    shifted = states.copy()
    shifted[:, informative] += 3.0 * prior.config["obs_std"][informative]
    instructions = [str(s) for s in demos["instructions"][:8]]
    with torch.inference_mode():
        base, far, other = (prior(torch.tensor(x), instructions) for x in (states, moved, shifted))
    torch.testing.assert_close(far, base)
    assert not torch.allclose(other[0], base[0])


# ------------------------------------------------------------------------------------------------------------
# The design card's command: a missing default prior is made (stage 1), then reused
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_first_run_makes_the_default_prior_and_the_next_reuses_it(kind, tmp_path):
    script, env_id, budget = (
        (DISCRETE, "CLEVR-Robot-v0", CLEVR_TINY) if kind == "discrete" else (CONTINUOUS, "reach-v3", REACH_TINY)
    )
    cmd = ["--env-id", env_id, "--llm", "tiny-random", *budget]
    first = script_runs.run_script(script, cmd, tmp_path)
    prior = tmp_path / "priors" / f"{env_id}__tiny-random"
    making = f"making it first (stage 1), as `python finetune_prior.py --env-id {env_id} --llm tiny-random`"
    assert making in first.stdout
    # stage 1 ran as that command (its last line follows the message), then the PPO run used the prior it made
    done = f"saved the prior to priors/{env_id}__tiny-random"
    assert first.stdout.index(making) < first.stdout.index(done) and (prior / "prior_config.json").exists()
    assert f"LaGO prior: priors/{env_id}__tiny-random" in first.stdout and "prior_kl=" in first.stdout
    config = json.loads((prior / "prior_config.json").read_text())
    assert config["llm"] == "tiny-random" and config["env_id"] == env_id
    saved = (prior / "heads.safetensors").stat().st_mtime_ns
    second = script_runs.run_script(script, cmd, tmp_path)
    assert "making it first" not in second.stdout and "saved the prior" not in second.stdout
    assert (prior / "heads.safetensors").stat().st_mtime_ns == saved
