"""The instruction-level protocol (issue 11): PPO trained on a '+' mixture of CLEVR-Robot levels, its saved agent
evaluated per level (benchmark/evaluate.py), a prior fine-tuned on 24-dim observations guiding goal_slots=2 envs
(38 dims), errors that name a bad level, and stage 1 reporting top-1 agreement on each level."""

import json
import re
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

import finetune_prior as fp
import lago_ppo_discrete as ppo
import script_runs
from benchmark.evaluate import evaluate_discrete
from envs.clevr_language import GOAL_DIM, level_instructions, parse_goal_split
from envs.clevr_robot import OBS_DIM, STATE_DIM

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "lago_ppo_discrete.py")
MIXTURE = "train+rephrase+heldout+compose"
TWO_SLOTS = STATE_DIM + 2 * GOAL_DIM  # 38
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


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_envs(obs_dim, n=40):
    """The two attributes fp.load_guidance_prior reads from a vector env."""
    return SimpleNamespace(
        single_observation_space=gym.spaces.Box(-1.0, 1.0, (obs_dim,), np.float32),
        single_action_space=gym.spaces.Discrete(n),
    )


def load_guidance_prior(args, envs):
    """fp.load_guidance_prior as lago_ppo_discrete.py calls it, for the run `args` on the vector env `envs`."""
    return fp.load_guidance_prior(args.env_id, args.llm, args.prior_path, envs)


def finished_run(cwd):
    """(saved model path, its state dict, tensorboard scalars) of the one run under cwd."""
    rdir = script_runs.run_dir(str(cwd))
    model = Path(rdir, "lago_ppo_discrete.cleanrl_model")
    return model, torch.load(model), script_runs.scalars(rdir)


# ------------------------------------------------------------------------------------------------------------
# PPO: levels of training and evaluation
# ------------------------------------------------------------------------------------------------------------
def test_goal_slots_follow_the_training_levels():
    """Any level with two relations makes every env two-slot; one-relation levels keep one slot (same envs, same
    numbers as before)."""
    assert ppo.make_env("CLEVR-Robot-v0", 0, False, "x", goal_split="train")().observation_space.shape == (OBS_DIM,)
    assert ppo.make_env("CLEVR-Robot-v0", 0, False, "x", goal_split=MIXTURE)().observation_space.shape == (TWO_SLOTS,)
    env = ppo.make_env("CLEVR-Robot-v0", 0, False, "x", goal_split="heldout", goal_slots=2)()
    assert env.observation_space.shape == (TWO_SLOTS,) and env.reset(seed=0)[1]["level"] == "heldout"


@pytest.mark.parametrize(
    "goal_split,message",
    [
        ("train+bogus", "unknown level 'bogus'"),
        ("train+train", "names a level twice"),
        ("all+train", "unknown level 'all'"),
        ("nope", "unknown goal_split 'nope'"),
    ],
)
def test_bad_levels_are_refused(goal_split, message):
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        parse_goal_split(goal_split)
    assert "\n" not in str(e.value)
    assert "rephrase" in str(e.value) and "compose" in str(e.value)  # names the accepted levels


def test_bad_goal_split_is_refused_naming_the_level(tmp_path):
    """The script refuses a bad --goal-split before training, with the env's error (which names the accepted levels)
    as the last line of its output."""
    proc = script_runs.run_script(
        SCRIPT, ["--kl-coef", "0", "--goal-split", "train+bogus", *TINY], tmp_path, check=False
    )
    assert proc.returncode != 0, proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert "unknown level 'bogus'" in last and "compose" in last, proc.stderr
    assert "global_step=" not in proc.stdout  # no iteration ran


def test_mixture_run_is_evaluated_on_each_level(tmp_path):
    """PPO on the four-level mixture: two-slot observations (38 inputs), and its saved agent evaluated on each level
    separately (3 episodes each) by benchmark/evaluate.py."""
    script_runs.run_script(SCRIPT, ["--kl-coef", "0", "--goal-split", MIXTURE, "--save-model", *TINY], tmp_path)
    path, model, logs = finished_run(tmp_path)
    assert model["actor.0.weight"].shape == (64, TWO_SLOTS) and model["critic.0.weight"].shape == (64, TWO_SLOTS)
    assert logs["charts/SPS"] and len(logs["losses/value_loss"]) == 3  # 96 steps: 3 iterations
    levels = ["train", "heldout", "rephrase", "compose"]
    result = evaluate_discrete(path, 3, seed=1, levels=levels)
    assert list(result) == levels
    assert all(result[level]["episodes"] == 3 for level in levels)
    assert all(result[level]["success_rate"] in (0.0, 1 / 3, 2 / 3, 1.0) for level in levels)


# ------------------------------------------------------------------------------------------------------------
# A prior fine-tuned with one goal slot guides two-slot envs
# ------------------------------------------------------------------------------------------------------------
def test_one_slot_prior_is_accepted_by_two_slot_envs(tiny_clevr_prior):
    """The prior reads the first state_dim (10) dims: a 24-dim-trained prior loads for 38-dim envs and gives the same
    logits on a 38-dim observation as on its first 24 dims; an observation shorter than state_dim is refused."""
    args = ppo.Args(env_id="CLEVR-Robot-v0", llm="tiny-random", prior_path=tiny_clevr_prior)
    prior, _ = load_guidance_prior(args, fake_envs(TWO_SLOTS))
    assert prior.config["obs_dim"] == OBS_DIM and prior.config["state_dim"] == STATE_DIM
    obs = torch.randn(5, TWO_SLOTS)
    instructions = level_instructions("compose")[:5]
    with torch.inference_mode():
        assert torch.equal(prior(obs, instructions), prior(obs[:, :OBS_DIM], instructions))
    with pytest.raises(fp.PriorError, match=r"reads the first 10 dims .* observations of size 9") as e:
        load_guidance_prior(args, fake_envs(STATE_DIM - 1))
    assert "python finetune_prior.py --env-id CLEVR-Robot-v0 --llm tiny-random" in str(e.value)
    with pytest.raises(fp.PriorError, match=r"Discrete\(5\)"):
        load_guidance_prior(args, fake_envs(TWO_SLOTS, 5))


def test_lago_run_on_a_two_slot_mixture(tiny_clevr_prior, tmp_path):
    """LaGO (beta > 0) with the 24-dim-trained tiny prior on train+compose (38-dim observations): it trains with the
    KL to the prior, and its saved agent is evaluated on the levels asked."""
    script_runs.run_script(
        SCRIPT,
        [
            "--llm",
            "tiny-random",
            "--prior-path",
            tiny_clevr_prior,
            "--kl-coef",
            "0.5",
            "--goal-split",
            "train+compose",
            "--save-model",
            *TINY,
        ],
        tmp_path,
    )
    path, model, logs = finished_run(tmp_path)
    assert model["actor.0.weight"].shape == (64, TWO_SLOTS)
    assert len(logs["losses/prior_kl"]) == 3 and all(np.isfinite(logs["losses/prior_kl"]))
    assert len(logs["charts/kl_coef"]) == 3
    result = evaluate_discrete(path, 2, seed=1, levels=("compose", "rephrase"))
    assert list(result) == ["compose", "rephrase"] and all(r["episodes"] == 2 for r in result.values())


# ------------------------------------------------------------------------------------------------------------
# Stage 1: top-1 agreement on each level
# ------------------------------------------------------------------------------------------------------------
def test_stage1_reports_top1_on_each_eval_level(tmp_path, monkeypatch):
    """The benchmark's per-level evaluation of stage 1 (benchmark/stage1_levels.py): noise-free expert demos of each
    level (compose: 38-dim observations) collected with finetune_prior's recipe and evaluated on their own every epoch,
    each level its own entry in train()'s result and in tensorboard."""
    monkeypatch.chdir(tmp_path)
    env = fp.resolve_env("CLEVR-Robot-v0")
    levels = {}
    for level, dims in (("heldout", OBS_DIM), ("rephrase", OBS_DIM), ("compose", TWO_SLOTS)):
        recipe = fp.demo_recipe(fp.Args(num_episodes=10, demo_noise=0.0, goal_split=level, seed=11), env)
        fp.save_demos(fp.collect_expert_demos(env, recipe), f"{level}.npz")
        levels[f"{level}_goals"] = demos = fp.load_demos(f"{level}.npz", env)  # 38-dim compose demos are accepted
        assert demos["observations"].shape[1] == dims
        assert set(demos["instructions"].tolist()) <= set(level_instructions(level))
    args = fp.Args(llm="tiny-random", num_episodes=20, epochs=1, output_dir="prior")
    _, run = fp.train(args, eval_sets=levels)
    (tb_dir,) = (tmp_path / "runs").iterdir()
    logs = script_runs.scalars(str(tb_dir))
    for name, demos in levels.items():
        assert 0.0 <= run[f"{name}_top1"] <= 1.0 and run[f"{name}_top1"] == run["history"][-1][name]["top1"]
        assert len(logs[f"{name}/top1"]) == 2  # before training and after the epoch


def test_stage1_level_flags(tmp_path, capsys, monkeypatch):
    """Bad levels in --goal-split: one-line errors that say what is accepted; demo files with an observation size
    CLEVR-Robot never has are refused."""
    monkeypatch.chdir(tmp_path)
    for argv, message in (
        (["--goal-split", "train+bogus"], "--goal-split: unknown level 'bogus'"),
        (["--goal-split", "bogus"], "--goal-split: unknown goal_split 'bogus'"),
        (["--goal-split", "rephrase+rephrase"], "--goal-split: goal_split mixture 'rephrase+rephrase' names a level twice"),
    ):
        code = fp.main([*argv, "--llm", "tiny-random", "--output-dir", "prior"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
        assert "heldout" in err or "twice" in err
    bad = {
        "observations": np.zeros((4, 30), np.float32),
        "actions": np.zeros(4, np.int64),
        "instructions": np.array(["Push the red ball left of the blue ball."] * 4),
        "episode_ids": np.zeros(4, np.int64),
        "episode_success": np.ones(1, bool),
        "env_id": "CLEVR-Robot-v0",
        "state_dim": STATE_DIM,
    }
    fp.save_demos(bad, str(tmp_path / "bad.npz"))
    with pytest.raises(fp.PriorError, match="30 dims but CLEVR-Robot-v0 observations have 24 or 38"):
        fp.load_demos(str(tmp_path / "bad.npz"), fp.resolve_env("CLEVR-Robot-v0"))
