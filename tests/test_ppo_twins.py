"""lago_ppo_discrete.py and lago_ppo_continuous.py are twins: the blocks they duplicate (KL to the prior, beta
schedules, the prior over the rollout in batches, logging) behave the same on the same inputs, and both load their
prior with fp.load_guidance_prior."""

import glob
import inspect
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import script_runs
import torch
from torch.distributions import Categorical, Independent, Normal

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import lago_ppo_continuous as cont
import lago_ppo_discrete as disc
import finetune_prior as fp

TWINS = pytest.mark.parametrize("a,b", [(disc, cont)], ids=["discrete-continuous"])


@TWINS
def test_duplicated_functions_have_the_same_signature(a, b):
    for name in ("layer_init", "prior_kl", "kl_coef_schedule", "update_adaptive_kl_coef"):
        assert inspect.signature(getattr(a, name)) == inspect.signature(getattr(b, name)), name
    only_discrete = ["residual_policy"]  # ours, a flag of the discrete script only
    a_fields = [f.name for f in a.Args.__dataclass_fields__.values()]
    assert [n for n in a_fields if n in only_discrete] == only_discrete
    assert [n for n in a_fields if n not in only_discrete][-10:] == [
        f.name for f in b.Args.__dataclass_fields__.values()
    ][-10:]  # the LaGO block and the runtime-filled fields, in the same order


@TWINS
def test_prior_kl_is_the_same_on_both_kinds_of_distribution(a, b):
    torch.manual_seed(0)
    pairs = [
        (Categorical(logits=torch.randn(6, 40)), Categorical(logits=torch.randn(6, 40))),
        (
            Independent(Normal(torch.randn(6, 4), torch.rand(6, 4) + 0.1), 1),
            Independent(Normal(torch.randn(6, 4), torch.rand(6, 4) + 0.1), 1),
        ),
    ]
    for pi, prior in pairs:
        for direction in ("reverse", "forward"):
            assert torch.equal(a.prior_kl(pi, prior, direction), b.prior_kl(pi, prior, direction))
    # and the prior turns each script's stored prior output into that kind of distribution
    from finetune_prior import action_distribution

    assert isinstance(action_distribution(torch.zeros(2, 40)), Categorical)
    assert isinstance(action_distribution((torch.zeros(2, 4), torch.ones(2, 4))), Independent)


@TWINS
def test_kl_coef_schedules_are_the_same(a, b):
    for schedule in ("constant", "linear"):
        for iteration in (1, 2, 7, 10):
            assert a.kl_coef_schedule(schedule, 0.3, iteration, 10) == b.kl_coef_schedule(schedule, 0.3, iteration, 10)
    assert b.kl_coef_schedule("linear", 0.3, 1, 10) == 0.3
    assert b.kl_coef_schedule("linear", 0.3, 10, 10) == pytest.approx(0.03)
    # the adaptive controller, including its clipping
    for kl_coef, measured in [(0.1, 0.05), (0.1, 0.1), (0.1, 0.12), (0.1, 10.0), (1e-4, 0.0), (999.0, 1e3)]:
        assert a.update_adaptive_kl_coef(kl_coef, measured, 0.1) == b.update_adaptive_kl_coef(kl_coef, measured, 0.1)
    assert b.update_adaptive_kl_coef(0.1, 0.1, 0.1) == 0.1  # on target: unchanged
    assert b.update_adaptive_kl_coef(0.1, 10.0, 0.1) > 0.1 > b.update_adaptive_kl_coef(0.1, 0.01, 0.1)
    assert b.update_adaptive_kl_coef(1e-4, 0.0, 0.1) == 1e-4  # kept in [low, high]


@TWINS
def test_layer_init_is_the_same(a, b):
    torch.manual_seed(3)
    first = a.layer_init(torch.nn.Linear(5, 7), std=0.5)
    torch.manual_seed(3)
    second = b.layer_init(torch.nn.Linear(5, 7), std=0.5)
    torch.testing.assert_close(first.weight, second.weight)
    assert (second.bias == 0).all()


@pytest.mark.parametrize("script", [disc, cont], ids=["discrete", "continuous"])
@pytest.mark.parametrize("flags", [["--kl-direction", "sideways"], ["--kl-schedule", "cosine"]])
def test_unknown_direction_or_schedule_is_refused_by_the_cli(script, flags, tmp_path, monkeypatch, capsys):
    """prior_kl and kl_coef_schedule take what the flags allow: tyro refuses any other choice (usage error, code 2)
    before anything runs."""
    with pytest.raises(SystemExit) as e:
        script_runs.run_in_process(script.__file__, flags, tmp_path, monkeypatch)
    assert e.value.code == 2 and flags[1] in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_missing_prior_error_is_the_same(tmp_path):
    """Both scripts load their prior with fp.load_guidance_prior: one message for either env."""
    from finetune_prior import load_guidance_prior

    for env_id in ("CLEVR-Robot-v0", "reach-v3"):
        args = SimpleNamespace(env_id=env_id, llm="tiny-random", prior_path=str(tmp_path / "nowhere"))
        with pytest.raises(fp.PriorError) as exc:
            load_guidance_prior(args.env_id, args.llm, args.prior_path, envs=None)
        assert str(exc.value) == (
            f"no prior at --prior-path {args.prior_path!r}. Make one with:\n"
            f"    python finetune_prior.py --env-id {env_id} --llm tiny-random --output-dir {args.prior_path}\n"
            "or leave --prior-path out to use (and make, if missing) the default one, or run vanilla PPO with "
            "--kl-coef 0."
        )


def run_in_process(script, args, tmp_path, monkeypatch, name=None):
    """One run of a script's __main__ in this process (imports cached: a few seconds); its run dir and globals."""
    workdir = tmp_path / (name or Path(script).stem)
    workdir.mkdir()
    run = script_runs.run_in_process(script, args, workdir, monkeypatch)
    (run_dir,) = glob.glob(str(workdir / "runs" / "*"))
    return run_dir, run


def test_prior_in_chunks_equals_one_call(tiny_clevr_prior, tiny_reach_prior, tmp_path, monkeypatch):
    """Both scripts evaluate the rollout's states in chunks of --prior-batch-size: the same outputs, in the same
    order, as one call of the prior on the whole rollout (32 states in chunks of 7: the last chunk is short)."""
    tiny = [
        "--llm",
        "tiny-random",
        "--num-envs",
        "2",
        "--num-steps",
        "16",
        "--total-timesteps",
        "32",
        "--num-minibatches",
        "2",
    ]
    for script, prior, extra, outputs in (
        (disc, tiny_clevr_prior, [], ("b_prior_logits",)),
        (cont, tiny_reach_prior, ["--max-episode-steps", "8"], ("b_prior_means", "b_prior_stds")),
    ):
        runs = [
            run_in_process(
                script.__file__,
                [*tiny, *extra, "--prior-path", prior, "--prior-batch-size", size],
                tmp_path,
                monkeypatch,
                f"{Path(script.__file__).stem}_{size}",
            )[1]
            for size in ("7", "256")
        ]
        assert torch.equal(runs[0]["b_obs"], runs[1]["b_obs"])
        for name in outputs:
            chunked, whole = runs[0][name], runs[1][name]
            assert chunked.shape[0] == 32 and not chunked.requires_grad and not chunked.is_inference()  # for the loss
            torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_guided_runs_log_the_same(tiny_clevr_prior, tiny_reach_prior, tmp_path, monkeypatch, capsys):
    """Both scripts with a tiny-random prior and the adaptive beta: the same progress lines and scalars, LaGO's
    included."""
    common = [
        "--llm",
        "tiny-random",
        "--kl-coef",
        "0.1",
        "--kl-schedule",
        "adaptive",
        "--num-envs",
        "2",
        "--num-steps",
        "16",
        "--total-timesteps",
        "64",
        "--num-minibatches",
        "2",
        "--update-epochs",
        "1",
    ]
    runs = {
        "discrete": run_in_process(
            str(REPO / "lago_ppo_discrete.py"), ["--prior-path", tiny_clevr_prior, *common], tmp_path, monkeypatch
        ),
        "continuous": run_in_process(
            str(REPO / "lago_ppo_continuous.py"),
            ["--prior-path", tiny_reach_prior, "--max-episode-steps", "8", *common],
            tmp_path,
            monkeypatch,
        ),
    }
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("LaGO prior: ") for line in lines) == 2  # one per run
    progress = [line for line in lines if line.startswith("global_step=")]
    assert len(progress) == 4 and all(re.search(r" prior_kl=\S+ kl_coef=\S+$", p) for p in progress), progress
    tags = {kind: set(script_runs.scalars(run_dir)) for kind, (run_dir, _) in runs.items()}
    for kind, (run_dir, _) in runs.items():
        assert script_runs.scalar_steps(run_dir)["charts/SPS"][-1][0] == 64, kind
        assert script_runs.hyperparameters(run_dir)["kl_schedule"] == "adaptive", kind
    # every training scalar, LaGO's included (the episode ones need an episode to end: CLEVR's last 50 steps)
    episode_tags = {"charts/episodic_return", "charts/episodic_length", "charts/success_rate"}
    assert tags["discrete"] - episode_tags == tags["continuous"] - episode_tags
    assert episode_tags <= tags["continuous"]
    assert {"losses/prior_kl", "charts/kl_coef", "charts/SPS"} <= tags["continuous"]
