"""Stage 1 per instruction level: does the prior read the state, and does a pretrained language model make a better
prior on instructions it has no demonstrations for? A model ladder plus a behaviour-cloning anchor on CLEVR-Robot.

    python -m benchmark.stage1_levels                                    # tiny-random, MiniLM twin, MiniLM, bc-mlp
    python -m benchmark.stage1_levels --rungs all-MiniLM-L6-v2:embed     # the paper's reading (state tokens in the LLM)
    python -m benchmark.stage1_levels --num-episodes 2000 --seeds 1      # more demonstrations

A rung is `llm` or `llm:encoding` (finetune_prior.py --state-encoding; default fused), or `bc-mlp`: a 2 x 256 ReLU MLP
on the env's own observation (10 coordinates + the one-hot goal; it never reads the words), trained on the same
demonstrations with the same early stopping. Every rung of a seed trains on the same demonstrations, collected on the
`train` level only (with --demo-noise random actions); each is then scored on every level: top-1 agreement with the
noise-free expert on fresh expert episodes (the same states for every rung; chance 2.5%), and the success of the
rung acting alone, greedily (argmax) and sampling its actions (the policy LaGO's KL pulls towards), over --rollouts
episodes per level. On `compose` (two relations) the MLP reads the first goal slot only. One JSON per (rung, episodes,
seed) under --results-dir (a finished one is skipped on rerun); table.md and curves.png there.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LEVELS = "train,heldout,rephrase,compose"  # the default --levels
EVAL_SEED_OFFSET = 10_000  # the levels' noise-free expert episodes are collected with seed + 10_000


def level_demos_path(results: Path, args, level: str, seed: int) -> Path:
    """The noise-free expert episodes of `level` on which every rung's top-1 is scored."""
    return (
        results / "demos" / f"{args.env_id}__{level}__{args.eval_episodes}ep__expert__seed{seed + EVAL_SEED_OFFSET}.npz"
    )


def rollouts(policy_or_path, seed: int, args) -> dict:
    """Success of a prior (directory) or a module acting alone on every level: {"greedy": {level: s}, "sampled": ...}."""
    from benchmark.prior_alone import evaluate_prior

    kw = {"policy": None if isinstance(policy_or_path, Path) else policy_or_path}
    path = policy_or_path if isinstance(policy_or_path, Path) else None
    return {
        mode: evaluate_prior(
            path, "clevr", args.env_id, seed, args.rollouts, levels=args.levels, sample=mode == "sampled", **kw
        )["success"]
        for mode in ("greedy", "sampled")
    }


def run_prior(results: Path, rung: str, seed: int, args, demos: Path) -> dict:
    """Fine-tune one prior (finetune_prior.train: its defaults but the flags below, on one torch thread), evaluated on
    each level's expert episodes after every epoch, and score it."""
    import contextlib

    import torch
    import tyro

    from benchmark.offline_models import llm_arg
    from finetune_prior import Args, load_demos, resolve_env, train

    llm, _, encoding = rung.partition(":")
    prior = results / "priors" / f"{rung.replace(':', '__')}__{args.num_episodes}ep__seed{seed}"
    flags = ["--env-id", args.env_id, "--llm", llm_arg(llm), "--seed", str(seed), "--demos-path", str(demos)]
    flags += ["--output-dir", str(prior), *(["--state-encoding", encoding] if encoding else [])]
    env = resolve_env(args.env_id)
    levels = {f"{lv}_goals": load_demos(str(level_demos_path(results, args, lv, seed)), env) for lv in args.levels}
    torch.set_num_threads(1)
    with contextlib.chdir(results):  # its runs/ (tensorboard) under the results dir
        _, summary = train(tyro.cli(Args, args=flags + args.finetune_args.split()), eval_sets=levels)
    return {
        "train_time_s": summary["train_time_s"],
        "optimizer_steps": summary["optimizer_steps"],
        "best_epoch": summary["best_epoch"],
        "top1": {level: summary[f"{level}_goals_top1"] for level in args.levels},
        "heldout_nll": summary["eval_nll"],
        "history": [
            {name: m["nll" if name == "eval" else "top1"] for name, m in h.items()} for h in summary["history"]
        ],
        "success": rollouts(prior, seed, args),
    }


def run_bc_mlp(results: Path, seed: int, args, demos: Path) -> dict:
    """The anchor: a 2 x 256 MLP on the env observation (first 24 dims), cross-entropy on the same demos, AdamW 1e-3,
    batch 64, early stopping on the held-out episodes' NLL (finetune_prior.py's split and patience)."""
    import torch
    from torch import nn

    from finetune_prior import load_demos, resolve_env, split_by_episode

    env = resolve_env(args.env_id)
    train, held = split_by_episode(load_demos(str(demos), env), 0.1, seed)
    obs_dim = env["obs_dims"][0]  # one goal slot: the 10 coordinates and the goal one-hots
    x = torch.from_numpy(train["observations"][:, :obs_dim])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)

    class BCMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(obs_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 40)
            )

        def forward(self, observations, instructions=None):  # the prior's call; the words are not read
            obs = torch.as_tensor(observations, dtype=torch.float32)[:, :obs_dim]
            return self.net((obs - mean) / std)

    torch.manual_seed(seed)
    model = BCMLP()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    y = torch.from_numpy(train["actions"])
    xh, yh = torch.from_numpy(held["observations"]), torch.from_numpy(held["actions"])
    generator = torch.Generator().manual_seed(seed)
    t0, history, best, best_state, epoch = time.time(), [], float("inf"), None, 0
    for epoch in range(1, 201):
        for idx in torch.randperm(len(y), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            nll = nn.functional.cross_entropy(model(xh), yh).item()
        history.append({"eval": nll})
        if nll < best:
            best, best_epoch, best_state = nll, epoch, {k: v.clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= args.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    top1 = {}
    with torch.no_grad():
        for level in args.levels:
            d = np.load(level_demos_path(results, args, level, seed))
            top1[level] = float((model(d["observations"]).argmax(-1).numpy() == d["actions"]).mean())
    return {
        "train_time_s": time.time() - t0,
        "optimizer_steps": epoch * int(np.ceil(len(y) / 64)),
        "best_epoch": best_epoch,
        "top1": top1,
        "heldout_nll": best,
        "history": history,
        "success": rollouts(model, seed, args),
    }


def collect_missing_demos(results: Path, seed: int, args, demos: Path) -> None:
    """The training demos (finetune_prior's recipe: the same data as its own collection) and the levels' evaluation
    sets, collected where they are not on disk yet."""
    from finetune_prior import Args, collect_expert_demos, demo_recipe, resolve_env, save_demos

    env = resolve_env(args.env_id)
    recipe = demo_recipe(Args(env_id=args.env_id, seed=seed, num_episodes=args.num_episodes,
                              demo_noise=args.demo_noise, demo_labels=args.demo_labels), env)  # fmt: skip
    if not demos.exists():
        save_demos(collect_expert_demos(env, recipe), str(demos))
    for level in args.levels:
        path = level_demos_path(results, args, level, seed)
        if not path.exists():
            level_recipe = recipe | {"num_episodes": args.eval_episodes, "noise": 0.0, "labels": "expert"}
            level_recipe |= {"goal_split": level, "seed": seed + EVAL_SEED_OFFSET}
            save_demos(collect_expert_demos(env, level_recipe), str(path))


def run(results: Path, rung: str, seed: int, args) -> dict:
    out = results / "stage1" / f"{rung.replace(':', '__')}__{args.num_episodes}ep__seed{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    demos = (
        results
        / "demos"
        / f"{args.env_id}__train__{args.num_episodes}ep__noise{args.demo_noise:g}__{args.demo_labels}__seed{seed}.npz"
    )
    collect_missing_demos(results, seed, args, demos)
    if rung == "bc-mlp":
        result = run_bc_mlp(results, seed, args, demos)
    else:
        result = run_prior(results, rung, seed, args, demos)
    result = {"rung": rung, "seed": seed, "num_episodes": args.num_episodes, **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    print(
        f"{rung} {args.num_episodes} ep seed {seed}: top-1 "
        + " ".join(f"{lv} {result['top1'][lv]:.3f}" for lv in args.levels)
        + " | sampled success "
        + " ".join(f"{lv} {result['success']['sampled'][lv]:.2f}" for lv in args.levels)
        + f" ({result['train_time_s']:.0f}s, best epoch {result['best_epoch']})",
        flush=True,
    )
    return result


def cell(values) -> str:
    """Mean ± sample std over seeds (one seed: the mean alone)."""
    if len(values) < 2:
        return f"{100 * np.mean(values):.1f}"
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def write_table(results: Path) -> str:
    done = [json.loads(p.read_text()) for p in sorted((results / "stage1").glob("*.json"))]
    levels = list(done[0]["top1"]) if done else []
    header = "| rung | demo episodes | seeds | metric | " + " | ".join(levels) + " | held-out NLL | time |"
    lines = [header, "|---|---|---|---|" + "---|" * (len(levels) + 2)]
    for rung, eps in dict.fromkeys((r["rung"], r["num_episodes"]) for r in done):
        mine = [r for r in done if r["rung"] == rung and r["num_episodes"] == eps]
        for i, (metric, get) in enumerate(
            (
                ("top-1 %", lambda r, lv: r["top1"][lv]),
                ("greedy success %", lambda r, lv: r["success"]["greedy"][lv]),
                ("sampled success %", lambda r, lv: r["success"]["sampled"][lv]),
            )
        ):
            extra = (
                f" {np.mean([r['heldout_nll'] for r in mine]):.2f} | {np.mean([r['train_time_s'] for r in mine]):.0f} s |"
                if i == 0
                else " | |"
            )
            lines.append(
                f"| {rung if i == 0 else ''} | {eps if i == 0 else ''} | {len(mine) if i == 0 else ''} | {metric} | "
                + " | ".join(cell([get(r, lv) for r in mine]) for lv in levels)
                + " |"
                + extra
            )
    table = "\n".join(lines)
    (results / "table.md").write_text(table + "\n")
    return table


def plot(results: Path) -> None:
    """curves.png: held-out NLL and train / held-out top-1 against epochs (mean over seeds, the most demo episodes),
    and, where several demo budgets were run, sampled success on held-out goals against demo episodes (the seeds run
    at every budget)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [json.loads(p.read_text()) for p in sorted((results / "stage1").glob("*.json"))]
    rungs = list(dict.fromkeys(r["rung"] for r in done))
    budgets = len({r["num_episodes"] for r in done}) > 1
    fig, axes = plt.subplots(1, 4 if budgets else 3, figsize=(20 if budgets else 15, 4))
    for i, rung in enumerate(rungs):
        color = f"C{i}"
        mine = [r for r in done if r["rung"] == rung]
        eps = max(r["num_episodes"] for r in mine)
        runs = [r for r in mine if r["num_episodes"] == eps]
        for ax, key in zip(axes[:3], ("eval", "train_goals", "heldout_goals")):
            curves = [[h[key] for h in r["history"] if key in h] for r in runs]
            n = min(len(c) for c in curves)
            if n:
                ax.plot(range(n), np.mean([c[:n] for c in curves], 0), color=color, label=f"{rung} ({eps} ep)")
        if budgets:
            sizes = sorted({r["num_episodes"] for r in mine})
            seeds = set.intersection(*({r["seed"] for r in mine if r["num_episodes"] == n} for n in sizes))
            ok = [r for r in mine if r["seed"] in seeds]  # the seeds run at every budget
            success = [
                np.mean([r["success"]["sampled"]["heldout"] for r in ok if r["num_episodes"] == n]) for n in sizes
            ]
            axes[3].plot(sizes, success, marker="o", color=color, label=rung)
    titles = ("held-out demo NLL", "top-1, train goals", "top-1, held-out goals", "sampled success, held-out goals")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("demo episodes" if title.startswith("sampled") else "epoch")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(results / "curves.png", dpi=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="CLEVR-Robot-v0", choices=("CLEVR-Robot-v0", "CLEVR-Robot-KALM-v0"))
    parser.add_argument("--levels", default=LEVELS, help="the levels scored, a comma list (first: train)")
    parser.add_argument("--rungs", default="tiny-random,all-MiniLM-L6-v2-random,all-MiniLM-L6-v2,bc-mlp")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--num-episodes", type=int, default=2000, help="train-level expert episodes per seed")
    parser.add_argument("--demo-noise", type=float, default=0.3, help="probability of a random action in the demos")
    parser.add_argument("--demo-labels", default="expert", choices=("expert", "executed"))
    parser.add_argument("--finetune-args", default="", help="more finetune_prior.py flags for the prior rungs")
    parser.add_argument("--patience", type=int, default=3, help="bc-mlp early stopping (priors: finetune_prior's)")
    parser.add_argument("--eval-episodes", type=int, default=100, help="noise-free expert episodes per level (top-1)")
    parser.add_argument("--rollouts", type=int, default=100, help="episodes per level of each rung acting alone")
    parser.add_argument("--results-dir", default=str(REPO / "benchmark" / "results" / "stage1_levels"))
    parser.add_argument("--table-only", action="store_true", help="only write table.md and curves.png")
    args = parser.parse_args()
    args.levels = args.levels.split(",")
    results = Path(args.results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    for seed in [] if args.table_only else [int(s) for s in args.seeds.split(",")]:
        for rung in args.rungs.split(","):  # seed-major: every rung of a seed shares its demos
            run(results, rung, seed, args)
    print(write_table(results))
    plot(results)


if __name__ == "__main__":
    main()
