"""Reproduce the LaGO results table with one command.

    python -m benchmark.table --preset cpu      # the whole table on a 2-core CPU, <= 3 h
    python -m benchmark.table --preset smoke    # one seed, a few hundred steps (the test)
    python -m benchmark.table --preset gpu      # full scale, Qwen2.5-1.5B prior, on a GPU
    python -m benchmark.table --preset cpu --stop-after-minutes 60      # start no run after 60 min (exit 75: again)

Rows (same env-step budget and PPO hyperparameters, differing only in guidance):
  ppo            vanilla PPO (--kl-coef 0: no language model is loaded)
  prior          the fine-tuned prior alone, acting greedily (argmax / mean action), no RL
  prior-sampled  the prior alone, drawing its actions from its distribution (prior-sampled-random: the twin's)
  lago           LaGO with the pretrained language model (preset `llm`)
  lago-random    LaGO with its random-init twin (same architecture, no pretraining)
  lago-adaptive  LaGO, pretrained model, adaptive beta holding a target KL

Environments: CLEVR-Robot (success on train goals and on held-out goals) and a Meta-World
task subset (one PPO run per task, one multi-task prior per language model).

The scripts stay the single source of truth: stage 1 runs `finetune_prior.py` (skipped when
the prior directory exists), stage 2 runs `lago_ppo_discrete.py` / `lago_ppo_continuous.py --save-model`,
each through `subprocess` with this interpreter, then evaluates the saved agent with `benchmark/evaluate.py`
(the preset's episodes on each CLEVR level / Meta-World task) and reads its learning curve and flags from its
tensorboard events. Every finished run writes one result file `{results-dir}/{env}/{row}/{task}__seed{N}.json`
(atomically); a run whose result file exists is skipped, so an interrupted benchmark goes on where it stopped
(a run interrupted half-way starts again from its beginning). At the end `benchmark/plot.py` writes
`{results-dir}/table.md` and `{results-dir}/curves_{env}.png`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import tyro

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmark/table.py` as well as `python -m benchmark.table`
    sys.path.insert(0, str(REPO))

# the table's parts: budgets, the prior without RL, the job runner
from benchmark import plot  # noqa: E402
from benchmark.evaluate import evaluate  # noqa: E402
from benchmark.offline_models import llm_arg  # noqa: E402
from envs.clevr_language import LEVEL_RELATIONS  # noqa: E402  (goal slots: relations of the hardest level)
from envs.metaworld import level_of  # noqa: E402
from benchmark.presets import CLEVR_ENV_ID, ENVS, OFFLINE_PRETRAINED, PRESETS, PRIOR_TWIN_ROW, ROWS  # noqa: E402
from benchmark.presets import Preset  # noqa: E402
from benchmark.prior_alone import evaluate_prior  # noqa: E402
from benchmark.scheduler import Job, check_time, kill_children, run_jobs, run_logged, tail  # noqa: E402


@dataclass
class Args:
    preset: Literal["cpu", "thesis", "kalm", "metaworld-levels", "smoke", "gpu", "offline"] = "cpu"
    """budget preset: `cpu` (whole table on 2 cores in <= 3 h, 3 seeds), `thesis` (CLEVR-Robot on the mixture of
    instruction levels, 200k steps, 3 seeds), `smoke` (1 seed, a few hundred steps), `gpu` (Qwen2.5-1.5B prior,
    MT10, 5 seeds, 500k steps per run), `offline` (the thesis protocol at the gpu budget with MiniLM or mpnet), `kalm`
    (the thesis protocol at KALM's CLEVR-Robot difficulty), `metaworld-levels` (Meta-World's instruction levels)"""
    envs: tuple[Literal["clevr", "metaworld"], ...] = ENVS
    """environments to run"""
    rows: (
        tuple[
            Literal["ppo", "prior", "prior-sampled", "prior-sampled-random", "lago", "lago-random", "lago-adaptive"],
            ...,
        ]
        | None
    ) = None
    """rows of the table to run (default: the preset's)"""
    seeds: Optional[tuple[int, ...]] = None
    """override the preset's seeds"""
    llm: Optional[str] = None
    """override the preset's pretrained language model (e.g. `tiny-random` for a quick check)"""
    random_llm: Optional[str] = None
    """override the random-init twin (default: the preset's, or `--llm` itself when `--llm` is given)"""
    metaworld_tasks: Optional[str] = None
    """override the Meta-World tasks, comma separated (e.g. `reach-v3,push-v3`)"""
    clevr_timesteps: Optional[int] = None
    """override the CLEVR env-step budget of every RL run"""
    metaworld_timesteps: Optional[int] = None
    """override the Meta-World env-step budget of every RL run"""
    metaworld_kl_coef: Optional[float] = None
    """override beta of the Meta-World LaGO rows"""
    metaworld_kl_schedule: Optional[Literal["constant", "linear"]] = None
    """override beta's schedule of the Meta-World lago and lago-random rows"""
    clevr_ppo_args: str = ""
    """more lago_ppo_discrete.py flags for every CLEVR row, e.g. "--max-grad-norm 5" (a setting that is not about the
    prior: PPO gets it too)"""
    clevr_lago_args: str = ""
    """more lago_ppo_discrete.py flags for the guided CLEVR rows only, e.g. --kl-direction forward"""
    results_dir: Optional[str] = None
    """where result files, priors and run logs go (default: benchmark/results/{preset})"""
    jobs: int = 2
    """runs executed at the same time (one per CPU core is the right number on CPU)"""
    threads_per_job: int = 1
    """torch / OpenMP threads of each run"""
    stop_after_minutes: Optional[float] = None
    """start no new job after this many minutes (jobs already going run to their end); the same command again does
    the jobs left (exit code 75 while work is left). For machines that grant commands of limited length: leave room
    for the longest job after the deadline"""
    dry_run: bool = False
    """print the plan and the commands, run nothing"""
    plot: bool = True
    """write table.md and the learning-curve PNGs at the end"""


# ----------------------------------------------------------------------------------------------
# configuration


def resolve(args: Args) -> Preset:
    """The preset with the command-line overrides applied."""
    p = PRESETS[args.preset]
    changes = {}
    if args.seeds is not None:
        changes["seeds"] = tuple(args.seeds)
    if args.llm is not None:
        changes["llm"] = args.llm
        # a model named on the command line has no known twin: use the same model unless told
        changes["random_llm"] = args.random_llm or (
            f"{args.llm}-random" if args.llm in OFFLINE_PRETRAINED else args.llm
        )
    elif args.random_llm is not None:
        changes["random_llm"] = args.random_llm
    if args.metaworld_tasks is not None:
        changes["metaworld_tasks"] = tuple(t.strip() for t in args.metaworld_tasks.split(",") if t.strip())
    if args.clevr_timesteps is not None:
        changes["clevr_timesteps"] = args.clevr_timesteps
    if args.metaworld_timesteps is not None:
        changes["metaworld_timesteps"] = args.metaworld_timesteps
    if args.metaworld_kl_coef is not None:
        changes["metaworld_kl_coef"] = args.metaworld_kl_coef
    if args.metaworld_kl_schedule is not None:
        changes["metaworld_kl_schedule"] = args.metaworld_kl_schedule
    if args.clevr_ppo_args:
        changes["clevr_ppo_args"] = (*p.clevr_ppo_args, *args.clevr_ppo_args.split())
    if args.clevr_lago_args:
        changes["clevr_lago_args"] = (*p.clevr_lago_args, *args.clevr_lago_args.split())
    return dataclasses.replace(p, **changes)


def budget_fields(p: Preset) -> dict:
    """The fields that make results comparable: resuming into a results dir made with others is refused."""
    d = dataclasses.asdict(p)
    d.pop("seeds")  # more seeds may be added later
    d.pop("rows")  # so may more rows
    d.pop("metaworld_tasks")  # so may more tasks
    if d["metaworld_kl_schedule"] == "constant":
        d.pop("metaworld_kl_schedule")  # results dirs made before the field existed still resume
    for field in ("metaworld_demo_tasks", "clevr_lago_args"):
        if not d[field]:
            d.pop(field)  # results dirs made before the field existed still resume
    return json.loads(json.dumps(d))  # tuples -> lists, as read back from JSON


def check_or_write_config(results_dir: Path, p: Preset, preset_name: str) -> None:
    path = results_dir / "config.json"
    mine = {"preset": preset_name, "budget": budget_fields(p)}
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs.get("budget") != mine["budget"]:
            diff = sorted(
                k
                for k in set(mine["budget"]) | set(theirs.get("budget", {}))
                if mine["budget"].get(k) != theirs.get("budget", {}).get(k)
            )
            raise SystemExit(
                f"error: {results_dir} holds results made with a different budget (differs in: {', '.join(diff)}).\n"
                f"Resuming would mix them. Use another --results-dir, or delete {results_dir} to start over."
            )
        return
    write_json_atomic(path, mine)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def tasks_of(env: str, p: Preset) -> tuple[str, ...]:
    return (p.clevr_env_id,) if env == "clevr" else p.metaworld_tasks


def prior_env_id(env: str, p: Preset) -> str:
    """The env id a prior is fine-tuned for: CLEVR, or the comma list of Meta-World tasks (one multi-task prior)."""
    return p.clevr_env_id if env == "clevr" else ",".join(p.metaworld_demo_tasks or p.metaworld_tasks)


def level_fields(env: str, task: str, p: Preset) -> dict:
    """{"level": ...} of a Meta-World task when the preset has instruction levels (metaworld_demo_tasks), else {}."""
    return {"level": level_of(task)} if env == "metaworld" and p.metaworld_demo_tasks else {}


def prior_dir(results_dir: Path, env: str, llm: str) -> Path:
    return results_dir / "priors" / f"{env}__{llm.replace('/', '_')}"


def prior_is_complete(path: Path) -> bool:
    """finetune_prior.py writes the prior dir atomically (renamed into place when complete)."""
    return (path / "prior_config.json").is_file() and (path / "heads.safetensors").is_file()


def check_cached_prior(results_dir: Path, env: str, llm: str, p: Preset) -> None:
    """A prior kept from an earlier run must still load with today's finetune_prior.py (its format, the
    tokenizer of its language model); otherwise stop with what to delete, instead of failing every run."""
    path = prior_dir(results_dir, env, llm)
    if not prior_is_complete(path):
        return
    from finetune_prior import load_prior

    try:
        load_prior(str(path))
    except Exception as e:  # noqa: BLE001 - any reason is reported the same way
        rows = [row for row in (*ROWS, PRIOR_TWIN_ROW) if llm_of_row(row, p) == llm]
        raise SystemExit(
            f"error: the cached prior {path} no longer loads with this finetune_prior.py:\n  {type(e).__name__}: {e}\n"
            f"Results made with it would not match new runs. Delete it and the results of the rows that used it, "
            f"then re-run the same command:\n  rm -r {path} " + " ".join(str(results_dir / env / r) for r in rows)
        ) from None


def llm_of_row(row: str, p: Preset) -> Optional[str]:
    return {"ppo": None, "lago-random": p.random_llm, PRIOR_TWIN_ROW: p.random_llm}.get(row, p.llm)


# ----------------------------------------------------------------------------------------------
# commands (the scripts' command lines: the one place that knows their flags)


def finetune_command(env: str, llm: str, out: Path, p: Preset) -> list[str]:
    """Stage 1: demonstrations of the noisy scripted expert (CLEVR: train goals only), then LoRA fine-tuning."""
    cmd = [
        sys.executable,
        str(REPO / "finetune_prior.py"),
        "--env-id",
        prior_env_id(env, p),
        "--llm",
        llm_arg(llm),
        "--output-dir",
        str(out),
        "--seed",
        "1",
    ]
    if env == "clevr":
        cmd += [
            "--num-episodes",
            str(p.clevr_demo_episodes),
            "--demo-noise",
            str(p.clevr_demo_noise),
            "--goal-split",
            "train",
        ]
    else:
        cmd += [
            "--num-episodes",
            str(p.metaworld_demo_episodes),
            "--demo-noise",
            str(p.metaworld_demo_noise),
            "--max-episode-steps",
            str(p.metaworld_max_episode_steps),
        ]
    return cmd + list(p.clevr_finetune_args if env == "clevr" else p.metaworld_finetune_args) + list(p.device_args)


def ppo_command(env: str, task: str, row: str, seed: int, prior_path: Optional[Path], p: Preset) -> list[str]:
    """Stage 2: one PPO run that saves its agent (evaluated afterwards by benchmark/evaluate.py)."""
    script = "lago_ppo_discrete.py" if env == "clevr" else "lago_ppo_continuous.py"
    steps = p.clevr_timesteps if env == "clevr" else p.metaworld_timesteps
    kl_coef = p.clevr_kl_coef if env == "clevr" else p.metaworld_kl_coef
    kl_target = p.clevr_kl_target if env == "clevr" else p.metaworld_kl_target
    cmd = [
        sys.executable,
        str(REPO / script),
        "--env-id",
        task,
        "--seed",
        str(seed),
        "--total-timesteps",
        str(steps),
        "--exp-name",
        f"bench-{row}",
        "--save-model",
    ]
    if row == "ppo":
        cmd += ["--kl-coef", "0"]
    else:
        cmd += ["--llm", llm_of_row(row, p), "--prior-path", str(prior_path)]
        cmd += [] if kl_coef is None else ["--kl-coef", str(kl_coef)]
        schedule = "constant" if env == "clevr" else p.metaworld_kl_schedule
        cmd += ["--kl-schedule", "adaptive" if row == "lago-adaptive" else schedule]
        if row == "lago-adaptive" and kl_target is not None:
            cmd += ["--kl-target", str(kl_target)]
    if env == "metaworld":
        cmd += ["--max-episode-steps", str(p.metaworld_max_episode_steps)]
    elif p.clevr_goal_split != "train":  # the thesis protocol: RL on a mixture of levels
        cmd += ["--goal-split", p.clevr_goal_split]
    if env == "clevr" and row != "ppo":
        cmd += list(p.clevr_lago_args)
    return cmd + list(p.clevr_ppo_args if env == "clevr" else p.metaworld_ppo_args) + list(p.device_args)


# ----------------------------------------------------------------------------------------------
# jobs (run by benchmark/scheduler.py)


def stage1_job(env: str, llm: str, p: Preset, results_dir: Path, threads: int, deadline: Optional[float]) -> Job:
    out = prior_dir(results_dir, env, llm)

    def fn() -> str:
        check_time(deadline)
        if out.exists():
            shutil.rmtree(out)  # an incomplete dir from an interrupted fine-tuning
        work = results_dir / "runs" / "stage1" / out.name
        shutil.rmtree(work, ignore_errors=True)
        log = work / "log.txt"
        work.mkdir(parents=True)
        code, secs = run_logged(finetune_command(env, llm, out, p), work, log, threads)
        if code != 0 or not prior_is_complete(out):
            raise RuntimeError(f"finetune_prior.py failed (exit {code}); log {log}:\n{tail(log)}")
        write_json_atomic(
            results_dir / "stage1" / f"{out.name}.json",
            {"env": env, "llm": llm, "prior_dir": str(out.relative_to(results_dir)), "wall_time_s": secs},
        )
        return f"prior {out.name} fine-tuned in {secs:.0f} s"

    return Job(f"stage 1 {env} {llm}", fn, f"stage1-{env}")


def result_path(results_dir: Path, env: str, row: str, task: str, seed: int) -> Path:
    return results_dir / env / row / f"{task}__seed{seed}.json"


def ppo_job(
    env: str, task: str, row: str, seed: int, p: Preset, results_dir: Path, threads: int, deadline: Optional[float]
) -> Job:
    """Train (the script in a subprocess, saving its agent), then evaluate the saved agent here."""
    out = result_path(results_dir, env, row, task, seed)
    llm = llm_of_row(row, p)
    prior_path = prior_dir(results_dir, env, llm) if llm else None
    cmd = ppo_command(env, task, row, seed, prior_path, p)

    def fn() -> str:
        import torch

        check_time(deadline)
        if prior_path is not None and not prior_is_complete(prior_path):
            raise RuntimeError(f"no prior at {prior_path}: its stage-1 fine-tuning failed (see above)")
        work = results_dir / "runs" / env / row / f"{task}__seed{seed}"
        log = work / "log.txt"
        shutil.rmtree(work, ignore_errors=True)  # leftovers of an interrupted attempt: the run starts again
        code, secs = run_logged(cmd, work, log, threads)
        models = sorted(work.glob("runs/*/*.cleanrl_model"))
        if code != 0 or len(models) != 1:
            raise RuntimeError(
                f"{Path(cmd[1]).name} failed (exit {code}, saved agents {len(models)}); log {log}:\n{tail(log)}"
            )
        run_dir = models[0].parent
        episodes = p.clevr_eval_episodes if env == "clevr" else p.metaworld_eval_episodes
        torch.set_num_threads(threads)  # the evaluation runs inside the harness process
        start = time.time()
        try:
            ev = evaluate(
                models[0],
                task,
                episodes,
                seed,
                levels=p.clevr_levels if env == "clevr" else None,
                max_episode_steps=None if env == "clevr" else p.metaworld_max_episode_steps,
                residual_prior=prior_path if "--residual-policy" in cmd else None,
            )
        except Exception as e:  # noqa: BLE001 - reported with the run's name, the other runs go on
            raise RuntimeError(f"evaluation of {models[0]} failed: {type(e).__name__}: {e}") from e
        steps, values = plot.read_scalars(run_dir, plot.CURVE_TAG)
        result = {
            "env": env,
            "task": task,
            "task_index": tasks_of(env, p).index(task),
            **level_fields(env, task, p),
            "row": row,
            "seed": seed,
            "llm": llm,
            "total_timesteps": p.clevr_timesteps if env == "clevr" else p.metaworld_timesteps,
            "success": eval_success(env, task, ev, p),
            "return": eval_return(env, task, ev, p),
            "wall_time_s": secs,  # the script's subprocess: start-up, prior loading, training, saving
            "eval_time_s": time.time() - start,
            "eval_episodes": episodes,
            "run_dir": str(run_dir.relative_to(results_dir)),
            "curve": {"tag": plot.CURVE_TAG, "steps": steps, "values": values},
            "command": [Path(c).name if i < 2 else c for i, c in enumerate(cmd)],
            "args": plot.read_hyperparameters(run_dir),  # every flag's value, as the script logged it
            "eval": ev,
        }
        write_json_atomic(out, result)
        return f"{row} {task} seed {seed}: success {fmt_success(result['success'])} in {secs:.0f} s"

    return Job(f"{env} {row} {task} seed {seed}", fn, f"{env}-{'ppo' if row == 'ppo' else 'guided'}")


def ppo_run_reused(env: str, task: str, row: str, p: Preset) -> Optional[str]:
    """The task whose PPO run stands for this one, or None. PPO never reads the instruction, and "task:rephrase" is
    "task" with other words (the same episodes under a seed): its run would repeat that of "task" byte for byte, so
    the harness copies that result instead of training again."""
    base = task.removesuffix(":rephrase")
    return base if row == "ppo" and env == "metaworld" and base != task and base in p.metaworld_tasks else None


def copy_ppo_result(results_dir: Path, env: str, task: str, seed: int, p: Preset) -> bool:
    """Write PPO's result on `task` from its run on ppo_run_reused(...) (False if that run has no result yet)."""
    base = ppo_run_reused(env, task, "ppo", p)
    source = result_path(results_dir, env, "ppo", base, seed)
    if not source.exists():
        return False
    result = json.loads(source.read_text())
    result.update(
        task=task,
        task_index=tasks_of(env, p).index(task),
        **level_fields(env, task, p),
        success={task: result["success"][base]},
        reused_run_of=base,
    )
    if "eval" in result:
        result["eval"] = {task: result["eval"][base]}
    write_json_atomic(result_path(results_dir, env, "ppo", task, seed), result)
    return True


def eval_success(env: str, task: str, ev: dict, p: Preset) -> dict:
    """Success rates of an evaluation (benchmark/evaluate.py): {level} (CLEVR: the preset's levels) or {task}."""
    splits = p.clevr_levels if env == "clevr" else (task,)
    try:
        return {split: float(ev[split]["success_rate"]) for split in splits}
    except (KeyError, TypeError) as e:
        raise RuntimeError(f"the evaluation has no success rate for {splits} ({e!r})") from e


def eval_return(env: str, task: str, ev: dict, p: Preset) -> Optional[float]:
    """Mean evaluation return (over the CLEVR levels, or of the Meta-World task)."""
    splits = p.clevr_levels if env == "clevr" else (task,)
    values = [ev[s].get("episodic_return") for s in splits if s in ev]
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def fmt_success(success: dict) -> str:
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in success.items())


def prior_job(
    env: str, task: str, row: str, seed: int, p: Preset, results_dir: Path, threads: int, deadline: Optional[float]
) -> Job:
    """The `prior` (greedy) or `prior-sampled` row: the fine-tuned prior acting alone, no RL."""
    out = result_path(results_dir, env, row, task, seed)
    path = prior_dir(results_dir, env, llm_of_row(row, p))  # the twin's prior for the twin's row

    def fn() -> str:
        import torch

        check_time(deadline)
        torch.set_num_threads(threads)  # this job runs inside the harness process
        if not prior_is_complete(path):
            raise RuntimeError(f"no prior at {path}: its stage-1 fine-tuning failed (see above)")
        start = time.time()
        episodes = p.clevr_eval_episodes if env == "clevr" else p.metaworld_eval_episodes
        try:
            ev = evaluate_prior(
                path,
                env,
                task,
                seed,
                episodes,
                None if env == "clevr" else p.metaworld_max_episode_steps,
                p.clevr_levels,
                max(LEVEL_RELATIONS[level] for level in (*p.clevr_goal_split.split("+"), *p.clevr_levels)),
                sample=row.startswith("prior-sampled"),
            )
        except Exception as e:  # noqa: BLE001 - reported with the run's name, the other runs go on
            raise RuntimeError(f"evaluation of the prior {path} alone failed: {type(e).__name__}: {e}") from e
        secs = time.time() - start
        stage1 = results_dir / "stage1" / f"{path.name}.json"
        result = {
            "env": env,
            "task": task,
            "task_index": tasks_of(env, p).index(task),
            **level_fields(env, task, p),
            "row": row,
            "seed": seed,
            "llm": llm_of_row(row, p),
            "total_timesteps": 0,
            "success": ev["success"],
            "return": ev["return"],
            "wall_time_s": secs,
            "finetune_wall_time_s": json.loads(stage1.read_text())["wall_time_s"] if stage1.exists() else None,
            "curve": {"steps": [], "values": []},
            "eval_episodes": episodes,
        }
        write_json_atomic(out, result)
        return f"{row} {task} seed {seed}: success {fmt_success(ev['success'])} in {secs:.0f} s"

    return Job(f"{env} {row} {task} seed {seed}", fn, f"{env}-prior")


def main(args: Args) -> int:
    deadline = None if args.stop_after_minutes is None else time.time() + 60 * args.stop_after_minutes
    p = resolve(args)
    rows = args.rows or p.rows
    results_dir = Path(args.results_dir or REPO / "benchmark" / "results" / args.preset).resolve()
    if args.envs and "metaworld" in args.envs and not p.metaworld_tasks:
        raise SystemExit("error: no Meta-World tasks selected (--metaworld-tasks is empty)")

    # stage 2 (the runs still to do), in seed-major order so that an interrupted benchmark has whole seeds
    stage2, skipped, needed, reused = [], 0, set(), []
    for seed in p.seeds:
        for env in args.envs:
            for task in tasks_of(env, p):
                for row in rows:
                    if result_path(results_dir, env, row, task, seed).exists():
                        skipped += 1
                        continue
                    if ppo_run_reused(env, task, row, p):
                        reused.append((env, task, seed))  # copied once its source run has finished
                        continue
                    if llm_of_row(row, p):
                        needed.add((env, llm_of_row(row, p)))
                    if row.startswith("prior"):
                        stage2.append(prior_job(env, task, row, seed, p, results_dir, args.threads_per_job, deadline))
                    else:
                        stage2.append(ppo_job(env, task, row, seed, p, results_dir, args.threads_per_job, deadline))

    # stage 1: one prior per (env, language model) that a run still to do needs
    stage1 = [
        stage1_job(env, llm, p, results_dir, args.threads_per_job, deadline)
        for env, llm in sorted(needed)
        if not prior_is_complete(prior_dir(results_dir, env, llm))
    ]

    print(f"benchmark preset {args.preset!r} -> {results_dir}")
    print(f"  rows {', '.join(rows)}; envs {', '.join(args.envs)}; seeds {list(p.seeds)}")
    print(
        f"  llm {p.llm} (random twin {p.random_llm}); CLEVR {p.clevr_timesteps:,} steps; "
        f"Meta-World {', '.join(p.metaworld_tasks)} at {p.metaworld_timesteps:,} steps"
    )
    print(
        f"  evaluation of each saved agent: {p.clevr_eval_episodes} episodes per CLEVR level "
        f"({', '.join(p.clevr_levels)}), {p.metaworld_eval_episodes} per Meta-World task"
    )
    print(
        f"  stage 1: {len(stage1)} priors to fine-tune; stage 2: {len(stage2)} runs to do, "
        f"{skipped} finished already (skipped)"
        + (f"; {len(reused)} PPO results to copy from the same task's run (reworded tasks)" if reused else "")
    )
    if args.dry_run:
        for env, llm in sorted(needed):
            print("  $ " + " ".join(finetune_command(env, llm, prior_dir(results_dir, env, llm), p)))
        for seed in p.seeds:
            for env in args.envs:
                for task in tasks_of(env, p):
                    for row in rows:
                        if base := ppo_run_reused(env, task, row, p):
                            print(f"  (copied) ppo on {task}: its run on {base}, seed {seed}")
                        elif row.startswith("prior"):
                            print(
                                f"  (in-process) {row}: prior {prior_dir(results_dir, env, llm_of_row(row, p)).name}"
                                f" on {task}, seed {seed}"
                            )
                        else:
                            llm = llm_of_row(row, p)
                            pp = prior_dir(results_dir, env, llm) if llm else None
                            print("  $ " + " ".join(ppo_command(env, task, row, seed, pp, p)))
        return 0

    check_or_write_config(results_dir, p, args.preset)
    for env, llm in sorted(needed):  # only priors that runs still to do will read
        check_cached_prior(results_dir, env, llm, p)
    start = time.time()
    failures, deferred = run_jobs(stage1, args.jobs)
    failures2, deferred2 = run_jobs(stage2, args.jobs)
    failures, deferred = failures + failures2, deferred + deferred2
    deferred += sum(not copy_ppo_result(results_dir, env, task, seed, p) for env, task, seed in reused)
    print(f"benchmark done in {(time.time() - start) / 60:.1f} min")
    if args.plot and not deferred and any(results_dir.glob("*/*/*__seed*.json")):
        table, pngs = plot.make_report(results_dir)
        print(table.read_text())
        print(f"wrote {table}" + "".join(f", {p_}" for p_ in pngs))
    if failures:
        print(f"{len(failures)} job(s) failed; fix and re-run the same command (finished runs are skipped):")
        for f in failures:
            print("  - " + f.splitlines()[0])
        return 1
    if deferred:
        print(f"{deferred} job(s) not started before --stop-after-minutes: run the same command again to do them")
        return 75
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(tyro.cli(Args)))
    except KeyboardInterrupt:
        kill_children()
        print("\ninterrupted: finished runs are saved; re-run the same command to do the others", file=sys.stderr)
        sys.exit(130)
