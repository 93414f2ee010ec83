"""lago_ppo_continuous.py: end-to-end runs with a tiny-random prior, the Gaussian KL, guidance, and clear errors.
What one update computes is pinned in tests/test_ppo_math.py."""

import functools
import glob
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import script_runs
import torch
from torch.distributions import Independent, Normal

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "lago_ppo_continuous.py")
sys.path.insert(0, str(REPO))

import envs.metaworld
import lago_ppo_continuous as ppo
from envs.metaworld import INSTRUCTIONS, make_env
from finetune_prior import main as finetune_main
from finetune_prior import action_distribution, file_sha256, load_prior

TWO_TASKS = "reach-v3,push-v3"
# tiny budgets: 2 envs x 16 steps per rollout, 8-step episodes, a few minibatches
TINY = [
    "--num-envs",
    "2",
    "--num-steps",
    "16",
    "--max-episode-steps",
    "8",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "2",
]


def run_script(args, cwd, check=True):
    return script_runs.run_script(SCRIPT, args, cwd, check)


@pytest.fixture(scope="module")
def two_task_prior(tmp_path_factory):
    """A tiny-random prior fine-tuned on a few expert steps of reach-v3 and push-v3 (a multi-task prior)."""
    out = tmp_path_factory.mktemp("prior") / "two_tasks"
    code = finetune_main(
        [
            "--env-id",
            TWO_TASKS,
            "--llm",
            "tiny-random",
            "--num-episodes",
            "1",
            "--max-episode-steps",
            "16",
            "--epochs",
            "1",
            "--output-dir",
            str(out),
            "--save-demos-path",
            str(out.parent / "demos.npz"),
        ]
    )
    assert code == 0
    return str(out)


def copy_prior(path, to):
    shutil.copytree(path, to)
    return to


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mean_p, mean_q = torch.randn(3, 4), torch.randn(3, 4)
    std_p, std_q = torch.rand(3, 4) + 0.3, torch.rand(3, 4) + 0.3
    pi, prior = action_distribution((mean_p, std_p)), action_distribution((mean_q, std_q))
    samples = pi.sample((200_000,))
    mc_reverse = (pi.log_prob(samples) - prior.log_prob(samples)).mean(0)
    samples = prior.sample((200_000,))
    mc_forward = (prior.log_prob(samples) - pi.log_prob(samples)).mean(0)
    reverse, forward = ppo.prior_kl(pi, prior, "reverse"), ppo.prior_kl(pi, prior, "forward")
    assert reverse.shape == (3,)  # one KL per state, summed over the 4 action dimensions
    torch.testing.assert_close(reverse, mc_reverse, atol=0.05, rtol=0.02)
    torch.testing.assert_close(forward, mc_forward, atol=0.05, rtol=0.02)
    assert not torch.allclose(reverse, forward)  # the direction matters
    # and it is the textbook formula for diagonal Gaussians
    formula = (torch.log(std_q / std_p) + (std_p**2 + (mean_p - mean_q) ** 2) / (2 * std_q**2) - 0.5).sum(-1)
    torch.testing.assert_close(reverse, formula)


def test_agent_distribution_sums_over_action_dims():
    box = gym.spaces.Box
    spaces = SimpleNamespace(single_observation_space=box(-1, 1, (39,)), single_action_space=box(-1, 1, (4,)))
    agent = ppo.Agent(spaces)
    x = torch.randn(5, 39)
    action, logprob, entropy, value, dist = agent.get_action_and_value(x)
    normal = Normal(agent.actor_mean(x), agent.actor_logstd.exp().expand(5, 4))
    torch.testing.assert_close(logprob, normal.log_prob(action).sum(1))
    torch.testing.assert_close(entropy, normal.entropy().sum(1))
    assert value.shape == (5, 1) and isinstance(dist, Independent)
    torch.testing.assert_close(dist.mean, agent.actor_mean(x))


def test_guided_run_on_reach_pulls_policy_to_prior(tiny_reach_prior, tmp_path, monkeypatch, capsys):
    """reach-v3 with a tiny-random prior and a large beta under the sparse reward, which a random policy in
    8-step episodes never earns: the KL is the only signal, so the policy mean moves to the prior mean. The
    prior's head bias is shifted first, so that its mean is far from the fresh policy's (about 0). (The script
    trains on Meta-World's dense reward; the run here, in this process, makes its envs with the sparse one.)"""
    from safetensors.torch import load_file, save_file

    prior_path = copy_prior(tiny_reach_prior, tmp_path / "prior")
    heads = load_file(prior_path / "heads.safetensors")
    heads["head.bias"][:4] += torch.tensor([0.8, -0.8, 0.8, -0.8])  # the head outputs (mean, raw std)
    save_file(heads, prior_path / "heads.safetensors")
    config = json.loads((prior_path / "prior_config.json").read_text())  # an edited prior needs its new checksum
    config["file_sha256"]["heads.safetensors"] = file_sha256(str(prior_path / "heads.safetensors"))
    (prior_path / "prior_config.json").write_text(json.dumps(config))
    monkeypatch.setattr(envs.metaworld, "make_env", functools.partial(make_env, reward_type="sparse"))
    script_runs.run_in_process(
        SCRIPT,
        [
            "--env-id",
            "reach-v3",
            "--prior-path",
            str(prior_path),
            "--llm",
            "tiny-random",
            "--kl-coef",
            "10",
            "--total-timesteps",
            "192",
            "--learning-rate",
            "3e-2",
            "--save-model",
            *TINY,
            "--update-epochs",
            "10",
        ],
        tmp_path,
        monkeypatch,
    )
    out = capsys.readouterr().out
    assert "LaGO prior:" in out and out.count("global_step=") == 6 and "prior_kl=" in out
    directory = script_runs.run_dir(tmp_path)
    assert script_runs.hyperparameters(directory)["kl_coef"] == "10.0"
    steps = script_runs.scalar_steps(directory)
    assert steps["charts/SPS"][-1][0] == 192  # the whole budget
    assert len(steps["charts/episodic_return"]) == 24  # 12 whole episodes per env, none successful: every reward 0
    assert {value for _, value in steps["charts/episodic_return"] + steps["charts/success_rate"]} == {0.0}
    scalars = script_runs.scalars(directory)
    for tag in ("losses/prior_kl", "charts/kl_coef", "charts/SPS", "charts/episodic_return", "charts/success_rate"):
        assert tag in scalars, tag
    kls = scalars["losses/prior_kl"]
    assert kls[-1] < 0.7 * kls[0], kls  # the KL to the prior falls

    # the saved model (agent + observation statistics) puts its mean near the prior's on fresh reach states
    saved = torch.load(glob.glob(os.path.join(directory, "*.cleanrl_model"))[0])  # weights only: no pickle
    assert set(saved) == {"agent", "obs_rms"} and set(saved["obs_rms"]) == {"mean", "var", "count"}
    prior = load_prior(str(prior_path))
    env = make_env("reach-v3", seed=123, max_episode_steps=8)
    raw = []
    for _ in range(3):
        obs, info = env.reset()
        for _ in range(8):
            raw.append(obs)
            obs, *_ = env.step(env.action_space.sample())
    raw = np.array(raw)
    with torch.inference_mode():
        prior_mean, prior_std = prior(torch.tensor(raw, dtype=torch.float32), [info["instruction"]] * len(raw))
    assert (prior_std >= prior.config["std_floor"]).all()

    spaces = SimpleNamespace(single_observation_space=env.observation_space, single_action_space=env.action_space)
    trained, untrained = ppo.Agent(spaces), ppo.Agent(spaces)
    trained.load_state_dict(saved["agent"])
    rms = SimpleNamespace(**{k: np.asarray(v) for k, v in saved["obs_rms"].items()})
    x = torch.tensor(ppo.normalize_obs(rms, raw), dtype=torch.float32)
    with torch.no_grad():
        gap_after = (trained.get_action_and_value(x)[4].mean - prior_mean).abs().mean()
        gap_before = (untrained.get_action_and_value(x)[4].mean - prior_mean).abs().mean()
        std_gap_after = (trained.actor_logstd.exp() - prior_std).abs().mean()
    assert gap_after < 0.5 * gap_before, (gap_after.item(), gap_before.item())  # measured: about 0.25x
    assert std_gap_after < (1.0 - prior_std).abs().mean()  # and its std toward the prior's


def test_two_task_run_logs_success_and_adapts_beta(two_task_prior, tmp_path, monkeypatch):
    """Two tasks: env i runs task i % 2 (each with its own instruction for the prior), one success rate over both."""
    run = script_runs.run_in_process(
        SCRIPT,
        [
            "--env-id",
            TWO_TASKS,
            "--prior-path",
            two_task_prior,
            "--llm",
            "tiny-random",
            "--kl-coef",
            "0.1",
            "--kl-schedule",
            "adaptive",
            "--kl-target",
            "1e-6",
            "--total-timesteps",
            "96",
            *TINY,
        ],
        tmp_path,
        monkeypatch,
    )
    assert run["instructions"][0] == [INSTRUCTIONS["reach-v3"], INSTRUCTIONS["push-v3"]]
    scalars = script_runs.scalars(script_runs.run_dir(tmp_path))
    assert "charts/success_rate" in scalars
    # adaptive: a KL far above the tiny target raises beta after every update, by its largest step (+10%)
    assert scalars["charts/kl_coef"] == pytest.approx([0.1, 0.11, 0.121])


def test_vanilla_run_never_imports_the_language_model(tmp_path):
    """--kl-coef 0: vanilla PPO; no lago_prior, finetune_prior, transformers or peft imported, even with no prior."""
    code = (
        f"import runpy, sys\nsys.path.insert(0, {str(REPO)!r})\n"
        f"sys.argv = [{SCRIPT!r}, '--kl-coef', '0', '--prior-path', 'does/not/exist', '--total-timesteps', '64', "
        + ", ".join(repr(a) for a in TINY)
        + ", '--save-model']\n"
        f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
        "loaded = sorted(m for m in ('lago_prior', 'finetune_prior', 'transformers', 'peft') if m in sys.modules)\n"
        "print('LOADED', loaded)\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = [sys.executable, "-c", code]
    proc = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "LOADED []" in proc.stdout
    assert "LaGO prior" not in proc.stdout and proc.stdout.count("global_step=") == 2
    directory = script_runs.run_dir(tmp_path)
    steps = script_runs.scalar_steps(directory)
    assert steps["charts/SPS"][-1][0] == 64 and "losses/prior_kl" not in steps and "charts/kl_coef" not in steps
    saved = torch.load(glob.glob(os.path.join(directory, "*.cleanrl_model"))[0])
    assert set(saved) == {"agent", "obs_rms"}


def run_main(args, monkeypatch, tmp_path):
    """Run the script's __main__ in this process (its imports are cached: fast); returns the SystemExit message."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [SCRIPT, *args])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(SCRIPT, run_name="__main__")
    return str(exc.value)


def test_unknown_task_and_bad_flags_fail_clearly(monkeypatch, tmp_path):
    message = run_main(["--env-id", "reach-v2", "--kl-coef", "0"], monkeypatch, tmp_path)
    assert message.startswith("error: ") and "reach-v3" in message  # resolve_tasks suggests the close match
    message = run_main(["--env-id", "Robot-v9", "--kl-coef", "0"], monkeypatch, tmp_path)  # not a gymnasium id either
    assert message.startswith("error: ") and "'Robot-v9'" in message and "MT10" in message
    message = run_main(["--kl-coef", "0", "--total-timesteps", "10"], monkeypatch, tmp_path)
    assert message.startswith("error: ") and "--total-timesteps >= --num-envs x --num-steps" in message
    message = run_main(["--prior-batch-size", "0"], monkeypatch, tmp_path)
    assert message.startswith("error: ") and "--prior-batch-size >= 1" in message
    assert "\n" not in message  # one line


def test_missing_prior_prints_the_finetune_command(monkeypatch, tmp_path):
    """An explicit --prior-path that does not exist is an error naming the command that makes it (a missing default
    prior is made instead: tests/test_ppo_correctness.py)."""
    nowhere = str(tmp_path / "nowhere")
    message = run_main(
        ["--env-id", "push-v3", "--llm", "tiny-random", "--prior-path", nowhere, *TINY], monkeypatch, tmp_path
    )
    assert f"python finetune_prior.py --env-id push-v3 --llm tiny-random --output-dir {nowhere}" in message
    assert not (tmp_path / "priors").exists()


def test_prior_guides_tasks_it_has_no_demonstrations_of(two_task_prior, monkeypatch, tmp_path, capsys):
    """The instruction levels: a prior made on reach and push guides an unseen task and a reworded one, and says so."""
    args = ["--env-id", "window-open-v3,push-v3:rephrase", "--prior-path", two_task_prior, "--llm", "tiny-random"]
    script_runs.run_in_process(SCRIPT, [*args, "--total-timesteps", "64", *TINY], tmp_path, monkeypatch)
    out = capsys.readouterr().out
    assert "no demonstrations of window-open-v3, push-v3:rephrase: it guides from the words" in out
    assert out.count("prior_kl=") == 2  # two iterations, guided


def test_prior_of_other_spaces_is_refused(tiny_clevr_prior, tiny_reach_prior, monkeypatch, tmp_path):
    message = run_main(
        ["--env-id", "reach-v3", "--prior-path", tiny_clevr_prior, "--llm", "tiny-random", *TINY], monkeypatch, tmp_path
    )
    assert "has action space Discrete(40), but reach-v3 has Box(4,)" in message
    assert "python finetune_prior.py --env-id reach-v3" in message
    # a reach prior whose config says it reads observations of another size
    other = copy_prior(tiny_reach_prior, tmp_path / "other_prior")
    config = json.loads((other / "prior_config.json").read_text())
    config["obs_dim"] = 10
    (other / "prior_config.json").write_text(json.dumps(config))
    message = run_main(
        ["--env-id", "reach-v3", "--prior-path", str(other), "--llm", "tiny-random", *TINY], monkeypatch, tmp_path
    )
    assert "observations of size 10" in message
    os.remove(other / "heads.safetensors")
    message = run_main(["--env-id", "reach-v3", "--prior-path", str(other), *TINY], monkeypatch, tmp_path)
    assert message.startswith("error: ") and "incomplete prior directory" in message
