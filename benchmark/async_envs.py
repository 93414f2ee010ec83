"""Env steps per second of the PPO scripts with the envs stepped in this process (SyncVectorEnv, the default)
or in subprocesses (--async-envs, gymnasium's AsyncVectorEnv), for vanilla PPO and LaGO with a tiny prior.

    python -m benchmark.async_envs                        # CLEVR-Robot and reach-v3; 2, 8 and 16 envs
    python -m benchmark.async_envs --num-envs 4,32 --envs clevr

Each setting runs the script for 4 rollouts of 64 steps per env (`--eval-episodes 0`) and reads `wall_time_s`
(rollouts + updates, no start-up) from its eval.json; the best of `--repeats` counts (noise only adds time).
The async envs can use at most as many cores as the machine has: on 2 cores expect at most ~2x.
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmark.guidance_cost import run_once  # noqa: E402

ENVS = {
    "clevr": ("lago_ppo_discrete.py", "CLEVR-Robot-v0", []),
    "reach": ("lago_ppo_continuous.py", "reach-v3", ["--num-episodes", "4", "--max-episode-steps", "60"]),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="clevr,reach")
    parser.add_argument("--num-envs", default="2,8,16")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = ["| env | envs | vanilla sync | vanilla async | LaGO sync | LaGO async |", "|---|---|---|---|---|---|"]
    workdir = Path(tempfile.mkdtemp(prefix="async_envs_"))
    os.chdir(workdir)
    for name in args.envs.split(","):
        script, env_id, stage1 = ENVS[name]
        prior = workdir / f"prior_{name}"
        subprocess.run(
            [
                sys.executable,
                str(REPO / "finetune_prior.py"),
                "--env-id",
                env_id,
                "--llm",
                "tiny-random",
                "--epochs",
                "1",
                "--output-dir",
                str(prior),
                "--no-progress-bar",
                *stage1,
            ],
            check=True,
            capture_output=True,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
        for n in (int(x) for x in args.num_envs.split(",")):
            common = ["--num-envs", str(n), "--num-steps", "64", "--total-timesteps", str(4 * 64 * n), "--seed", "1"]
            cells = []
            for kl_coef, extra in ((0.0, []), (1.0, ["--prior-path", str(prior)])):
                for mode in ([], ["--async-envs"]):
                    best = min(
                        (
                            run_once(
                                str(REPO / script),
                                env_id,
                                kl_coef,
                                "tiny-random",
                                common,
                                extra + mode,
                                f"async_{name}_{n}_{kl_coef}_{len(mode)}_{r}",
                                1,
                            )
                            for r in range(args.repeats)
                        ),
                        key=lambda result: result["wall_time_s"],
                    )
                    cells.append(f"{best['global_step'] / best['wall_time_s']:.0f}")
            rows.append(f"| {env_id} | {n} | " + " | ".join(cells) + " |")
            print(rows[-1], flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
