"""How fast a prior runs per state, at several batch sizes: what to set --prior-batch-size to, the floor of the
guidance cost on this machine, and what the decoder's prompt-prefix cache saves.

    python -m benchmark.prior_throughput --prior-path benchmark/results/cpu/priors/clevr__all-MiniLM-L6-v2
    python -m benchmark.prior_throughput --prior-path priors/CLEVR-Robot-v0__Qwen2.5-1.5B --device cuda \\
        --batch-sizes 16,64,256,1024
    python -m benchmark.prior_throughput --llm SmolLM2-135M --prefix-cache compare --prompt-template \\
        $'Instruction: {instruction}\\nState: {state}\\nAction:'
    python -m benchmark.prior_throughput --random-shape Qwen2.5-1.5B --prefix-cache compare --batch-sizes 8 \\
        --min-time 0

The states are real: expert episodes of the prior's own environment, with their instructions. Per batch size it
prints the wall time per state, the floating-point work per state (torch's FlopCounterMode: matmuls and attention)
and the rate achieved. On CPU it also measures this core's float32 matmul rate on a large square matmul, the most a
transformer forward can reach here, and so the least time a state can cost.

A decoder prior (causal model, last-token latent) runs with its prompt-prefix cache, as in the PPO scripts, in the
steady state: every instruction's key/values already cached. --prefix-cache off times it without, compare both (and
the first call, which fills the cache, apart as "fill"); --repeats alternates them and keeps the fastest of each.
Without a trained prior, --llm builds an untrained one (fresh LoRA, merged as load_prior does on CPU: the speed does
not depend on the weights) and --random-shape a base model of a Qwen2.5 size with random weights (no download; Qwen's
tokenizer is not offline, so SmolLM2's stands in for it where installed: a similar byte-level BPE, similar token
counts on English).
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

import lago_prior as lp
from finetune_prior import DEFAULT_PROMPT_TEMPLATE, Args, collect_expert_demos, prior_config, resolve_env
from lago_prior import PriorError, load_prior

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


def random_shape_prior(shape: str, env: dict, demos: dict, template: str, device: str) -> lp.LatentActionPrior:
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
        tokenizer = transformers.AutoTokenizer.from_pretrained(lp.smollm2_model_dir())
    except PriorError:
        tokenizer = lp.build_tiny_tokenizer()
    config = prior_config(Args(env_id=env["env_id"], prompt_template=template), env, demos)
    config.update(llm=f"{shape}-shaped-random", pooling="last", hidden_size=qwen.hidden_size)
    return lp.LatentActionPrior(config, llm, tokenizer).to(device).eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--prior-path", help="a prior directory made by finetune_prior.py")
    which.add_argument("--llm", help="time an untrained prior of this --llm on --env-id (LoRA merged)")
    which.add_argument("--random-shape", choices=sorted(QWEN_SHAPES), help="time a random-weight model of this shape")
    parser.add_argument("--env-id", default="CLEVR-Robot-v0", help="with --llm / --random-shape: the env")
    parser.add_argument(
        "--prompt-template", default=DEFAULT_PROMPT_TEMPLATE, help="with --llm / --random-shape: the prompt"
    )
    parser.add_argument("--batch-sizes", default="1,4,16,64,256", help="comma-separated states per forward pass")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--num-episodes", type=int, default=4, help="expert episodes to take the states from (more if needed)"
    )
    parser.add_argument(
        "--prefix-cache",
        choices=("on", "off", "compare"),
        default="on",
        help="decoder priors: with the prompt-prefix cache (on: as the PPO scripts run them), without, or both (compare)",
    )
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timed calls per measurement (>= 1)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="time each mode this many times, alternating; report the fastest"
    )
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
        demos = collect_expert_demos(
            env, episodes, noise=0.0, labels="expert", goal_split="train", seed=0, max_steps=None
        )
        if len(demos["actions"]) >= n or episodes >= 4096:
            break
        episodes *= 4
    t0 = time.perf_counter()
    try:
        if args.llm:
            config = prior_config(
                Args(env_id=env["env_id"], llm=args.llm, prompt_template=args.prompt_template), env, demos
            )
            prior = lp.build_prior(config, args.device)
            prior.llm = prior.llm.merge_and_unload()
            prior.eval()
        elif args.random_shape:
            prior = random_shape_prior(args.random_shape, env, demos, args.prompt_template, args.device)
    except PriorError as e:
        parser.error(str(e))
    built = time.perf_counter() - t0
    take = np.arange(n) % len(demos["actions"])  # repeat the states if there are fewer than the largest batch
    observations = torch.as_tensor(demos["observations"][take], dtype=torch.float32, device=args.device)
    instructions = [str(s) for s in demos["instructions"][take]]
    lengths = [len(prior.tokenizer(s)["input_ids"]) for s in instructions]
    prompts = [sum(map(len, prior._prompt_ids(s))) for s in instructions]
    modes = {"compare": (False, True), "on": (True,), "off": (False,)}[args.prefix_cache]
    modes = modes if prior.prefix_cache else (False,)
    compare = len(modes) == 2
    print(
        f"prior {args.prior_path or prior.config['llm']} (llm {prior.config['llm']}, {prior.config['state_encoding']} "
        f"state encoding, template {prior.config['prompt_template']!r}) on {args.device}, torch threads "
        f"{torch.get_num_threads()}, built in {built:.1f} s; {len(demos['actions'])} expert states of "
        f"{env['env_id']}, instructions of {min(lengths)}-{max(lengths)} tokens (prompts of {min(prompts)}-"
        f"{max(prompts)} besides the state)"
        + ("" if prior.prefix_cache else "; no prompt-prefix cache (encoder, or mean pooling)")
    )
    if compare:
        print(f"{'batch':>6} {'cache':>5} {'ms/state':>9} {'fill ms/state':>13} {'GFLOP/state':>12} {'GFLOP/s':>8}")
    else:
        print(f"{'batch':>6} {'ms/state':>9} {'GFLOP/state':>12} {'GFLOP/s':>8}")
    best_secs, least_gflop, per_mode = float("inf"), float("inf"), {}
    with torch.inference_mode():
        for b in batch_sizes:
            obs, instr = observations[:b], instructions[:b]
            fill, gflop, secs = {}, {}, {}
            for cached in modes:
                prior.prefix_cache = cached
                prior.clear_prefix_cache()
                t = time.perf_counter()
                prior(obs, instr)  # the first call: fills the cache (on)
                sync(args.device)
                fill[cached] = (time.perf_counter() - t) / b
                gflop[cached] = float("nan")
                if not args.no_flops:
                    with FlopCounterMode(display=False) as counter:
                        prior(obs, instr)
                    gflop[cached] = counter.get_total_flops() / 1e9 / b
            for _ in range(args.repeats):  # off and on alternate: a machine shared with other jobs slows both alike
                for cached in modes:
                    prior.prefix_cache = cached
                    s = seconds_per_call(lambda o=obs, i=instr: prior(o, i), args.device, args.min_time) / b
                    secs[cached] = min(secs.get(cached, float("inf")), s)
            for cached in modes:
                per_mode[b, cached] = secs[cached]
                rate = gflop[cached] / secs[cached]
                if compare:
                    fill_text = f"{1e3 * fill[cached]:.3f}" if cached else ""
                    print(
                        f"{b:>6} {'on' if cached else 'off':>5} {1e3 * secs[cached]:>9.3f} {fill_text:>13} "
                        f"{gflop[cached]:>12.4f} {rate:>8.3g}",
                        flush=True,
                    )
                else:
                    print(f"{b:>6} {1e3 * secs[cached]:>9.3f} {gflop[cached]:>12.4f} {rate:>8.3g}", flush=True)
                best_secs, least_gflop = min(best_secs, secs[cached]), min(least_gflop, gflop[cached])
            if compare:
                print(f"{b:>6} prompt-prefix cache: {per_mode[b, False] / per_mode[b, True]:.2f}x faster per state")
    if not args.device.startswith("cuda") and not args.no_flops:
        rate = matmul_gflops(args.device)
        print(
            f"this core's fp32 matmul rate (1024^3): {rate:.1f} GFLOP/s -> at least {1e3 * least_gflop / rate:.3f} "
            f"ms per state for this prior ({least_gflop:.4f} GFLOP); measured best {1e3 * best_secs:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
