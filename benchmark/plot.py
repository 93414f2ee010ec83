"""Turn benchmark result files into a markdown table and learning-curve PNGs.

    python -m benchmark.plot --results-dir benchmark/results/cpu

reads every `{results-dir}/{env}/{row}/{task}__seed{N}.json` written by `benchmark/table.py`
(one file per finished run) and writes

- `{results-dir}/table.md`: one markdown table per environment, mean ± sample std (ddof=1) over seeds and,
  for the headline score, the IQM with its 95% stratified bootstrap CI (rliable, Agarwal et al. 2021);
- `{results-dir}/curves_{env}.png`: success rate against environment steps, mean over
  seeds with a +-1 std band, one panel per task.

Learning curves come from each run's tensorboard scalar `charts/success_rate`, read with
tensorboard's EventAccumulator when the run finished and stored in its result file, so the
table and the plots survive deleting `runs/`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tyro

# Display order and labels of the rows (benchmark/table.py writes these keys).
ROW_LABELS = {
    "ppo": "PPO (beta = 0)",
    "prior": "Prior alone, greedy, no RL ({llm})",
    "prior-sampled": "Prior alone, sampled, no RL ({llm})",
    "prior-sampled-random": "Prior alone, sampled, no RL, random-init twin ({llm})",
    "lago": "LaGO ({llm})",
    "lago-random": "LaGO, random-init twin ({llm})",
    "lago-adaptive": "LaGO ({llm}), adaptive beta",
}
ENV_TITLES = {"clevr": "CLEVR-Robot", "metaworld": "Meta-World"}
LEVEL_TITLES = {"train": "train goals", "heldout": "held-out goals", "rephrase": "rephrased", "compose": "composed"}
CURVE_TAG = "charts/success_rate"
RETURN_TAG = "charts/episodic_return"
HPARAMS_TAG = "hyperparameters/text_summary"  # the scripts' writer.add_text("hyperparameters", ...)
# The IQM column: rliable's stratified bootstrap, this many resamples, numpy's global generator seeded with this for
# each row (rliable draws the resamples from np.random, not from its random_state), so table.md is reproducible.
IQM_REPS = 2000
IQM_SEED = 0
PROTOCOL = "mean ± sample std over {n} seed{s}; IQM with 95% stratified bootstrap CI (rliable)"


@dataclass
class Args:
    results_dir: str = "benchmark/results/cpu"
    """directory that holds the `{env}/{row}/{task}__seed{N}.json` result files of benchmark/table.py"""
    out_table: Optional[str] = None
    """where to write the markdown table (default: {results-dir}/table.md)"""
    bins: int = 40
    """number of env-step bins the learning curves are averaged into"""


def read_scalars(run_dir: str | os.PathLike, tag: str = CURVE_TAG) -> tuple[list[int], list[float]]:
    """(steps, values) of one tensorboard scalar from the event files under `run_dir`.

    Returns two empty lists when the run logged no such scalar (e.g. no episode finished)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist: cannot read tensorboard scalars from it")
    steps: list[int] = []
    values: list[float] = []
    # a run may hold several event files: read them all, in name order
    event_files = sorted(run_dir.rglob("events.out.tfevents.*"))
    for event_file in event_files:
        acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})  # 0 = keep every point
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                steps.append(int(event.step))
                values.append(float(event.value))
    order = np.argsort(steps, kind="stable")
    return [steps[i] for i in order], [values[i] for i in order]


def read_hyperparameters(run_dir: str | os.PathLike) -> dict[str, str]:
    """The flags of a run as its script logged them (CleanRL's tensorboard text "hyperparameters", a markdown table
    |param|value|): {name: value as text}; {} when the run logged none."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    params: dict[str, str] = {}
    for event_file in sorted(Path(run_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(event_file), size_guidance={"tensors": 0})
        acc.Reload()
        if HPARAMS_TAG in acc.Tags().get("tensors", []):
            for event in acc.Tensors(HPARAMS_TAG):
                text = tensor_util.make_ndarray(event.tensor_proto).item().decode()
                for line in text.splitlines()[2:]:  # after the header and its |-|-| line
                    name, _, value = line.strip().strip("|").partition("|")
                    params[name] = value
    return params


def load_results(results_dir: str | os.PathLike) -> list[dict]:
    """Every result file under `results_dir` ({env}/{row}/{task}__seed{N}.json, env clevr or metaworld; other folders,
    such as a bc/ beside them, are not the harness's), sorted by (env, row, task, seed)."""
    results = []
    paths = [p for env in ("clevr", "metaworld") for p in Path(results_dir).glob(f"{env}/*/*__seed*.json")]
    for path in sorted(paths):
        with open(path) as f:
            try:
                results.append(json.load(f))
            except json.JSONDecodeError as e:
                raise ValueError(f"result file {path} is not valid JSON ({e}); delete it to re-run that run") from e
    return results


def _row_order(rows) -> list[str]:
    known = [r for r in ROW_LABELS if r in rows]
    return known + sorted(r for r in rows if r not in ROW_LABELS)


def _mean_std(values: list[float], ddof: int = 1) -> tuple[float, float]:
    """Mean and std (the sample std, ddof=1, unless told; NaN where there are too few values) of the values that are
    not None or NaN."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=ddof)) if arr.size > ddof else float("nan")


def _fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean, std = _mean_std(values)
    if math.isnan(mean):
        return "n/a"
    if len([v for v in values if v is not None]) < 2:
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def iqm_ci(scores, reps: int = IQM_REPS, seed: int = IQM_SEED) -> tuple[float, float, float]:
    """(IQM, CI low, CI high) of a (runs x tasks) score matrix: rliable's interquartile mean (the 25% trimmed mean of
    all its entries) and its 95% percentile CI from `reps` stratified bootstrap resamples (runs drawn with
    replacement within each task). numpy's global generator, which rliable's resampling draws from, is seeded with
    `seed` for the call and restored after it: the same scores give the same interval."""
    from rliable import library, metrics

    scores = np.asarray(scores, dtype=float)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        point, interval = library.get_interval_estimates(
            {"row": scores}, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
        )
    finally:
        np.random.set_state(state)
    return float(point["row"][0]), float(interval["row"][0, 0]), float(interval["row"][1, 0])


def _fmt_iqm(matrix: list[list[float | None]], scale: float = 100.0, digits: int = 1) -> str:
    """The IQM cell of a row: its (seeds x tasks) matrix, seeds with a missing entry left out; one seed: the IQM
    alone (no interval)."""
    rows = [row for row in matrix if row and all(v is not None and not math.isnan(v) for v in row)]
    if not rows:
        return "n/a"
    iqm, low, high = iqm_ci(rows)
    if len(rows) < 2:
        return f"{iqm * scale:.{digits}f}"
    return f"{iqm * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def _label(result: dict) -> str:
    llm = result.get("llm") or "?"
    return ROW_LABELS.get(result["row"], result["row"]).format(llm=llm)


def _group(results: list[dict], env: str) -> dict[str, list[dict]]:
    by_row: dict[str, list[dict]] = {}
    for r in results:
        if r["env"] == env:
            by_row.setdefault(r["row"], []).append(r)
    return {row: by_row[row] for row in _row_order(by_row)}


def _tasks(results: list[dict], env: str) -> list[str]:
    """The tasks of an env in the benchmark's order (its preset's task list), then by name."""
    order: dict[str, float] = {}
    for r in results:
        if r["env"] == env:
            order[r["task"]] = min(order.get(r["task"], float("inf")), r.get("task_index", float("inf")))
    return sorted(order, key=lambda t: (order[t], t))


def _per_seed(runs: list[dict], fn) -> list[float]:
    """fn(runs of one seed) -> value, for every seed of a row: the spread is over seeds."""
    seeds = sorted({r["seed"] for r in runs})
    return [fn([r for r in runs if r["seed"] == s]) for s in seeds]


def clevr_levels(results: list[dict]) -> list[str]:
    """The CLEVR levels the results were evaluated on, in LEVEL_TITLES' order."""
    seen = {level for r in results if r["env"] == "clevr" for level in r["success"]}
    return [lv for lv in LEVEL_TITLES if lv in seen] + sorted(seen - set(LEVEL_TITLES))


def late_rise(result: dict) -> Optional[float]:
    """Whether a run was still rising at its end: its training success (the curve) over the last quarter of its steps
    minus over the third quarter; None without a curve in both."""
    steps, values = (np.asarray(result.get("curve", {}).get(k) or [], dtype=float) for k in ("steps", "values"))
    total = result.get("total_timesteps") or (steps.max() if len(steps) else 0)
    third, last = (steps > total / 2) & (steps <= 3 * total / 4), steps > 3 * total / 4
    if not third.any() or not last.any():
        return None
    return float(values[last].mean() - values[third].mean())


def clevr_table(results: list[dict]) -> str:
    rows = _group(results, "clevr")
    if not rows:
        return ""
    levels = clevr_levels(results)
    mean_column = len(levels) > 2  # the thesis protocol: the mean over the levels, each seed's first
    header = "| Method | Seeds | " + " | ".join(f"Success, {LEVEL_TITLES.get(lv, lv)} (%)" for lv in levels)
    header += (" | Mean over levels (%)" if mean_column else "") + " | IQM [95% CI] (%)"
    header += " | Return | Rise, last quarter (points) | Wall time / run (min) |"
    lines = [header, "|" + "---|" * (len(levels) + 6 + mean_column)]
    for row, runs in rows.items():
        cells = [_label(runs[0]), str(len({r["seed"] for r in runs}))]
        cells += [_fmt([r["success"].get(lv) for r in runs], 100) for lv in levels]
        if mean_column:
            cells.append(_fmt([float(np.mean([r["success"][lv] for lv in levels])) for r in runs], 100))
        # rliable's runs x tasks matrix: seeds x levels
        cells.append(_fmt_iqm([[r["success"].get(lv) for lv in levels] for r in sorted(runs, key=lambda r: r["seed"])]))
        cells += [_fmt([r.get("return") for r in runs], 1, 2), _fmt([late_rise(r) for r in runs], 100)]
        cells.append(_fmt([r.get("wall_time_s") for r in runs], 1 / 60, 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_levels(results: list[dict], out_png: str | os.PathLike) -> Optional[Path]:
    """Bar chart of CLEVR success per level (and their mean), one bar per row, mean ± std over seeds."""
    rows = _group(results, "clevr")
    levels = clevr_levels(results)
    if not rows or len(levels) < 3:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = levels + ["mean"]
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(1.9 * len(groups) + 2, 3.8))
    for i, (row, runs) in enumerate(rows.items()):
        per_level = [[r["success"].get(lv) for r in runs] for lv in levels]
        per_level.append([float(np.mean([r["success"][lv] for lv in levels])) for r in runs])
        stats = [_mean_std(v, ddof=0) for v in per_level]  # the figure's bars: population std, as before
        x = np.arange(len(groups)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(
            x,
            [100 * m for m, _ in stats],
            width,
            yerr=[100 * sd for _, sd in stats],
            capsize=2,
            label=f"{_label(runs[0])}, n={len({r['seed'] for r in runs})}",
        )
    ax.set_xticks(
        np.arange(len(groups)), [LEVEL_TITLES.get(g, "mean over levels" if g == "mean" else g) for g in groups]
    )
    ax.set_ylabel("evaluation success (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.set_title("CLEVR-Robot: success per instruction level after training (mean ± std over seeds)")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_png


def metaworld_levels_table(results: list[dict]) -> str:
    """Meta-World with instruction levels (results with a "level"): each level's success is the mean over its tasks,
    per seed; Mean is the mean over the levels."""
    rows = _group(results, "metaworld")
    levels = [lvl for lvl in ("demonstrated", "rephrase", "unseen") if any(r.get("level") == lvl for r in results)]
    lines = ["| Method | Seeds | " + " | ".join(f"{lvl} (%)" for lvl in levels) + " | Mean (%) | IQM [95% CI] (%) |"]
    lines.append("|" + "---|" * (len(levels) + 4))

    def level_mean(seed_runs, level):
        vals = [r["success"].get(r["task"]) for r in seed_runs if r.get("level") == level]
        return float(np.mean(vals)) if vals else float("nan")

    for row, runs in rows.items():
        cells = [_label(runs[0]), str(len({r["seed"] for r in runs}))]
        cells += [_fmt(_per_seed(runs, lambda rs, lvl=lvl: level_mean(rs, lvl)), 100) for lvl in levels]
        cells.append(_fmt(_per_seed(runs, lambda rs: float(np.mean([level_mean(rs, lvl) for lvl in levels]))), 100))
        # rliable's runs x tasks matrix: seeds x levels (each level's success: the mean over its tasks)
        cells.append(_fmt_iqm(_per_seed(runs, lambda rs: [level_mean(rs, lvl) for lvl in levels])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\nPer task:\n\n" + metaworld_table(results, levels=False, iqm=False)


def metaworld_table(results: list[dict], levels: bool = True, iqm: bool = True) -> str:
    rows = _group(results, "metaworld")
    if not rows:
        return ""
    if levels and any("level" in r for runs in rows.values() for r in runs):
        return metaworld_levels_table(results)
    tasks = _tasks(results, "metaworld")
    header = (
        "| Method | Seeds | "
        + " | ".join(f"{t} (%)" for t in tasks)
        + " | Mean (%)"
        + (" | IQM [95% CI] (%)" if iqm else "")
        + " | Return | Rise, last quarter (points) | Wall time / run (min) |"
    )
    lines = [header, "|" + "---|" * (len(tasks) + 6 + iqm)]
    for row, runs in rows.items():
        cells = [_label(runs[0]), str(len({r["seed"] for r in runs}))]
        for task in tasks:
            cells.append(_fmt([r["success"].get(task) for r in runs if r["task"] == task], 100))

        def seed_mean(seed_runs, key="success"):
            vals = [r[key].get(r["task"]) if key == "success" else r.get(key) for r in seed_runs]
            vals = [v for v in vals if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        cells.append(_fmt(_per_seed(runs, seed_mean), 100))
        if iqm:  # rliable's runs x tasks matrix: seeds x tasks

            def by_task(seed_runs):
                return [next((r["success"].get(t) for r in seed_runs if r["task"] == t), None) for t in tasks]

            cells.append(_fmt_iqm(_per_seed(runs, by_task)))
        cells.append(_fmt(_per_seed(runs, lambda rs: seed_mean(rs, "return")), 1, 1))
        rises = _per_seed(runs, lambda rs: [late_rise(r) for r in rs if late_rise(r) is not None])
        cells.append(_fmt([float(np.mean(v)) if v else None for v in rises], 100))
        cells.append(_fmt([r.get("wall_time_s") for r in runs], 1 / 60, 1))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(results: list[dict]) -> str:
    """The whole results section: one table per environment, with its budget in a caption."""
    parts = []
    for env, make in (("clevr", clevr_table), ("metaworld", metaworld_table)):
        table = make(results)
        if not table:
            continue
        env_results = [r for r in results if r["env"] == env]
        steps = sorted({r["total_timesteps"] for r in env_results if r.get("total_timesteps")})
        seeds = sorted({r["seed"] for r in env_results})
        if env == "clevr":
            columns, stratum = "levels", "level"
        elif any("level" in r for r in env_results):
            columns, stratum = "levels (a level's success: the mean over its tasks)", "level"
        else:
            columns, stratum = "tasks", "task"
        caption = (
            f"**{ENV_TITLES.get(env, env)}**: {', '.join(f'{s:,}' for s in steps)} env steps per run, "
            f"seeds {seeds}; {PROTOCOL.format(n=len(seeds), s='' if len(seeds) == 1 else 's')}; success rate of "
            f"the evaluation episodes after training (the prior rows: the fine-tuned prior acting alone, no RL). "
            f"IQM: the interquartile mean of a row's seeds x {columns} success matrix; its 95% percentile CI from "
            f"{IQM_REPS:,} resamples of the seeds within each {stratum} (rliable's stratified bootstrap, seed "
            f"{IQM_SEED}). Rise: a run's training success over the last quarter of its steps minus over the third "
            f"quarter (charts/success_rate), in points: above 0 where the row was still rising."
        )
        betas = guidance_settings(env_results)
        if betas:
            caption += f" Guidance: {betas}."
        parts.append(caption + "\n\n" + table)
    return "\n\n".join(parts) + "\n"


def command_flags(command: list[str]) -> dict[str, str]:
    """{name: value} of the `--flag value` pairs of a command line (names as the scripts' args: kl_coef); the last
    occurrence of a flag wins, as for the scripts."""
    flags = {}
    for i, token in enumerate(command):
        if token.startswith("--") and i + 1 < len(command) and not command[i + 1].startswith("--"):
            flags[token[2:].replace("-", "_")] = command[i + 1]
    return flags


def guidance_settings(results: list[dict]) -> str:
    """The beta settings the guided runs used: the flags of their command; a flag the command leaves out has the
    script's default, read from the run's logged hyperparameters (the result's "args"; eval.json's args in results
    made before the harness evaluated saved agents itself)."""
    seen: dict[str, str] = {}
    for r in results:
        legacy = (r.get("eval") or {}).get("args") or {}
        args = {**legacy, **(r.get("args") or {}), **command_flags(r.get("command") or [])}
        if r["row"] == "ppo" or r["row"].startswith("prior") or "kl_coef" not in args:
            continue
        text = f"beta {float(args['kl_coef']):g} {args.get('kl_schedule', '?')}"
        if args.get("kl_schedule") == "adaptive" and "kl_target" in args:
            text += f" (target KL {float(args['kl_target']):g})"
        text += f", {args.get('kl_direction', 'reverse')} KL"
        if args.get("residual_policy") == "True":
            text += ", residual policy (ours: the prior's logits plus the actor's)"
        seen.setdefault(r["row"], text)
    return "; ".join(f"{row} {seen[row]}" for row in _row_order(seen))


def binned_curve(steps, values, edges: np.ndarray) -> np.ndarray:
    """Mean of the values in each step bin, carried forward over empty bins (NaN before the first point)."""
    steps = np.asarray(steps, dtype=float)
    values = np.asarray(values, dtype=float)
    out = np.full(len(edges) - 1, np.nan)
    last = np.nan
    for i in range(len(edges) - 1):
        upper = steps <= edges[i + 1] if i == len(edges) - 2 else steps < edges[i + 1]
        mask = (steps >= edges[i]) & upper
        if mask.any():
            last = float(values[mask].mean())
        out[i] = last
    return out


def plot_curves(results: list[dict], env: str, out_png: str | os.PathLike, bins: int = 40) -> Optional[Path]:
    """Success rate against env steps (mean +- std over seeds), one panel per task; None if no curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _group(results, env)
    # the panels: tasks, or the Meta-World instruction levels (their tasks' runs together)
    levels = any("level" in r for r in results if r["env"] == env)
    panel = (lambda r: r["level"]) if levels else (lambda r: r["task"])
    first = {r["task"]: r for r in results if r["env"] == env}
    tasks = list(dict.fromkeys(panel(first[task]) for task in _tasks(results, env)))
    curves = [r for r in results if r["env"] == env and r.get("curve", {}).get("steps")]
    if not curves:
        return None
    max_step = max(max(r["curve"]["steps"]) for r in curves)
    max_step = max(max_step, max(r.get("total_timesteps") or 0 for r in curves))
    edges = np.linspace(0, max_step, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.0 * len(tasks), 3.8), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, task in zip(axes[0], tasks):
        for i, (row, runs) in enumerate(rows.items()):
            runs = [r for r in runs if panel(r) == task]
            color = colors[i % len(colors)]
            if not runs:
                continue
            if row.startswith("prior"):
                # no learning curve: the prior's evaluation success as a reference line
                if env == "clevr":  # the training episodes draw every level: the mean over the levels
                    mean, std = _mean_std([float(np.mean(list(r["success"].values()))) for r in runs])
                else:
                    mean, std = _mean_std([r["success"].get(r["task"]) for r in runs])
                if not math.isnan(mean):
                    ax.axhline(mean, color=color, linestyle="--", label=_label(runs[0]))
                continue
            per_seed = [
                binned_curve(r["curve"]["steps"], r["curve"]["values"], edges)
                for r in runs
                if r.get("curve", {}).get("steps")
            ]
            if not per_seed:
                continue
            stack = np.vstack(per_seed)
            with np.errstate(all="ignore"), _quiet_nanmean():
                mean = np.nanmean(stack, axis=0)
                std = np.nanstd(stack, axis=0)
            ax.plot(centers, mean, color=color, label=f"{_label(runs[0])}, n={len(per_seed)}")
            ax.fill_between(centers, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
        ax.set_xlim(0, max_step)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k" if x else "0")  # 400000 -> 400k: labels that fit
        ax.set_ylabel("training success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, max(1, len(labels))), fontsize=8, frameon=False)
    fig.suptitle(f"{ENV_TITLES.get(env, env)}: success rate of training episodes (mean ± std over seeds)")
    fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(labels) - 1) // 3), 1, 1))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")  # keep the title and legend whole
    plt.close(fig)
    return out_png


class _quiet_nanmean:
    """np.nanmean warns on all-NaN columns (bins before any seed finished an episode): expected here."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def make_report(
    results_dir: str | os.PathLike, out_table: Optional[str] = None, bins: int = 40
) -> tuple[Path, list[Path]]:
    """Write table.md and curves_{env}.png for the results under `results_dir`; return their paths."""
    results_dir = Path(results_dir)
    results = load_results(results_dir)
    if not results:
        raise FileNotFoundError(
            f"no result files (*/*/*__seed*.json) under {results_dir}: run `python -m benchmark.table` first"
        )
    table_path = Path(out_table) if out_table else results_dir / "table.md"
    pngs = []
    for env in sorted({r["env"] for r in results}):
        png = plot_curves(results, env, results_dir / f"curves_{env}.png", bins=bins)
        if png is not None:
            pngs.append(png)
    levels_png = plot_levels(results, results_dir / "levels_clevr.png")
    if levels_png is not None:
        pngs.insert(0, levels_png)
    text = markdown(results)
    if pngs:
        text += "\n" + "\n".join(f"![{p.stem}]({p.name})" for p in pngs) + "\n"
    tmp = table_path.with_suffix(table_path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, table_path)
    return table_path, pngs


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        table, pngs = make_report(args.results_dir, args.out_table, args.bins)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(table.read_text())
    print(f"wrote {table}" + "".join(f", {p}" for p in pngs))
