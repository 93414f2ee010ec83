"""The benchmark harness: result files -> table + plots, finished runs skipped, the saved agents evaluated, and one
tiny end-to-end run."""

import dataclasses
import shutil
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark import plot, presets, table

REPO = Path(__file__).resolve().parent.parent


def write_events(run_dir: Path, points):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    for step, value in points:
        writer.add_scalar(plot.CURVE_TAG, value, step)
    writer.close()


def fake_result(results_dir, env, row, task, seed, success, curve=None, wall=60.0, ret=1.0, **extra):
    result = {
        "env": env,
        "task": task,
        "row": row,
        "seed": seed,
        "llm": None if row == "ppo" else "tiny-random",
        "total_timesteps": 0 if row == "prior" else 1000,
        "success": success,
        "return": ret,
        "wall_time_s": wall,
        "curve": {"steps": [s for s, _ in curve or []], "values": [v for _, v in curve or []]},
        **extra,
    }
    table.write_json_atomic(table.result_path(Path(results_dir), env, row, task, seed), result)
    return result


def test_read_scalars_reads_tensorboard_events(tmp_path):
    write_events(tmp_path / "run", [(10, 0.0), (20, 1.0), (30, 0.5)])
    steps, values = plot.read_scalars(tmp_path / "run")
    assert steps == [10, 20, 30]
    assert values == pytest.approx([0.0, 1.0, 0.5])
    assert plot.read_scalars(tmp_path / "run", "charts/not_logged") == ([], [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plot.read_scalars(tmp_path / "missing")


def test_read_hyperparameters_reads_the_scripts_text(tmp_path):
    """The |param|value| table the scripts log as tensorboard text, read back as {name: text}."""
    from torch.utils.tensorboard import SummaryWriter

    args = {"exp_name": "bench-lago", "kl_coef": 1.0, "prior_path": None, "goal_split": "train+compose"}
    writer = SummaryWriter(str(tmp_path / "run"))
    table_text = "\n".join([f"|{key}|{value}|" for key, value in args.items()])
    writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table_text)  # as the scripts write it
    writer.close()
    assert plot.read_hyperparameters(tmp_path / "run") == {k: str(v) for k, v in args.items()}
    write_events(tmp_path / "bare", [(1, 0.0)])
    assert plot.read_hyperparameters(tmp_path / "bare") == {}


def test_guidance_caption_reads_the_command_then_the_logged_args():
    """beta settings of the table's caption: the command's flags; a flag the command leaves out (the script's default)
    from the run's logged hyperparameters, or from eval.json's args in results made before issue 22."""
    base = {"env": "clevr", "seed": 1}
    results = [
        {**base, "row": "ppo", "command": ["python", "x.py", "--kl-coef", "0"], "args": {"kl_coef": "0.0"}},
        {
            **base,
            "row": "lago",
            "command": ["python", "x.py", "--kl-coef", "0.5", "--kl-schedule", "linear"],
            "args": {"kl_coef": "1.0", "kl_schedule": "linear", "kl_direction": "forward"},
        },
        {
            **base,
            "row": "lago-adaptive",
            "command": ["python", "x.py", "--kl-schedule", "adaptive"],
            "args": {"kl_coef": "1.0", "kl_schedule": "adaptive", "kl_target": "0.1", "kl_direction": "reverse"},
        },
        {  # an old result: the whole eval.json, its args typed
            **base,
            "row": "lago-random",
            "command": ["python", "x.py", "--kl-schedule", "constant"],
            "eval": {"args": {"kl_coef": 2.0, "kl_schedule": "constant", "kl_direction": "reverse"}},
        },
    ]
    assert plot.guidance_settings(results) == (
        "lago beta 0.5 linear, forward KL; lago-random beta 2 constant, reverse KL; "
        "lago-adaptive beta 1 adaptive (target KL 0.1), reverse KL"
    )


def test_binned_curve_means_and_carries_forward():
    edges = np.array([0, 10, 20, 30, 40])
    out = plot.binned_curve([12, 15, 35, 40], [0.0, 1.0, 1.0, 0.0], edges)
    assert np.isnan(out[0])  # before the first episode
    assert out[1] == pytest.approx(0.5)
    assert out[2] == pytest.approx(0.5)  # empty bin: carried forward
    assert out[3] == pytest.approx(0.5)  # the last edge is inclusive


def test_report_table_values_and_png(tmp_path):
    for seed, (tr, ho) in zip((1, 2), ((0.2, 0.1), (0.4, 0.3))):
        fake_result(
            tmp_path,
            "clevr",
            "ppo",
            "CLEVR-Robot-v0",
            seed,
            {"train": tr, "heldout": ho},
            curve=[(100, 0.0), (500, tr), (1000, tr)],
        )
        fake_result(tmp_path, "clevr", "prior", "CLEVR-Robot-v0", seed, {"train": 0.5, "heldout": 0.25})
        for task, s in (("reach-v3", 0.8), ("drawer-close-v3", 0.4)):
            fake_result(
                tmp_path,
                "metaworld",
                "lago",
                task,
                seed,
                {task: s * seed / 2},
                curve=[(200, 0.1), (900, s)],
                ret=100.0 * seed,
            )
    table_path, pngs = plot.make_report(tmp_path)
    text = table_path.read_text()
    # CLEVR ppo: train 30 +- 14.1 %, held-out 20 +- 14.1 % (sample std of two seeds: |difference| / sqrt(2))
    ppo_line = next(line for line in text.splitlines() if line.startswith("| PPO (beta = 0)"))
    assert "30.0 ± 14.1" in ppo_line and "20.0 ± 14.1" in ppo_line
    prior_line = next(
        line for line in text.splitlines() if line.startswith("| Prior alone, greedy, no RL (tiny-random)")
    )
    assert "50.0 ± 0.0" in prior_line and "25.0 ± 0.0" in prior_line
    # Meta-World: per-task columns and the mean over tasks (per seed, then over seeds)
    assert "reach-v3 (%)" in text and "drawer-close-v3 (%)" in text
    lago_line = next(line for line in text.splitlines() if line.startswith("| LaGO (tiny-random)"))
    # seed 1: (40 + 20) / 2 = 30; seed 2: (80 + 40) / 2 = 60 -> 45 +- 21.2 (sample std)
    assert "45.0 ± 21.2" in lago_line
    assert sorted(p.name for p in pngs) == ["curves_clevr.png", "curves_metaworld.png"]
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert f"]({png.name})" in text


def test_report_without_results_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmark.table"):
        plot.make_report(tmp_path)


def test_resume_refuses_a_results_dir_with_another_budget(tmp_path):
    smoke = table.resolve(table.Args(preset="smoke"))
    table.check_or_write_config(tmp_path, smoke, "smoke")
    table.check_or_write_config(tmp_path, table.resolve(table.Args(preset="smoke", seeds=(1, 2))), "smoke")  # ok
    more_tasks = table.resolve(table.Args(preset="smoke", metaworld_tasks="reach-v3,push-v3"))
    table.check_or_write_config(tmp_path, more_tasks, "smoke")  # ok: tasks may be added
    other = table.resolve(table.Args(preset="smoke", clevr_timesteps=999))
    with pytest.raises(SystemExit, match="clevr_timesteps"):
        table.check_or_write_config(tmp_path, other, "smoke")
    other_ppo = dataclasses.replace(smoke, metaworld_ppo_args=("--num-envs", "4"))
    with pytest.raises(SystemExit, match="differs in: metaworld_ppo_args"):
        table.check_or_write_config(tmp_path, other_ppo, "smoke")


def flag_values(cmd):
    """{flag: value} of a command line as argparse/tyro read it (the last occurrence of a flag wins)."""
    flags = {}
    for i, tok in enumerate(cmd[2:], start=2):
        if tok.startswith("--"):
            nxt = cmd[i + 1] if i + 1 < len(cmd) else ""
            flags[tok] = "" if nxt.startswith("--") else nxt
    return flags


def test_rows_differ_only_in_guidance():
    """Same budget and PPO flags in every row; only --kl-coef/--llm/--prior-path/--kl-schedule differ."""
    p = table.PRESETS["cpu"]
    guidance = {"--llm", "--prior-path", "--kl-coef", "--kl-schedule", "--kl-target", "--exp-name"}
    for env, task in (("clevr", table.CLEVR_ENV_ID), ("metaworld", p.metaworld_tasks[0])):
        commands = {}
        for row in ("ppo", "lago", "lago-random", "lago-adaptive"):
            cmd = table.ppo_command(env, task, row, 1, Path("/p") if row != "ppo" else None, p)
            commands[row] = flag_values(cmd)
        shared = {k: v for k, v in commands["ppo"].items() if k not in guidance}
        for row, flags in commands.items():
            assert {k: v for k, v in flags.items() if k not in guidance} == shared, row
        assert commands["ppo"]["--kl-coef"] == "0"
        assert commands["lago-adaptive"]["--kl-schedule"] == "adaptive"
        assert commands["lago-random"]["--llm"] == p.random_llm


@pytest.mark.parametrize("preset", sorted(table.PRESETS))
def test_commands_carry_the_budget(preset):
    """The command lines built for a preset (with CLI overrides) run what the result files claim: the env-step
    budget, seed, task, episode length, training levels, language models and demo settings, each env its own, the
    agent saved for the evaluation, and no preset flag list overrides them (the last occurrence of a flag is the one
    the script reads)."""
    p = table.resolve(
        table.Args(
            preset=preset,
            seeds=(7, 8),
            clevr_timesteps=1234,
            metaworld_timesteps=5678,
            metaworld_tasks=" push-v3, reach-v3 ,",
        )
    )
    assert p.seeds == (7, 8) and p.metaworld_tasks == ("push-v3", "reach-v3")
    pp = Path("/priors/x")
    for env, task, steps in (("clevr", table.CLEVR_ENV_ID, "1234"), ("metaworld", "reach-v3", "5678")):
        for row in ("ppo", "lago", "lago-random", "lago-adaptive"):
            cmd = table.ppo_command(env, task, row, 8, None if row == "ppo" else pp, p)
            assert Path(cmd[1]).name == ("lago_ppo_discrete.py" if env == "clevr" else "lago_ppo_continuous.py")
            f = flag_values(cmd)
            assert (f["--env-id"], f["--seed"], f["--total-timesteps"]) == (task, "8", steps), (env, row)
            assert f["--save-model"] == "" and f["--exp-name"] == f"bench-{row}"  # the evaluation reads the agent
            assert "--eval-episodes" not in f and "--eval-levels" not in f
            if env == "metaworld":
                assert f["--max-episode-steps"] == str(p.metaworld_max_episode_steps)
                assert "--goal-split" not in f
            else:
                assert "--max-episode-steps" not in f
                if p.clevr_goal_split == "train":  # the original protocol: the script's default
                    assert "--goal-split" not in f
                else:  # the thesis protocol: RL on the mixture (every level evaluated afterwards)
                    assert f["--goal-split"] == p.clevr_goal_split
            if "compose" in p.clevr_levels:  # an agent reads two goal slots only if it trained on compose
                assert "compose" in p.clevr_goal_split.split("+")
            if row == "ppo":
                assert "--llm" not in f and "--prior-path" not in f
            else:
                assert f["--prior-path"] == str(pp)
                assert f["--llm"] == (p.random_llm if row == "lago-random" else p.llm)
    for env in table.ENVS:
        for llm in (p.llm, p.random_llm):
            f = flag_values(table.finetune_command(env, llm, Path("/out"), p))
            assert f["--llm"] == llm and f["--output-dir"] == "/out"
            if env == "clevr":
                assert f["--env-id"] == p.clevr_env_id and f["--goal-split"] == "train"
                assert (f["--num-episodes"], f["--demo-noise"]) == (str(p.clevr_demo_episodes), str(p.clevr_demo_noise))
            else:  # one multi-task prior over all the tasks (with levels: over the demonstrated ones)
                assert f["--env-id"] == ",".join(p.metaworld_demo_tasks or ("push-v3", "reach-v3"))
                assert f["--max-episode-steps"] == str(p.metaworld_max_episode_steps)
                assert (f["--num-episodes"], f["--demo-noise"]) == (
                    str(p.metaworld_demo_episodes),
                    str(p.metaworld_demo_noise),
                )


def test_kl_settings_reach_only_their_rows():
    p = dataclasses.replace(
        table.PRESETS["smoke"],
        clevr_kl_coef=0.25,
        metaworld_kl_coef=0.5,
        clevr_kl_target=0.03,
        metaworld_kl_target=0.07,
    )
    for env, task, coef, target in (
        ("clevr", table.CLEVR_ENV_ID, "0.25", "0.03"),
        ("metaworld", "reach-v3", "0.5", "0.07"),
    ):
        f = {
            row: flag_values(table.ppo_command(env, task, row, 1, Path("/p"), p))
            for row in ("ppo", "lago", "lago-random", "lago-adaptive")
        }
        assert f["ppo"]["--kl-coef"] == "0"
        assert [f[r]["--kl-coef"] for r in ("lago", "lago-random", "lago-adaptive")] == [coef] * 3
        assert f["lago-adaptive"]["--kl-target"] == target
        assert all("--kl-target" not in f[r] for r in ("ppo", "lago", "lago-random"))
    # unset: the scripts' defaults (no flag)
    f = flag_values(
        table.ppo_command("clevr", table.CLEVR_ENV_ID, "lago-adaptive", 1, Path("/p"), table.PRESETS["smoke"])
    )
    assert "--kl-target" not in f and "--kl-coef" not in f


def test_llm_override_and_its_twin():
    named = table.resolve(table.Args(preset="gpu", llm="tiny-random"))
    assert (named.llm, named.random_llm) == ("tiny-random", "tiny-random")  # no known twin: the model itself
    mini = table.resolve(table.Args(preset="gpu", llm=presets.PRETRAINED_LLM))
    assert mini.random_llm == f"{presets.PRETRAINED_LLM}-random"
    assert "lago-random" not in table.PRESETS["gpu"].rows  # no loadable random twin of Qwen2.5-1.5B
    assert "lago-random" in table.PRESETS["cpu"].rows and "lago-random" in table.PRESETS["offline"].rows
    both = table.resolve(table.Args(preset="cpu", llm="a", random_llm="b"))
    assert (both.llm, both.random_llm) == ("a", "b")
    assert [table.llm_of_row(r, both) for r in table.ROWS] == [None, "a", "a", "a", "b", "a"]


def dry_run(capsys, results_dir, **kw):
    assert table.main(table.Args(dry_run=True, results_dir=str(results_dir), **kw)) == 0
    out = capsys.readouterr().out
    plan = next(line for line in out.splitlines() if "stage 1:" in line)
    return out, plan


def test_dry_run_plans_every_run_and_skips_finished_ones(tmp_path, capsys):
    """The plan is seeds x (CLEVR + each Meta-World task) x rows; finished result files are skipped; a prior is
    fine-tuned only if a run still to do needs it and it is not there; a dry run writes nothing."""
    kw = dict(preset="cpu", llm="tiny-random", metaworld_timesteps=4321)
    p = table.resolve(table.Args(**kw))
    out, plan = dry_run(capsys, tmp_path, **kw)
    n = len(p.seeds) * (1 + len(p.metaworld_tasks)) * len(table.ROWS)
    assert plan.strip() == f"stage 1: 2 priors to fine-tune; stage 2: {n} runs to do, 0 finished already (skipped)"
    commands = [line.split()[1:] for line in out.splitlines() if line.startswith("  $ ")]
    ppo_cmds = [flag_values(c) for c in commands if "--total-timesteps" in c]
    rl_rows = [r for r in table.ROWS if not r.startswith("prior")]  # the prior rows run in-process
    assert len(ppo_cmds) == len(p.seeds) * (1 + len(p.metaworld_tasks)) * len(rl_rows)
    assert len({c["--seed"] for c in ppo_cmds}) >= 3, "the table reports mean +- std over >= 3 seeds"
    mw = [c for c in ppo_cmds if c["--env-id"] != table.CLEVR_ENV_ID]
    assert {c["--env-id"] for c in mw} == set(p.metaworld_tasks) and {c["--total-timesteps"] for c in mw} == {"4321"}
    assert not any(tmp_path.iterdir()), "a dry run writes nothing"

    # finished: every run of seed 1, and every guided Meta-World run: only CLEVR still needs its prior
    for seed in p.seeds:
        for env in table.ENVS:
            for task in table.tasks_of(env, p):
                for row in table.ROWS:
                    if seed == p.seeds[0] or (env == "metaworld" and row != "ppo"):
                        fake_result(tmp_path, env, row, task, seed, {})
    done = len(list(tmp_path.glob("*/*/*.json")))
    _, plan = dry_run(capsys, tmp_path, **kw)
    assert (
        plan.strip()
        == f"stage 1: 1 priors to fine-tune; stage 2: {n - done} runs to do, {done} finished already (skipped)"
    )
    # the CLEVR prior already fine-tuned: nothing to fine-tune
    prior = table.prior_dir(tmp_path, "clevr", "tiny-random")
    prior.mkdir(parents=True)
    (prior / "prior_config.json").write_text("{}")
    (prior / "heads.safetensors").write_bytes(b"")
    _, plan = dry_run(capsys, tmp_path, **kw)
    assert plan.strip().startswith("stage 1: 0 priors to fine-tune;")
    assert not (tmp_path / "config.json").exists()


def run_harness(results_dir: Path, *extra: str) -> str:
    cmd = [
        sys.executable,
        "-m",
        "benchmark.table",
        "--preset",
        "smoke",
        "--llm",
        "tiny-random",
        "--results-dir",
        str(results_dir),
        "--rows",
        "ppo",
        "prior",
        "lago",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_smoke_end_to_end_table_plot_and_resume(tmp_path, tiny_clevr_prior, tiny_reach_prior):
    """The real CLI at the smoke budget (PPO subprocesses saving their agents, evaluated in-process by
    benchmark/evaluate.py; greedy prior in-process), then a second command that redoes only the run whose result
    file was deleted. Stage 1 is cached: the fixture priors are placed where the harness looks, so it must not
    fine-tune again."""
    import shutil

    results = tmp_path / "results"
    shutil.copytree(tiny_clevr_prior, table.prior_dir(results, "clevr", "tiny-random"))
    shutil.copytree(tiny_reach_prior, table.prior_dir(results, "metaworld", "tiny-random"))
    out = run_harness(results)
    assert "stage 1: 0 priors to fine-tune" in out
    assert "stage 2: 6 runs to do, 0 finished already" in out
    files = sorted(results.glob("*/*/*__seed1.json"))
    assert [f.relative_to(results).as_posix() for f in files] == [
        "clevr/lago/CLEVR-Robot-v0__seed1.json",
        "clevr/ppo/CLEVR-Robot-v0__seed1.json",
        "clevr/prior/CLEVR-Robot-v0__seed1.json",
        "metaworld/lago/reach-v3__seed1.json",
        "metaworld/ppo/reach-v3__seed1.json",
        "metaworld/prior/reach-v3__seed1.json",
    ]
    p = table.PRESETS["smoke"]
    ppo = json.loads((results / "clevr/ppo/CLEVR-Robot-v0__seed1.json").read_text())
    assert set(ppo["success"]) == {"train", "heldout"} and 0 <= ppo["success"]["heldout"] <= 1
    assert ppo["curve"]["steps"] and max(ppo["curve"]["steps"]) <= 256  # read back from tensorboard
    model = results / ppo["run_dir"] / "bench-ppo.cleanrl_model"
    assert model.is_file()
    assert list(ppo["eval"]) == ["train", "heldout"]
    assert all(e["episodes"] == p.clevr_eval_episodes for e in ppo["eval"].values())
    assert ppo["success"] == {level: e["success_rate"] for level, e in ppo["eval"].items()}
    # the evaluation is benchmark/evaluate.py's, seeded: the same numbers again
    assert table.evaluate(model, table.CLEVR_ENV_ID, p.clevr_eval_episodes, 1, p.clevr_levels) == ppo["eval"]
    assert ppo["args"]["kl_coef"] == "0.0" and ppo["args"]["total_timesteps"] == "256"  # as the script logged them
    assert ppo["wall_time_s"] > 0 and ppo["eval_time_s"] > 0
    lago = json.loads((results / "metaworld/lago/reach-v3__seed1.json").read_text())
    assert list(lago["eval"]) == ["reach-v3"] and lago["eval"]["reach-v3"]["episodes"] == p.metaworld_eval_episodes
    assert lago["args"]["max_episode_steps"] == str(p.metaworld_max_episode_steps)
    mw_prior = json.loads((results / "metaworld/prior/reach-v3__seed1.json").read_text())
    assert set(mw_prior["success"]) == {"reach-v3"}

    text = (results / "table.md").read_text()
    for label in ("PPO (beta = 0)", "Prior alone, greedy, no RL (tiny-random)", "LaGO (tiny-random)", "reach-v3 (%)"):
        assert label in text
    for png in ("curves_clevr.png", "curves_metaworld.png"):
        assert (results / png).read_bytes()[:4] == b"\x89PNG"

    # again: finished runs are skipped, a missing result is redone
    before = {f: f.read_bytes() for f in files}
    redo = results / "clevr/lago/CLEVR-Robot-v0__seed1.json"
    redo.unlink()
    out = run_harness(results, "--envs", "clevr")
    assert "stage 2: 1 runs to do, 2 finished already (skipped)" in out
    assert redo.is_file()
    for f, content in before.items():
        if f != redo:
            assert f.read_bytes() == content, f"{f} was rewritten although its run had finished"


def test_stale_cached_prior_is_refused_with_what_to_delete(tmp_path):
    """A prior dir kept from an older finetune_prior.py that no longer loads stops the benchmark up front."""
    p = table.resolve(table.Args(preset="smoke", llm="tiny-random"))
    stale = table.prior_dir(tmp_path, "clevr", "tiny-random")
    stale.mkdir(parents=True)
    (stale / "prior_config.json").write_text("{not json")
    (stale / "heads.safetensors").write_bytes(b"")
    assert table.prior_is_complete(stale)
    with pytest.raises(SystemExit, match=r"no longer loads[\s\S]*rm -r .*clevr__tiny-random .*clevr/lago"):
        table.check_cached_prior(tmp_path, "clevr", "tiny-random", p)


@pytest.mark.slow
def test_smoke_preset_with_stage1_all_rows(tmp_path):
    """The whole smoke preset as a user runs it: stage 1 through finetune_prior.py, every row, both envs."""
    cmd = [
        sys.executable,
        "-m",
        "benchmark.table",
        "--preset",
        "smoke",
        "--llm",
        "tiny-random",
        "--results-dir",
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stage 1: 2 priors to fine-tune" in proc.stdout
    assert len(list(tmp_path.glob("*/*/*__seed1.json"))) == len(table.ROWS) * 2  # every row on both envs (12)
    assert sorted(p.name for p in tmp_path.glob("stage1/*.json")) == [
        "clevr__tiny-random.json",
        "metaworld__tiny-random.json",
    ]
    text = (tmp_path / "table.md").read_text()
    assert "LaGO (tiny-random), adaptive beta" in text and "LaGO, random-init twin (tiny-random)" in text


def test_prior_throughput_prints_time_and_work_per_state(tiny_clevr_prior, capsys):
    from benchmark import prior_throughput

    assert prior_throughput.main(["--prior-path", tiny_clevr_prior, "--batch-sizes", "1,8"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in ("1", "8")]
    assert [r[0] for r in rows] == ["1", "8"]
    for _, ms, gflop, rate in rows:
        assert float(ms) > 0 and 0 < float(gflop) < 1 and float(rate) > 0  # tiny-random: ~5 MFLOP per state
    assert "matmul rate" in out and "instructions of" in out
    with pytest.raises(SystemExit):
        prior_throughput.main(["--prior-path", tiny_clevr_prior, "--batch-sizes", "0"])
    assert "--batch-sizes" in capsys.readouterr().err


def test_levels_table_mean_column_and_figure(tmp_path):
    """The thesis protocol's table: one column per level, the mean over levels per seed (then mean +- std over
    seeds), and the per-level bar chart."""
    levels = ("train", "heldout", "rephrase", "compose")
    per_seed = {1: (0.5, 0.6, 0.4, 0.1), 2: (0.7, 0.8, 0.6, 0.3)}  # means over levels: 0.4 and 0.6
    for seed, values in per_seed.items():
        fake_result(
            tmp_path, "clevr", "ppo", "CLEVR-Robot-v0", seed, dict(zip(levels, values)), curve=[(100, 0.0), (1000, 0.5)]
        )
        fake_result(tmp_path, "clevr", "prior-sampled", "CLEVR-Robot-v0", seed, dict(zip(levels, (0.2,) * 4)))
    table_path, pngs = plot.make_report(tmp_path)
    lines = table_path.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert [c.strip() for c in header.split("|")[3:8]] == [
        "Success, train goals (%)",
        "Success, held-out goals (%)",
        "Success, rephrased (%)",
        "Success, composed (%)",
        "Mean over levels (%)",
    ]
    ppo = [c.strip() for c in next(line for line in lines if line.startswith("| PPO")).split("|")]
    assert ppo[3:8] == ["60.0 ± 14.1", "70.0 ± 14.1", "50.0 ± 14.1", "20.0 ± 14.1", "50.0 ± 14.1"]
    assert any(line.startswith("| Prior alone, sampled, no RL (tiny-random) | 2 | 20.0 ± 0.0") for line in lines)
    assert (tmp_path / "levels_clevr.png").is_file() and tmp_path / "levels_clevr.png" in pngs


def test_prior_alone_greedy_and_sampled_on_levels(tiny_clevr_prior):
    """The prior rows: the fine-tuned prior acts alone on each level (compose needs two goal slots; the 24-dim prior
    reads the first); greedy is deterministic, sampling is seeded, and the two differ in what they do."""
    kw = dict(levels=("train", "compose"), goal_slots=2)
    greedy = table.evaluate_prior(Path(tiny_clevr_prior), "clevr", table.CLEVR_ENV_ID, 1, 6, **kw)
    assert set(greedy["success"]) == {"train", "compose"}
    assert all(0.0 <= v <= 1.0 for v in greedy["success"].values())
    assert table.evaluate_prior(Path(tiny_clevr_prior), "clevr", table.CLEVR_ENV_ID, 1, 6, **kw) == greedy
    sampled = [
        table.evaluate_prior(Path(tiny_clevr_prior), "clevr", table.CLEVR_ENV_ID, s, 6, sample=True, **kw)
        for s in (1, 1, 2)
    ]
    assert sampled[0] == sampled[1]
    assert sampled[0] != greedy or sampled[2] != greedy  # sampled actions are not the argmax ones


def test_thesis_rows_include_the_twins_prior_alone():
    """The thesis protocol's rows: the twin's prior alone is a row of its own, read from the twin's prior; the rows
    are not part of the budget (adding a row to a results dir is allowed)."""
    p = table.PRESETS["thesis"]
    assert table.PRIOR_TWIN_ROW in p.rows and table.PRIOR_TWIN_ROW not in table.PRESETS["cpu"].rows
    assert table.llm_of_row(table.PRIOR_TWIN_ROW, p) == p.random_llm
    assert table.llm_of_row("prior-sampled", p) == p.llm
    assert "rows" not in table.budget_fields(p)


def test_the_twins_prior_row_reads_the_twins_prior(tmp_path, tiny_clevr_prior):
    """prior-sampled-random acts with the twin's prior: with only the pretrained one on disk it has nothing to run."""
    p = table.PRESETS["smoke"]
    shutil.copytree(tiny_clevr_prior, table.prior_dir(tmp_path, "clevr", p.llm))
    table.prior_job("clevr", table.CLEVR_ENV_ID, "prior-sampled", 1, p, tmp_path, 1, None).fn()
    twin = table.prior_job("clevr", table.CLEVR_ENV_ID, table.PRIOR_TWIN_ROW, 1, p, tmp_path, 1, None)
    with pytest.raises(RuntimeError, match=f"no prior at .*clevr__{p.random_llm}"):
        twin.fn()
    shutil.copytree(tiny_clevr_prior, table.prior_dir(tmp_path, "clevr", p.random_llm))
    twin.fn()
    result = json.loads(table.result_path(tmp_path, "clevr", table.PRIOR_TWIN_ROW, table.CLEVR_ENV_ID, 1).read_text())
    assert result["llm"] == p.random_llm


def test_no_job_starts_after_the_deadline(tmp_path, capsys):
    """--stop-after-minutes: a job not started before the deadline waits for the next command, which exit code 75
    asks for; nothing is written for it (no table either)."""
    import time

    from benchmark.scheduler import Deferred

    p = table.PRESETS["smoke"]
    results = tmp_path / "results"
    with pytest.raises(Deferred, match="not started"):
        table.ppo_job("clevr", table.CLEVR_ENV_ID, "ppo", 1, p, results, 1, time.time() - 1).fn()
    args = table.Args(preset="smoke", envs=("clevr",), rows=("ppo",), results_dir=str(results), stop_after_minutes=0)
    assert table.main(args) == 75
    out = capsys.readouterr().out
    assert "1 job(s) not started before --stop-after-minutes" in out
    assert not list(results.glob("*/*/*.json")) and not (results / "runs").exists()
    assert not (results / "table.md").exists()


def test_metaworld_levels_table_and_the_levels_preset(tmp_path):
    """Meta-World with instruction levels: a level's success is the mean over its tasks per seed, Mean the mean over
    levels; the per-task table follows; the curves have one panel per level. The preset's prior is made on the
    demonstrated tasks only, and its RL tasks fall in the three levels."""
    tasks = {"reach-v3": 0.2, "push-v3": 0.4, "reach-v3:rephrase": 0.1, "reach-wall-v3": 0.0}
    for seed in (1, 2):
        for i, (task, s) in enumerate(tasks.items()):
            result = fake_result(tmp_path, "metaworld", "lago", task, seed, {task: s * seed}, curve=[(100, s)])
            result["level"] = table.level_of(task)
            result["task_index"] = i
            table.write_json_atomic(table.result_path(tmp_path, "metaworld", "lago", task, seed), result)
    table_path, pngs = plot.make_report(tmp_path)
    lines = table_path.read_text().splitlines()
    header = next(line for line in lines if line.startswith("| Method"))
    assert [c.strip() for c in header.split("|")[3:7]] == ["demonstrated (%)", "rephrase (%)", "unseen (%)", "Mean (%)"]
    lago = [c.strip() for c in next(line for line in lines if line.startswith("| LaGO")).split("|")]
    # demonstrated: seed 1 (20 + 40) / 2 = 30, seed 2 60; rephrase 10, 20; unseen 0, 0; mean (30+10+0)/3, (60+20)/3
    assert lago[3:7] == ["45.0 ± 21.2", "15.0 ± 7.1", "0.0 ± 0.0", "20.0 ± 9.4"]
    assert "reach-v3:rephrase (%)" in table_path.read_text()  # the per-task table
    assert tmp_path / "curves_metaworld.png" in pngs
    p = presets.PRESETS["metaworld-levels"]
    demo_env = table.prior_env_id("metaworld", p).split(",")
    assert demo_env == list(presets.DEMONSTRATED)
    assert {table.level_of(t) for t in p.metaworld_tasks} == {"demonstrated", "rephrase", "unseen"}
    assert not set(demo_env) & {t for t in p.metaworld_tasks if table.level_of(t) != "demonstrated"}
    assert table.level_fields("metaworld", "push-wall-v3", p) == {"level": "unseen"}
    assert table.level_fields("metaworld", "push-v3", presets.PRESETS["cpu"]) == {}
    assert (p.metaworld_timesteps, p.metaworld_kl_schedule) == (60_000, "linear")
    linear, constant = p, dataclasses.replace(p, metaworld_kl_schedule="constant")
    lago = table.ppo_command("metaworld", "push-v3", "lago", 1, Path("prior"), linear)
    assert lago[lago.index("--kl-schedule") + 1] == "linear" and "--kl-coef" in lago
    assert "--kl-schedule" not in table.ppo_command("metaworld", "push-v3", "ppo", 1, None, linear)
    clevr = table.ppo_command("clevr", "CLEVR-Robot-v0", "lago", 1, Path("prior"), linear)
    assert clevr[clevr.index("--kl-schedule") + 1] == "constant"
    assert "metaworld_kl_schedule" not in table.budget_fields(constant)  # old results dirs still resume
    assert table.budget_fields(linear)["metaworld_kl_schedule"] == "linear"


def test_ppo_on_a_reworded_task_reuses_the_run_of_its_task(tmp_path, capsys):
    """PPO never reads the instruction, so its run on "task:rephrase" is not trained again: the harness copies its
    run on "task". The premise is checked too: PPO trained on the reworded task gives the same result."""
    kw = dict(preset="smoke", envs=("metaworld",), metaworld_tasks="reach-v3,reach-v3:rephrase", rows=("ppo",))
    _, plan = dry_run(capsys, tmp_path / "copied", **kw)
    assert plan.strip() == (
        "stage 1: 0 priors to fine-tune; stage 2: 1 runs to do, 0 finished already (skipped); "
        "1 PPO results to copy from the same task's run (reworded tasks)"
    )
    assert table.main(table.Args(results_dir=str(tmp_path / "copied"), plot=False, **kw)) == 0
    assert [d.name for d in (tmp_path / "copied" / "runs" / "metaworld" / "ppo").iterdir()] == ["reach-v3__seed1"]
    source = json.loads(table.result_path(tmp_path / "copied", "metaworld", "ppo", "reach-v3", 1).read_text())
    copied = json.loads(table.result_path(tmp_path / "copied", "metaworld", "ppo", "reach-v3:rephrase", 1).read_text())
    assert copied["reused_run_of"] == "reach-v3" and copied["task_index"] == 1
    assert copied["success"] == {"reach-v3:rephrase": source["success"]["reach-v3"]}

    p = table.resolve(table.Args(**kw))
    table.ppo_job("metaworld", "reach-v3:rephrase", "ppo", 1, p, tmp_path / "trained", 1, None).fn()
    trained_path = table.result_path(tmp_path / "trained", "metaworld", "ppo", "reach-v3:rephrase", 1)
    trained = json.loads(trained_path.read_text())
    for key in ("success", "return", "eval"):
        assert trained[key] == copied[key], key
    assert trained["curve"]["values"] == copied["curve"]["values"] and trained["curve"]["values"]
