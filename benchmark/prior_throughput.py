"""How fast a prior runs per state, at several batch sizes: what to set --prior-batch-size to, and the floor
of the guidance cost on this machine.

    python -m benchmark.prior_throughput --prior-path benchmark/results/cpu/priors/clevr__all-MiniLM-L6-v2
    python -m benchmark.prior_throughput --prior-path priors/CLEVR-Robot-v0__Qwen2.5-1.5B --device cuda \\
        --batch-sizes 16,64,256,1024

The states are real: expert episodes of the prior's own environment, with their instructions. Per batch size
it prints the wall time per state, the floating-point work per state (torch's FlopCounterMode: matmuls and
attention) and the rate achieved. On CPU it also measures this core's float32 matmul rate on a large
square matmul, the most a transformer forward can reach here, and so the least time a state can cost.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from finetune_prior import collect_expert_demos, resolve_env
from lago_prior import PriorError, load_prior


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_call(fn, device, min_time=1.0):
    """Mean seconds per call of fn, calling it for min_time seconds after one warm-up call."""
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_time:
        fn()
        calls += 1
    sync(device)
    return (time.perf_counter() - start) / calls


def matmul_gflops(device, n=1024):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, device) / 1e9


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior-path", required=True, help="a prior directory made by finetune_prior.py")
    parser.add_argument("--batch-sizes", default="1,4,16,64,256", help="comma-separated states per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--num-episodes", type=int, default=4, help="expert episodes to take the states from (more if needed)"
    )
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give positive integers separated by commas, e.g. 1,16,256")
    try:
        prior = load_prior(args.prior_path, device=args.device)
    except PriorError as e:
        parser.error(str(e))
    env = resolve_env(prior.config["env_id"])
    n = max(batch_sizes)
    episodes = args.num_episodes
    while True:  # enough distinct states for the largest batch (CLEVR's expert episodes are 2-3 steps long)
        demos = collect_expert_demos(env, episodes, noise=0.0, goal_split="train", seed=0, max_steps=None)
        if len(demos["actions"]) >= n or episodes >= 4096:
            break
        episodes *= 4
    take = np.arange(n) % len(demos["actions"])  # repeat the states if there are fewer than the largest batch
    observations = torch.as_tensor(demos["observations"][take], dtype=torch.float32, device=args.device)
    instructions = [str(s) for s in demos["instructions"][take]]
    lengths = [len(prior.tokenizer(s)["input_ids"]) for s in instructions]
    print(
        f"prior {args.prior_path} (llm {prior.config['llm']}, {prior.config['state_encoding']} state encoding) "
        f"on {args.device}, torch threads {torch.get_num_threads()}; {len(demos['actions'])} expert states of "
        f"{env['env_id']}, instructions of {min(lengths)}-{max(lengths)} tokens"
    )
    print(f"{'batch':>6} {'ms/state':>9} {'GFLOP/state':>12} {'GFLOP/s':>8}")
    best_secs, least_gflop = float("inf"), float("inf")  # least work per state: the batch with the least padding
    with torch.inference_mode():
        for b in batch_sizes:
            obs, instr = observations[:b], instructions[:b]
            with FlopCounterMode(display=False) as counter:
                prior(obs, instr)
            gflop = counter.get_total_flops() / 1e9 / b
            secs = seconds_per_call(lambda obs=obs, instr=instr: prior(obs, instr), args.device) / b
            print(f"{b:>6} {1e3 * secs:>9.3f} {gflop:>12.4f} {gflop / secs:>8.3g}")
            best_secs, least_gflop = min(best_secs, secs), min(least_gflop, gflop)
    if not args.device.startswith("cuda"):
        rate = matmul_gflops(args.device)
        print(
            f"this core's fp32 matmul rate (1024^3): {rate:.1f} GFLOP/s -> at least {1e3 * least_gflop / rate:.3f} "
            f"ms per state for this prior ({least_gflop:.4f} GFLOP); measured best {1e3 * best_secs:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
