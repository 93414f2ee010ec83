"""How fast a prior runs per state, at several batch sizes: what to set --prior-batch-size to, and the floor of the
guidance cost on this machine.

    python -m benchmark.prior_throughput --prior-path priors/CLEVR-Robot-v0__all-MiniLM-L6-v2
    python -m benchmark.prior_throughput --prior-path priors/CLEVR-Robot-v0__Qwen2.5-1.5B --device cuda \\
        --batch-sizes 16,64,256,1024
    python -m benchmark.prior_throughput --llm all-MiniLM-L6-v2 --state-encoding embed
    python -m benchmark.prior_throughput --random-shape Qwen2.5-1.5B --batch-sizes 8 --min-time 0

The states are real: expert episodes of the prior's own environment, with their instructions. Per batch size it
prints the wall time per state, the floating-point work per state (torch's FlopCounterMode: matmuls and attention)
and the rate achieved. On CPU it also measures this core's float32 matmul rate on a large square matmul, the most a
transformer forward can reach here, and so the least time a state can cost. A fused prior is timed in its steady
state (every instruction already read by the LLM), as in the PPO scripts. Without a trained prior, --llm builds an
untrained one (fresh LoRA, merged as load_prior does on CPU: the speed does not depend on the weights) and
--random-shape an embed prior on a base model of a Qwen2.5 size with random weights (no download; Qwen's tokenizer is
not offline, so SmolLM2's stands in for it where installed, else tiny-random's).
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository root

from finetune_prior import Args, LatentActionPrior, PriorError, build_prior, collect_expert_demos, demo_recipe  # noqa: E402
from finetune_prior import load_prior, prior_config, resolve_env, tiny_random_model  # noqa: E402

# the Qwen2.5 base models' shapes (their config.json on the Hub), for --random-shape
QWEN_SHAPES = {
    "Qwen2.5-0.5B": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14},
    "Qwen2.5-1.5B": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
    },
}


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def seconds_per_call(fn, device, min_time=1.0):
    """Mean seconds per call of fn, calling it for min_time seconds (at least once) after one warm-up call."""
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_time:
        fn()
        calls += 1
    sync(device)
    return (time.perf_counter() - start) / calls


def matmul_gflops(device, n=1024):
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / seconds_per_call(lambda: a @ b, device) / 1e9


def random_shape_prior(shape: str, env: dict, demos: dict, device: str) -> LatentActionPrior:
    """A prior on a Qwen2.5-`shape` model with random weights (no LoRA: as merged), for timing only."""
    qwen = transformers.Qwen2Config(
        vocab_size=151_936,
        num_key_value_heads=2,
        max_position_embeddings=131_072,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        **QWEN_SHAPES[shape],
    )
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    llm = transformers.AutoModel.from_config(qwen, dtype=dtype)
    try:
        from benchmark.offline_models import smollm2_model_dir

        tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_model_dir())
    except PriorError:
        tokenizer = tiny_random_model()[1]
    config = prior_config(Args(env_id=env["env_id"], state_encoding="embed"), env, demos)
    config.update(llm=f"{shape}-shaped-random", pooling="last")
    return LatentActionPrior(config, llm, tokenizer).to(device).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--prior-path", help="a prior directory made by finetune_prior.py")
    which.add_argument("--llm", help="time an untrained prior of this --llm on --env-id (LoRA merged)")
    which.add_argument("--random-shape", choices=sorted(QWEN_SHAPES), help="time a random-weight model of this shape")
    parser.add_argument("--env-id", default="CLEVR-Robot-v0", help="with --llm / --random-shape: the env")
    parser.add_argument("--state-encoding", default="fused", choices=("fused", "embed"), help="with --llm")
    parser.add_argument("--batch-sizes", default="1,4,16,64,256", help="comma-separated states per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--num-episodes", type=int, default=4, help="expert episodes to take the states from (more if needed)"
    )
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per measurement (>= 1)")
    parser.add_argument("--repeats", type=int, default=1, help="time each batch size this many times; the fastest")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (one forward less per line)")
    args = parser.parse_args(argv)
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        batch_sizes = []
    if not batch_sizes or min(batch_sizes) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes!r}: give positive integers separated by commas, e.g. 1,16,256")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give at least 1")
    try:
        if args.prior_path:
            prior = load_prior(args.prior_path, device=args.device)
            env = resolve_env(prior.config["env_id"])
        else:
            env = resolve_env(args.env_id)
    except PriorError as e:
        parser.error(str(e))
    n = max(batch_sizes)
    episodes = args.num_episodes
    while True:  # enough distinct states for the largest batch (CLEVR's expert episodes are 2-3 steps long)
        recipe = demo_recipe(Args(env_id=env["env_id"], num_episodes=episodes, demo_noise=0.0, seed=0), env)
        demos = collect_expert_demos(env, recipe)
        if len(demos["actions"]) >= n or episodes >= 4096:
            break
        episodes *= 4
    t0 = time.perf_counter()
    try:
        if args.llm:
            config = prior_config(
                Args(env_id=env["env_id"], llm=args.llm, state_encoding=args.state_encoding), env, demos
            )
            prior = build_prior(config, args.device)
            prior.llm = prior.llm.merge_and_unload()
            prior.eval()
        elif args.random_shape:
            prior = random_shape_prior(args.random_shape, env, demos, args.device)
    except PriorError as e:
        parser.error(str(e))
    built = time.perf_counter() - t0
    take = np.arange(n) % len(demos["actions"])  # repeat the states if there are fewer than the largest batch
    observations = torch.as_tensor(demos["observations"][take], dtype=torch.float32, device=args.device)
    instructions = [str(s) for s in demos["instructions"][take]]
    lengths = [len(prior.tokenizer(s)["input_ids"]) for s in instructions]
    prompts = [sum(map(len, prior._prompt_ids(s))) for s in instructions]
    print(
        f"prior {args.prior_path or prior.config['llm']} (llm {prior.config['llm']}, {prior.config['state_encoding']} "
        f"state encoding, template {prior.config['prompt_template']!r}) on {args.device}, torch threads "
        f"{torch.get_num_threads()}, built in {built:.1f} s; {len(demos['actions'])} expert states of "
        f"{env['env_id']}, instructions of {min(lengths)}-{max(lengths)} tokens (prompts of {min(prompts)}-"
        f"{max(prompts)} besides the state)"
    )
    print(f"{'batch':>6} {'ms/state':>9} {'GFLOP/state':>12} {'GFLOP/s':>8}")
    best_secs, least_gflop = float("inf"), float("inf")
    with torch.inference_mode():
        for b in batch_sizes:
            obs, instr = observations[:b], instructions[:b]
            prior(obs, instr)  # a fused prior reads its instructions once: the steady state of a PPO run
            gflop = float("nan")
            if not args.no_flops:
                with FlopCounterMode(display=False) as counter:
                    prior(obs, instr)
                gflop = counter.get_total_flops() / 1e9 / b
            secs = min(
                seconds_per_call(lambda o=obs, i=instr: prior(o, i), args.device, args.min_time) / b
                for _ in range(args.repeats)
            )
            print(f"{b:>6} {1e3 * secs:>9.3f} {gflop:>12.4f} {gflop / secs:>8.3g}", flush=True)
            best_secs, least_gflop = min(best_secs, secs), min(least_gflop, gflop)
    if not args.device.startswith("cuda") and not args.no_flops:
        rate = matmul_gflops(args.device)
        print(
            f"this core's fp32 matmul rate (1024^3): {rate:.1f} GFLOP/s -> at least {1e3 * least_gflop / rate:.3f} "
            f"ms per state for this prior ({least_gflop:.4f} GFLOP); measured best {1e3 * best_secs:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
