"""lago_ppo_discrete.py: the exact KL, the beta schedules, guidance pulling the policy to the prior,
end-to-end runs on CLEVR-Robot with a tiny-random prior (reproducible), vanilla PPO without the LLM, clear errors.
What one update computes is pinned in tests/test_ppo_math.py."""

import glob
import itertools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import script_runs
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "lago_ppo_discrete.py")
sys.path.insert(0, str(REPO))

import lago_ppo_discrete as ppo
from envs.clevr_robot import OBS_DIM
from finetune_prior import PriorError, action_distribution
import finetune_prior as fp

# tiny budgets: 2 envs x 16 steps per rollout, 3 rollouts
TINY = [
    "--num-envs",
    "2",
    "--num-steps",
    "16",
    "--total-timesteps",
    "96",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "2",
]


# the reproducibility run: 3 rollouts of 32 steps per env, 96 steps per env, past CLEVR-Robot's 50-step limit
REPRO = [
    "--num-envs",
    "2",
    "--num-steps",
    "32",
    "--total-timesteps",
    "192",
    "--num-minibatches",
    "2",
    "--update-epochs",
    "2",
]


def run_script(args, cwd, check=True):
    return script_runs.run_script(SCRIPT, args, cwd, check)


@pytest.fixture
def one_thread():
    """Tiny MLPs: one torch thread (a second one only waits on the shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_envs(obs_dim, n):
    """The two attributes Agent and fp.load_guidance_prior read from a vector env."""
    return SimpleNamespace(
        single_observation_space=gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32),
        single_action_space=gym.spaces.Discrete(n),
    )


def load_guidance_prior(args, envs):
    """fp.load_guidance_prior as the script calls it, for the run `args` on the vector env `envs`."""
    return fp.load_guidance_prior(args.env_id, args.llm, args.prior_path, envs)


# ------------------------------------------------------------------------------------------------------------
# LaGO functions
# ------------------------------------------------------------------------------------------------------------
def test_kl_equals_direct_sum_both_directions():
    policy_logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    prior_logits = torch.tensor([[0.0, 1.0, 0.0, -3.0], [5.0, -2.0, 0.0, 1.0]])
    p, q = policy_logits.softmax(-1), prior_logits.softmax(-1)
    reverse = (p * (p / q).log()).sum(-1)  # KL(pi || prior)
    forward = (q * (q / p).log()).sum(-1)  # KL(prior || pi)
    pi, prior = torch.distributions.Categorical(logits=policy_logits), action_distribution(prior_logits)
    torch.testing.assert_close(ppo.prior_kl(pi, prior, "reverse"), reverse)
    torch.testing.assert_close(ppo.prior_kl(pi, prior, "forward"), forward)
    assert not torch.allclose(reverse, forward)  # the fixed tensors do tell the directions apart
    assert ppo.prior_kl(pi, action_distribution(policy_logits)).abs().max() < 1e-6


def test_fixed_schedules():
    assert ppo.kl_coef_schedule("constant", 0.3, 7, 10) == 0.3
    linear = [ppo.kl_coef_schedule("linear", 0.5, i, 10) for i in range(1, 11)]
    assert linear[0] == 0.5 and linear[-1] == pytest.approx(0.05)
    assert all(a > b for a, b in itertools.pairwise(linear))


def test_adaptive_controller_steers_beta_toward_the_target():
    update = ppo.update_adaptive_kl_coef
    assert update(1.0, measured_kl=0.5, kl_target=0.1) == pytest.approx(1.1)  # far from the prior: pull harder
    assert 1.0 < update(1.0, measured_kl=0.12, kl_target=0.1) < 1.1
    assert update(1.0, measured_kl=0.0, kl_target=0.1) == pytest.approx(0.9)  # close to it: let RL act
    assert update(1.0, measured_kl=0.1, kl_target=0.1) == 1.0
    assert update(1e3, measured_kl=9.0, kl_target=0.1) == 1e3 and update(1e-4, 0.0, 0.1) == 1e-4  # bounded, never 0
    # closed loop on a plant whose KL falls as beta rises (KL = 0.5 / beta): beta settles where KL = target
    beta = 1.0
    for _ in range(300):
        beta = update(beta, measured_kl=0.5 / beta, kl_target=0.1)
    assert beta == pytest.approx(5.0, rel=0.02)


@pytest.mark.parametrize("direction", ["reverse", "forward"])
def test_large_beta_without_reward_moves_the_policy_to_the_prior(direction, one_thread):
    """No reward signal (zero advantages: the clipped surrogate vanishes) and a large constant beta: the loss is
    entropy bonus + beta * KL, and the policy's distribution converges to the prior's at every state."""
    torch.manual_seed(0)
    agent = ppo.Agent(fake_envs(obs_dim=6, n=5))
    obs = torch.randn(256, 6)
    prior_logits = 3.0 * torch.tanh(obs @ torch.randn(6, 5))  # a state-dependent, fairly peaked prior
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-2, eps=1e-5)
    actions = torch.randint(0, 5, (256,))
    kls = []
    for _ in range(150):
        _, newlogprob, entropy, _, dist = agent.get_action_and_value(obs, actions)
        ratio = (newlogprob - newlogprob.detach()).exp()
        pg_loss = (-torch.zeros(256) * ratio).mean()
        kl = ppo.prior_kl(dist, action_distribution(prior_logits), direction).mean()
        loss = pg_loss - 0.01 * entropy.mean() + 10.0 * kl
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(agent.parameters(), 0.5)
        optimizer.step()
        kls.append(kl.item())
    assert kls[0] > 0.5
    assert kls[-1] < 0.01  # nats, from 0.8-1.7
    with torch.no_grad():
        policy_probs = agent.get_action_and_value(obs)[4].probs
    assert (policy_probs.argmax(-1) == prior_logits.argmax(-1)).float().mean() > 0.9


# ------------------------------------------------------------------------------------------------------------
# The prior: loading and refusing
# ------------------------------------------------------------------------------------------------------------
def test_missing_prior_names_the_finetune_command(tmp_path):
    args = ppo.Args(env_id="CLEVR-Robot-v0", llm="tiny-random", prior_path=str(tmp_path / "nowhere"))
    with pytest.raises(PriorError) as e:
        load_guidance_prior(args, fake_envs(13, 40))
    assert "python finetune_prior.py --env-id CLEVR-Robot-v0 --llm tiny-random" in str(e.value)
    assert "nowhere" in str(e.value)


def test_mismatched_prior_is_refused(tiny_clevr_prior):
    clevr = ppo.Args(env_id="CLEVR-Robot-v0", llm="tiny-random", prior_path=tiny_clevr_prior)
    prior, path = load_guidance_prior(clevr, fake_envs(OBS_DIM, 40))
    assert path == tiny_clevr_prior and prior.config["action_space"] == {"type": "discrete", "n": 40}
    cartpole = ppo.Args(env_id="CartPole-v1", llm="tiny-random", prior_path=tiny_clevr_prior)
    with pytest.raises(PriorError, match="made for env 'CLEVR-Robot-v0', not --env-id 'CartPole-v1'") as e:
        load_guidance_prior(cartpole, fake_envs(4, 2))
    assert "python finetune_prior.py --env-id CartPole-v1 --llm tiny-random" in str(e.value)
    with pytest.raises(PriorError, match=r"Discrete\(5\)"):
        load_guidance_prior(clevr, fake_envs(OBS_DIM, 5))
    # the prior reads the first state_dim (10) dims: shorter observations are refused, longer ones
    # (goal_slots=2) are not
    with pytest.raises(
        PriorError, match="reads the first 10 dims of each observation, but CLEVR-Robot-v0 gives observations of size 7"
    ):
        load_guidance_prior(clevr, fake_envs(7, 40))
    assert load_guidance_prior(clevr, fake_envs(OBS_DIM + 14, 40))[1] == tiny_clevr_prior


# ------------------------------------------------------------------------------------------------------------
# End-to-end runs of the script
# ------------------------------------------------------------------------------------------------------------
def test_lago_run_on_clevr_is_complete_and_reproducible(tiny_clevr_prior, tmp_path):
    """Two identical runs (tiny-random prior, adaptive beta, CPU, same seed) give bit-identical models and logs."""
    results = []
    for name in ("a", "b"):
        cwd = tmp_path / name
        cwd.mkdir()
        proc = run_script(
            [
                "--llm",
                "tiny-random",
                "--prior-path",
                tiny_clevr_prior,
                "--kl-coef",
                "0.5",
                "--kl-schedule",
                "adaptive",
                "--save-model",
                *REPRO,
            ],
            cwd,
        )
        assert proc.stdout.count("LaGO prior: ") == 1 and proc.stdout.count("global_step=") == 3
        rdir = script_runs.run_dir(cwd)
        model = torch.load(Path(rdir, "lago_ppo_discrete.cleanrl_model"))
        results.append((model, script_runs.scalar_steps(rdir), script_runs.hyperparameters(rdir)))
        assert not glob.glob(os.path.join(rdir, "*.tmp"))

    (model, logs, hparams), (model_b, logs_b, _) = results
    assert [step for step, _ in logs["charts/SPS"]] == [64, 128, 192]  # the whole budget
    assert hparams["kl_schedule"] == "adaptive" and hparams["kl_coef"] == "0.5"
    # an episode reached the 50-step limit: truncations are in the run
    assert 50.0 in [length for _, length in logs["charts/episodic_length"]]
    assert all(0.0 <= rate <= 1.0 for _, rate in logs["charts/success_rate"])
    for tag in ("losses/prior_kl", "charts/kl_coef", "charts/SPS", "losses/value_loss"):
        assert len(logs[tag]) == 3, tag
    kl_coefs = [beta for _, beta in logs["charts/kl_coef"]]
    assert kl_coefs[0] == 0.5
    assert all(0.9 - 1e-6 <= b / a <= 1.1 + 1e-6 for a, b in itertools.pairwise(kl_coefs))
    # reproducible: same seed on CPU -> same numbers
    assert model.keys() == model_b.keys()
    for key in model:
        assert torch.equal(model[key], model_b[key]), key
    for tag in (
        "losses/prior_kl",
        "losses/value_loss",
        "losses/policy_loss",
        "charts/kl_coef",
        "charts/episodic_return",
        "charts/success_rate",
    ):
        assert logs[tag] == logs_b[tag], tag


def test_vanilla_run_never_imports_the_language_model(tmp_path):
    """--kl-coef 0: PPO through the same code, the prior path is never looked at, no LLM library is imported."""
    code = (
        "import runpy, sys, json\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        f"sys.argv = ['lago_ppo_discrete.py', '--kl-coef', '0', '--prior-path', 'no/such/prior', "
        f"'--llm', 'Qwen2.5-7B', *{TINY!r}]\n"
        f"runpy.run_path({SCRIPT!r}, run_name='__main__')\n"
        "print('IMPORTED', json.dumps(sorted(m for m in ('transformers', 'peft', 'lago_prior', 'finetune_prior')"
        " if m in sys.modules)))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="disabled")
    run = [sys.executable, "-c", code]
    proc = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "IMPORTED []" in proc.stdout and "LaGO prior" not in proc.stdout
    rdir = script_runs.run_dir(str(tmp_path))
    tags = script_runs.scalars(rdir)
    assert "losses/prior_kl" not in tags and "charts/kl_coef" not in tags and "charts/SPS" in tags
    assert script_runs.hyperparameters(rdir)["kl_coef"] == "0.0"


def test_script_errors_are_clear(tmp_path):
    """No prior at the default location -> stage 1 is started (here it cannot reach the Hub: a one-line error with the
    offline choices); bad counts and bad LaGO flags -> one line "error: ..."; a Box action space -> CleanRL's assert.
    """
    proc = run_script(["--llm", "Qwen2.5-1.5B", *TINY], tmp_path, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "python finetune_prior.py --env-id CLEVR-Robot-v0 --llm Qwen2.5-1.5B" in proc.stdout
    assert "priors/CLEVR-Robot-v0__Qwen2.5-1.5B" in proc.stdout
    assert proc.stderr.startswith("error: --llm 'Qwen2.5-1.5B'") and "tiny-random" in proc.stderr
    assert not (tmp_path / "demos").exists()  # the model is checked before any demonstration is collected
    proc = run_script(["--kl-coef", "0", "--goal-split", "bogus", *TINY], tmp_path, check=False)
    assert proc.returncode != 0 and proc.stderr.startswith("error: --goal-split: ") and proc.stderr.count("\n") == 1
    assert "hard" in proc.stderr and "hard" in run_script(["--help"], tmp_path).stdout
    assert not (tmp_path / "priors").exists()

    proc = run_script(["--env-id", "Pendulum-v1", "--kl-coef", "0", *TINY], tmp_path, check=False)
    assert proc.returncode != 0 and "only discrete action space is supported" in proc.stderr

    for flags, names in (
        (["--prior-batch-size", "0"], "--prior-batch-size >= 1"),
        (["--num-envs", "0"], "--num-envs"),
        (["--total-timesteps", "8"], "--total-timesteps >= --num-envs x --num-steps"),
    ):
        proc = run_script([*TINY, *flags], tmp_path, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, flags
        (line,) = proc.stderr.splitlines()
        assert line.startswith("error: ") and names in line, line


@pytest.mark.slow
def test_vanilla_ppo_solves_cartpole(tmp_path):
    """CleanRL's defaults on CartPole-v1: average return above 400 within 500k steps (several minutes)."""
    run_script(["--env-id", "CartPole-v1", "--kl-coef", "0", "--total-timesteps", "500000"], tmp_path)
    returns = script_runs.scalars(script_runs.run_dir(str(tmp_path)))["charts/episodic_return"]
    assert np.mean(returns[-20:]) > 400  # the last 20 training episodes
