"""What LaGO's guidance costs in wall time: the same PPO run with and without the prior.

    python -m benchmark.guidance_cost --script lago_ppo_discrete.py --env-id CLEVR-Robot-v0 --llm tiny-random
    python -m benchmark.guidance_cost --script lago_ppo_continuous.py --env-id reach-v3 --llm all-MiniLM-L6-v2 \\
        --total-timesteps 8192 -- --num-minibatches 8

runs `script` twice per repeat with identical settings (env, seed, --num-envs, --num-steps,
--total-timesteps, every extra argument): once with `--kl-coef 0` (vanilla PPO, no language model)
and once with `--kl-coef {kl_coef}` (LaGO, the prior evaluated at every rollout state), alternating so that
both see the same background load. It reads each run's last `charts/SPS` from its tensorboard events (env steps
per second of the training loop, rollouts + updates, without start-up and prior loading; the scripts log it as an
integer) and times the subprocess (everything), and prints the wall time per env step of each and their ratio.
The smallest time over the repeats is the estimate (noise on a shared CPU only ever adds time).

Unknown arguments (and everything after `--`) go to the script unchanged, e.g. `--prior-path DIR`.
The prior must exist (finetune_prior.py); the script's error says how to make it.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

from benchmark.plot import read_scalars


def run_once(script, env_id, kl_coef, llm, common, extra, exp_name, threads):
    """Run the script once (in the current directory); returns {"global_step", "sps" (its last charts/SPS),
    "subprocess_s"} (raises with the script's output on failure)."""
    cmd = [
        sys.executable,
        script,
        "--env-id",
        env_id,
        "--kl-coef",
        str(kl_coef),
        "--llm",
        llm,
        "--exp-name",
        exp_name,
        *common,
        *extra,
    ]
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    subprocess_s = time.time() - start
    run_dirs = glob.glob(os.path.join("runs", f"*__{exp_name}__*"))
    steps, sps = read_scalars(run_dirs[0], "charts/SPS") if len(run_dirs) == 1 else ([], [])
    if proc.returncode != 0 or not sps:
        raise SystemExit(
            f"error: {' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    shutil.rmtree(run_dirs[0], ignore_errors=True)
    return {"global_step": steps[-1], "sps": sps[-1], "subprocess_s": subprocess_s}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", default="lago_ppo_discrete.py", help="the PPO script to time")
    parser.add_argument("--env-id", default="CLEVR-Robot-v0", help="--env-id of both runs")
    parser.add_argument("--llm", default="tiny-random", help="--llm of the LaGO run (its prior must exist)")
    parser.add_argument(
        "--kl-coef",
        type=float,
        default=1.0,
        help="beta of the LaGO run (the vanilla run has 0; the cost does not depend on it)",
    )
    parser.add_argument("--num-envs", type=int, default=4, help="--num-envs of both runs")
    parser.add_argument("--num-steps", type=int, default=128, help="--num-steps of both runs")
    parser.add_argument("--total-timesteps", type=int, default=8192, help="--total-timesteps of both runs")
    parser.add_argument("--seed", type=int, default=1, help="--seed of both runs")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant; the fastest counts")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of the runs (1: tiny MLPs gain nothing from threads on a shared CPU; 0: inherit)",
    )
    parser.add_argument("--out", default=None, help="also write the numbers to this JSON file")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    common = [
        "--num-envs",
        str(args.num_envs),
        "--num-steps",
        str(args.num_steps),
        "--total-timesteps",
        str(args.total_timesteps),
        "--seed",
        str(args.seed),
    ]

    tag = f"guidance_cost_{os.getpid()}_{int(time.time())}"
    runs = {"vanilla": [], "lago": []}
    for rep in range(args.repeats):
        for variant, kl_coef in (("vanilla", 0.0), ("lago", args.kl_coef)):
            result = run_once(
                args.script, args.env_id, kl_coef, args.llm, common, extra, f"{tag}_{variant}{rep}", args.threads
            )
            per_step_ms = 1000.0 / result["sps"]
            runs[variant].append({"ms_per_step": per_step_ms, **result})
            print(
                f"  {variant:7s} repeat {rep}: {per_step_ms:.3f} ms/env-step over {result['global_step']} steps "
                f"({result['subprocess_s']:.1f} s in all, with start-up)",
                flush=True,
            )

    best = {v: min(runs[v], key=lambda r: r["ms_per_step"]) for v in runs}
    ratio = best["lago"]["ms_per_step"] / best["vanilla"]["ms_per_step"]
    extra_ms = best["lago"]["ms_per_step"] - best["vanilla"]["ms_per_step"]
    print(
        f"{args.script} {args.env_id} --num-envs {args.num_envs} --num-steps {args.num_steps} "
        f"--total-timesteps {args.total_timesteps} {' '.join(extra)}".rstrip()
    )
    print(
        f"  vanilla PPO (--kl-coef 0): {best['vanilla']['ms_per_step']:.3f} ms per env step "
        f"({best['vanilla']['subprocess_s']:.1f} s in all)"
    )
    print(
        f"  LaGO (--llm {args.llm}):   {best['lago']['ms_per_step']:.3f} ms per env step "
        f"(+{extra_ms:.3f} ms over vanilla; {best['lago']['subprocess_s']:.1f} s in all, with the prior's loading)"
    )
    print(f"guidance cost ratio (LaGO / vanilla wall time per env step): {ratio:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {
                    "script": args.script,
                    "env_id": args.env_id,
                    "llm": args.llm,
                    "settings": common + extra,
                    "runs": runs,
                    "ratio": ratio,
                },
                f,
                indent=2,
            )
    return ratio


if __name__ == "__main__":
    main()
