"""lago_ppo_discrete.py and lago_ppo_continuous.py are twins: the blocks they duplicate (KL to the prior, beta
schedules, logging, eval.json, the summary line) behave the same on the same inputs, and both load their prior
with lago_prior.load_guidance_prior."""

import glob
import inspect
import json
import os
import re
import runpy
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Categorical, Independent, Normal

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import lago_ppo_continuous as cont  # noqa: E402
import script_runs  # noqa: E402
import lago_ppo_discrete as disc  # noqa: E402

TWINS = pytest.mark.parametrize("a,b", [(disc, cont)], ids=["discrete-continuous"])


@TWINS
def test_duplicated_functions_have_the_same_signature(a, b):
    for name in ("layer_init", "prior_kl", "prior_on_states", "kl_coef_schedule", "update_adaptive_kl_coef"):
        assert inspect.signature(getattr(a, name)) == inspect.signature(getattr(b, name)), name
    assert [f.name for f in a.Args.__dataclass_fields__.values()][-10:] == [
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
        for module in (a, b):
            with pytest.raises(ValueError, match="reverse"):
                module.prior_kl(pi, prior, "both")
    # and the prior turns each script's stored prior output into that kind of distribution
    from lago_prior import action_distribution

    assert isinstance(action_distribution(torch.zeros(2, 40)), Categorical)
    assert isinstance(action_distribution((torch.zeros(2, 4), torch.ones(2, 4))), Independent)


@TWINS
def test_kl_coef_schedules_are_the_same(a, b):
    for schedule in ("constant", "linear"):
        for iteration in (1, 2, 7, 10):
            assert a.kl_coef_schedule(schedule, 0.3, iteration, 10) == b.kl_coef_schedule(schedule, 0.3, iteration, 10)
    assert b.kl_coef_schedule("linear", 0.3, 1, 10) == 0.3
    assert b.kl_coef_schedule("linear", 0.3, 10, 10) == pytest.approx(0.03)
    for module in (a, b):
        with pytest.raises(ValueError, match="adaptive"):
            module.kl_coef_schedule("adaptive", 0.3, 1, 10)
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


def test_missing_prior_error_is_the_same(tmp_path):
    """Both scripts load their prior with lago_prior.load_guidance_prior: one message for either env."""
    from lago_prior import load_guidance_prior

    for env_id in ("CLEVR-Robot-v0", "reach-v3"):
        args = SimpleNamespace(env_id=env_id, llm="tiny-random", prior_path=str(tmp_path / "nowhere"))
        with pytest.raises(FileNotFoundError) as exc:
            load_guidance_prior(args.env_id, args.llm, args.prior_path, envs=None)
        assert str(exc.value) == (
            f"no prior at --prior-path {args.prior_path!r}. Make one with:\n"
            f"    python finetune_prior.py --env-id {env_id} --llm tiny-random --output-dir {args.prior_path}\n"
            "or leave --prior-path out to use (and make, if missing) the default one, or run vanilla PPO with "
            "--kl-coef 0."
        )


def test_prior_on_states_in_chunks_equals_one_call(tiny_clevr_prior, tiny_reach_prior):
    """Both scripts evaluate the rollout's states in chunks of --prior-batch-size: same outputs, same order, as one
    batched call of the prior (7 states in chunks of 3: the last chunk is short)."""
    from lago_prior import load_prior

    for module, path, obs_dim in ((disc, tiny_clevr_prior, 24), (cont, tiny_reach_prior, 39)):  # what the envs give
        prior = load_prior(path)
        torch.manual_seed(0)
        observations = torch.randn(7, obs_dim)
        instructions = [f"push object {i} to the left" for i in range(7)]  # different lengths: padding differs
        instructions[3] = "reach the goal"
        with torch.no_grad():
            whole = prior(observations, instructions)
        chunked = module.prior_on_states(prior, observations, instructions, batch_size=3)
        for got, want in zip(
            chunked if isinstance(chunked, tuple) else (chunked,), whole if isinstance(whole, tuple) else (whole,)
        ):
            assert got.shape == want.shape and not got.requires_grad and not got.is_inference()  # usable in the loss
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def run_in_process(script, args, tmp_path, monkeypatch, capsys):
    """One run of a script's __main__ in this process (imports cached: a few seconds); its run dir and stdout."""
    workdir = tmp_path / Path(script).stem
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(sys, "argv", [script, *args])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    (run_dir,) = glob.glob(str(workdir / "runs" / "*"))
    return run_dir, capsys.readouterr().out


def test_guided_runs_log_and_report_the_same(tiny_clevr_prior, tiny_reach_prior, tmp_path, monkeypatch, capsys):
    """Both scripts with a tiny-random prior and the adaptive beta: same progress lines, scalars, eval.json
    layout and one summary line of the same form (CLEVR evaluates per goal split, Meta-World per task)."""
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
        "--eval-episodes",
        "1",
    ]
    runs = {
        "discrete": run_in_process(
            str(REPO / "lago_ppo_discrete.py"),
            ["--prior-path", tiny_clevr_prior, *common],
            tmp_path,
            monkeypatch,
            capsys,
        ),
        "continuous": run_in_process(
            str(REPO / "lago_ppo_continuous.py"),
            ["--prior-path", tiny_reach_prior, "--max-episode-steps", "8", *common],
            tmp_path,
            monkeypatch,
            capsys,
        ),
    }
    reports, tags, summaries = {}, {}, {}
    for kind, (run_dir, out) in runs.items():
        reports[kind] = json.load(open(os.path.join(run_dir, "eval.json")))
        tags[kind] = {t for t in script_runs.scalars(run_dir) if not t.startswith("eval/")}
        lines = out.splitlines()
        assert sum(line.startswith("LaGO prior: ") for line in lines) == 1
        progress = [line for line in lines if line.startswith("global_step=")]
        assert len(progress) == 2 and all(re.search(r"prior_kl=\S+ kl_coef=\S+ prior_time=\d+%$", p) for p in progress)
        (summary,) = [line for line in lines if line.startswith("summary: ")]
        summaries[kind] = summary
    assert reports["discrete"].keys() == reports["continuous"].keys()
    assert set(reports["discrete"]["eval"]) == {"train", "heldout"}
    assert set(reports["continuous"]["eval"]) == {"reach-v3"}
    eval_keys = [e.keys() for report in reports.values() for e in report["eval"].values()]
    assert all(keys == eval_keys[0] for keys in eval_keys)
    for kind in runs:
        assert reports[kind]["global_step"] == 64 and reports[kind]["prior_time_s"] > 0
        assert reports[kind]["args"]["kl_schedule"] == "adaptive"
    # every training scalar, LaGO's included (the episode ones need an episode to end: CLEVR's last 50 steps)
    episode_tags = {"charts/episodic_return", "charts/episodic_length", "charts/success_rate"}
    assert tags["discrete"] - episode_tags == tags["continuous"] - episode_tags
    assert episode_tags <= tags["continuous"]
    assert {"losses/prior_kl", "charts/kl_coef", "charts/prior_time_share", "charts/SPS"} <= tags["continuous"]
    pattern = (
        r"summary: \S+ steps=64 time=\d+s \(prior \d+%\)"
        r"( return\(last \d+\)=\S+ success\(last \d+\)=\S+)?"
        r"( \| eval \S+: return=\S+ success=\S+)+ -> runs/\S+/eval.json"
    )
    for kind, summary in summaries.items():
        assert re.fullmatch(pattern, summary), summary
