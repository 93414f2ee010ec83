"""Stage 1 of the thesis protocol (issue 11): does a pretrained language model make a better prior on instructions
it has no demonstrations for? Top-1 agreement with the expert on every CLEVR-Robot level, for a model ladder.

    python -m benchmark.stage1_levels                                   # tiny-random, MiniLM twin, MiniLM; 3 seeds
    python -m benchmark.stage1_levels --llms all-mpnet-base-v2 --seeds 1 # add a rung (needs requirements-mpnet.txt)

Every model of a seed is fine-tuned on the same demonstrations, collected on the `train` level only (programs and
wordings of the train split); each is then evaluated on fresh noise-free expert demonstrations of every level:
`train` (demonstrated wordings, new scenes), `heldout` (unseen programs and paraphrases), `rephrase` (colour and
relation synonyms and sentence frames no demonstration uses), `compose` (two relations at once). Chance is 2.5%.
One JSON per (model, seed) under --results-dir (a finished one is skipped on rerun) and table.md there.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LEVELS = ("train", "heldout", "rephrase", "compose")


def run(results: Path, llm: str, seed: int, args) -> dict:
    out = results / "stage1" / f"{llm}__seed{seed}.json"
    if out.exists():
        return json.loads(out.read_text())
    demos = results / "demos" / f"train__{args.num_episodes}ep__noise{args.demo_noise:g}__seed{seed}.npz"
    prior = results / "priors" / f"{llm}__seed{seed}"
    cmd = [
        sys.executable,
        str(REPO / "finetune_prior.py"),
        "--env-id",
        "CLEVR-Robot-v0",
        "--llm",
        llm,
        "--seed",
        str(seed),
        "--num-episodes",
        str(args.num_episodes),
        "--demo-noise",
        str(args.demo_noise),
        "--epochs",
        str(args.epochs),
        "--eval-goal-split",
        ",".join(LEVELS),
        "--eval-num-episodes",
        str(args.eval_episodes),
        "--output-dir",
        str(prior),
        "--no-progress-bar",
        "--no-time-forward",
    ]
    cmd += ["--demos-path", str(demos)] if demos.exists() else ["--save-demos-path", str(demos)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    proc = subprocess.run(cmd, cwd=results, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    summary = json.loads((prior / "prior_config.json").read_text())["train_summary"]
    result = {
        "llm": llm,
        "seed": seed,
        "train_time_s": summary["train_time_s"],
        **{level: summary[f"{level}_goals_top1"] for level in LEVELS},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(
        f"{llm} seed {seed}: "
        + " ".join(f"{level} {result[level]:.3f}" for level in LEVELS)
        + f" ({result['train_time_s']:.0f}s)",
        flush=True,
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llms", default="tiny-random,all-MiniLM-L6-v2-random,all-MiniLM-L6-v2")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--num-episodes", type=int, default=500, help="train-level expert episodes per seed")
    parser.add_argument("--demo-noise", type=float, default=0.3, help="probability of a random action in the demos")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=100, help="noise-free expert episodes per level")
    parser.add_argument("--results-dir", default=str(REPO / "benchmark" / "results" / "stage1_levels"))
    parser.add_argument("--table-only", action="store_true", help="only write table.md from the finished runs")
    args = parser.parse_args()
    results = Path(args.results_dir).resolve()
    results.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in [] if args.table_only else seeds:  # seed-major: every model of a seed shares its demos
        for llm in args.llms.split(","):
            run(results, llm, seed, args)

    done = [json.loads(p.read_text()) for p in sorted((results / "stage1").glob("*.json"))]
    lines = [
        "| model | seeds | " + " | ".join(f"{level} top-1" for level in LEVELS) + " | fine-tuning time |",
        "|---|---|" + "---|" * (len(LEVELS) + 1),
    ]
    for llm in dict.fromkeys(r["llm"] for r in done):
        mine = [r for r in done if r["llm"] == llm]
        cells = [
            f"{100 * np.mean([r[lv] for r in mine]):.1f} +- {100 * np.std([r[lv] for r in mine]):.1f}%" for lv in LEVELS
        ]
        lines.append(
            f"| {llm} | {len(mine)} | " + " | ".join(cells) + f" | {np.mean([r['train_time_s'] for r in mine]):.0f} s |"
        )
    table = "\n".join(lines)
    print(table)
    (results / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
