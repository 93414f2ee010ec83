"""finetune_prior.py and fp.py: the latent action prior, demo files, fine-tuning, saving/loading, DDP and
clear errors.

Fine-tuning runs use tiny-random (a ~100k-parameter random Qwen2) on real expert demos; the session
fixtures of conftest.py (tiny_clevr_run, tiny_reach_run) are shared with the PPO scripts' tests.
"""

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym

import numpy as np
import pytest
import torch

import finetune_prior as fp
from finetune_prior import PriorError, default_prior_path, load_prior

REPO = Path(__file__).resolve().parent.parent
SCRIPT = str(REPO / "finetune_prior.py")


def synthetic_demos(env_id="CLEVR-Robot-v0", episodes=6, steps=5, seed=0) -> dict:
    """A demo dict in the contract format (random numbers, real shapes)."""
    rng = np.random.default_rng(seed)
    n = episodes * steps
    clevr = env_id == "CLEVR-Robot-v0"
    obs_dim, state_dim = (24, 10) if clevr else (39, 39)
    actions = rng.integers(0, 40, n) if clevr else rng.uniform(-1, 1, (n, 4)).astype(np.float32)
    colors = ["red", "blue", "green"]
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": actions,
        "instructions": np.array([f"push the {colors[i // steps % 3]} ball left" for i in range(n)]),
        "episode_ids": np.repeat(np.arange(episodes), steps).astype(np.int64),
        "episode_success": np.ones(episodes, dtype=bool),
        "env_id": env_id,
        "state_dim": state_dim,
    }


def run_cli(args, cwd, timeout=300, extra_env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(extra_env or {})}
    return subprocess.run(
        [sys.executable, SCRIPT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def run_main(argv, tmp_path, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    code = fp.main([*argv, "--output-dir", str(tmp_path / "prior")])
    return code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_default_prior_path():
    assert default_prior_path("CLEVR-Robot-v0", "tiny-random") == "priors/CLEVR-Robot-v0__tiny-random"
    assert default_prior_path("reach-v3", "Qwen/Qwen2.5-0.5B") == "priors/reach-v3__Qwen_Qwen2.5-0.5B"
    assert default_prior_path("MT10", "all-MiniLM-L6-v2") == "priors/MT10__all-MiniLM-L6-v2"


def test_tiny_random_is_small_and_deterministic():
    m1, t1 = fp.load_llm("tiny-random", torch.float32)
    m2, t2 = fp.load_llm("tiny-random", torch.float32)
    assert 80_000 <= sum(p.numel() for p in m1.parameters()) <= 150_000
    assert m1.config.model_type == "qwen2"
    assert fp.fingerprint(t1, m1) == fp.fingerprint(t2, m2) != fp.fingerprint(t1)
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert len(t1) <= 512
    text = "There is a red ball; is there a cyan rubber sphere in front of it? x=0.25"
    assert t1.decode(t1(text)["input_ids"]) == text  # byte-level: any text round-trips


def test_clevr_prior_learns_and_agrees_with_expert(tiny_clevr_run):
    """End to end on CLEVR-Robot (expert demos collected by the script): the loss falls, and on fresh expert
    episodes (held-out states) the prior's top-1 action agrees with the expert far above chance (1/40)."""
    summary = tiny_clevr_run["summary"]
    assert summary["final_train_loss"] < summary["first_train_loss"] - 0.3, summary
    history = summary["history"]
    assert summary["eval_nll"] == min(h["eval"]["nll"] for h in history) < history[0]["eval"]["nll"]
    assert os.path.isfile(tiny_clevr_run["demos"])
    from envs.clevr_expert import collect_demos

    prior = load_prior(tiny_clevr_run["prior"])
    fresh = collect_demos(100, seed=4242)  # ~270 states (and episodes) the prior never saw
    metrics = fp.evaluate(prior, fresh, batch_size=256)
    assert metrics["top1"] >= 3 * (1 / 40), metrics


def test_reach_prior_end_to_end(tiny_reach_run):
    """End to end on Meta-World reach-v3: a Gaussian prior whose std respects the floor."""
    summary = tiny_reach_run["summary"]
    assert summary["final_train_loss"] < summary["first_train_loss"], summary
    prior = load_prior(tiny_reach_run["prior"])
    cfg = prior.config
    assert cfg["action_space"] == {"type": "continuous", "dim": 4} and cfg["tasks"] == ["reach-v3"]
    assert cfg["obs_dim"] == cfg["state_dim"] == 39 and len(cfg["obs_mean"]) == 39
    demos = np.load(tiny_reach_run["demos"])
    obs = torch.from_numpy(demos["observations"][:8])
    with torch.inference_mode():
        mean, std = prior(obs, demos["instructions"][:8].tolist())
        dist = prior.distribution(obs, demos["instructions"][:8].tolist())
    assert mean.shape == std.shape == (8, 4)
    # the distribution PPO reads: a diagonal Gaussian with forward's mean and std, log-probs summed over the 4 dims
    assert isinstance(dist, torch.distributions.Independent) and dist.batch_shape == (8,) and dist.event_shape == (4,)
    assert torch.equal(dist.mean, mean) and torch.equal(dist.stddev, std)
    assert torch.isfinite(mean).all() and (std >= cfg["std_floor"]).all()
    assert np.isfinite(summary["eval_mse"]) and np.isfinite(summary["eval_nll"])


def test_forward_contract(tiny_clevr_prior):
    prior = load_prior(tiny_clevr_prior)
    assert not prior.training and prior.config["state_dim"] == 10 and prior.config["obs_dim"] == 24
    rng = np.random.default_rng(0)
    obs = torch.tensor(rng.uniform(-0.4, 0.4, (5, 24)), dtype=torch.float32)
    instr = ["Is the red sphere left of the blue sphere?"] * 4 + ["Push the green ball in front of the cyan ball"]
    with torch.inference_mode():
        logits = prior(obs, instr)
        assert logits.shape == (5, 40) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
        dist = prior.distribution(obs, instr)  # the distribution PPO reads: a Categorical with forward's logits
        assert isinstance(dist, torch.distributions.Categorical) and dist.batch_shape == (5,)
        assert torch.equal(dist.logits, torch.distributions.Categorical(logits=logits).logits)
        goal_changed = obs.clone()
        goal_changed[:, 10:] = 7.0  # dims past state_dim are not the prior's business
        assert torch.equal(prior(goal_changed, instr), logits)
        assert torch.equal(prior(obs.numpy(), instr), logits)  # numpy in, same answer
        moved = obs.clone()
        moved[:, 0] += 0.3
        assert not torch.allclose(prior(moved, instr), logits)  # the state matters
        other = prior(obs, ["Is the purple sphere behind the green sphere?"] * 5)
        assert not torch.allclose(other, logits)  # and the instruction matters
        assert torch.allclose(prior(obs[:1], instr[:1]), logits[:1], atol=1e-5)  # no batch/padding effect
        with pytest.raises(ValueError, match="observations"):
            prior(obs[:, :5], instr)
        with pytest.raises(ValueError, match="instructions"):
            prior(obs, instr[:2])


def count_llm_calls(prior) -> list:
    """A list that grows by the batch size of every forward of the prior's LLM."""
    calls = []
    prior.llm.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(len(kwargs["inputs_embeds"])), with_kwargs=True
    )
    return calls


def test_fused_prior_reads_each_instruction_once(tiny_clevr_prior):
    """The default encoding (fused): the LLM reads the instructions, not the states, so at inference it runs once per
    distinct instruction, ever; the cached answers equal the uncached ones, and train() forgets the cache."""
    prior = load_prior(tiny_clevr_prior)
    assert prior.config["state_encoding"] == "fused" and prior.config["prompt_template"] == "{instruction}"
    calls = count_llm_calls(prior)
    demos = np.load(os.path.join(os.path.dirname(tiny_clevr_prior), "demos.npz"))
    obs, instr = torch.from_numpy(demos["observations"][:64]), demos["instructions"][:64].tolist()
    with torch.inference_mode():
        cached = prior(obs, instr)
        assert calls == [len(set(instr))]  # one batch of the distinct instructions
        assert torch.equal(prior(obs.flip(0), instr[::-1]), cached.flip(0)) and len(calls) == 1  # nothing new to read
    prior.llm.requires_grad_(True)  # as in stage 1 with LoRA: no cache, the LLM runs on the distinct instructions
    with torch.enable_grad():
        torch.testing.assert_close(prior(obs, instr), cached, rtol=1e-5, atol=1e-5)
    assert calls[1:] == [len(set(instr))]
    prior.train()
    prior.eval()
    with torch.inference_mode():
        prior(obs[:1], instr[:1])
    assert calls[2:] == [1]  # train() emptied the cache


def test_frozen_llm_prior(tiny_clevr_run, tmp_path, monkeypatch):
    """--lora-rank 0: no adapter, the LLM's weights untouched (only the fusion and head train), its token states
    computed once per instruction for the whole of training; saved without an adapter and reloaded exactly."""
    monkeypatch.chdir(tmp_path)
    args = fp.Args(
        llm="tiny-random",
        demos_path=tiny_clevr_run["demos"],
        lora_rank=0,
        epochs=3,
        patience=0,
        output_dir=str(tmp_path / "p"),
    )
    fresh, tokenizer = fp.load_llm("tiny-random", torch.float32)
    forwards = []  # the LLM's calls during training: one per batch of instructions it has not read yet

    def load_llm(name, dtype):
        llm, tok = load_llm_as_is(name, dtype)
        llm.register_forward_hook(lambda module, inputs, output: forwards.append(1))
        return llm, tok

    load_llm_as_is = fp.load_llm
    monkeypatch.setattr(fp, "load_llm", load_llm)
    trained, summary = fp.train(args)
    three_epochs = len(forwards)
    args.epochs, args.output_dir = 6, str(tmp_path / "p6")
    forwards.clear()
    fp.train(args)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert len(forwards) == three_epochs, "a frozen LLM reads each instruction once, whatever the number of epochs"
    assert fp.fingerprint(tokenizer, trained.llm) == fp.fingerprint(tokenizer, fresh)
    assert summary["trainable_params"] == sum(
        p.numel() for n, p in trained.named_parameters() if not n.startswith("llm")
    )
    assert not (tmp_path / "p" / "adapter").exists()
    reloaded = load_prior(str(tmp_path / "p"))
    demos = np.load(tiny_clevr_run["demos"])
    obs, instr = torch.from_numpy(demos["observations"][:32]), demos["instructions"][:32].tolist()
    with torch.inference_mode():
        assert torch.equal(reloaded(obs, instr), trained(obs, instr))


def test_early_stopping_keeps_the_best_epoch(tiny_clevr_run, tmp_path):
    """The saved prior is the epoch with the lowest held-out NLL, not the last one: its NLL on the held-out episodes,
    recomputed here, is the history's minimum."""
    summary = tiny_clevr_run["summary"]
    nlls = [h["eval"]["nll"] for h in summary["history"]]
    assert summary["best_epoch"] == int(np.argmin(nlls)) and summary["epochs_run"] == len(nlls) - 1
    demos = fp.load_demos(tiny_clevr_run["demos"], fp.resolve_env("CLEVR-Robot-v0"))
    _, held = fp.split_by_episode(demos, 0.1, seed=1)
    again = fp.evaluate(load_prior(tiny_clevr_run["prior"], merge_lora=False), held, batch_size=64)
    assert abs(again["nll"] - min(nlls)) < 1e-5


def test_bf16_base_model(tiny_clevr_prior):
    """The CUDA configuration (bf16 base, fp32 LoRA/projection/head), run on CPU: same answers up to bf16 rounding."""
    fp32 = load_prior(tiny_clevr_prior, merge_lora=False)
    config = dict(fp32.config)
    bf16 = fp.build_prior(config, "cpu", adapter_dir=os.path.join(tiny_clevr_prior, "adapter"), dtype=torch.bfloat16)
    bf16.load_state_dict({k: v for k, v in fp32.state_dict().items() if not k.startswith("llm.")}, strict=False)
    assert bf16.llm.get_input_embeddings().weight.dtype == torch.bfloat16 and bf16.head.weight.dtype == torch.float32
    demos = np.load(os.path.join(os.path.dirname(tiny_clevr_prior), "demos.npz"))
    obs, instr = torch.from_numpy(demos["observations"][:16]), demos["instructions"][:16].tolist()
    with torch.inference_mode():
        want, got = fp32(obs, instr), bf16.eval()(obs, instr)
    assert got.dtype == torch.float32
    assert (got.softmax(-1) - want.softmax(-1)).abs().max() < 0.02


def test_saved_prior_reloads_identically_and_moves(tiny_clevr_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "p"
    args = fp.Args(
        llm="tiny-random",
        demos_path=tiny_clevr_run["demos"],
        epochs=1,
        batch_size=64,
        output_dir=str(out),
    )
    trained, summary = fp.train(args)
    assert summary["output_dir"] == str(out)
    assert all(os.stat(f).st_mode & 0o044 == 0o044 for f in out.rglob("*") if f.is_file())  # readable by others
    demos = np.load(tiny_clevr_run["demos"])
    obs, instr = torch.from_numpy(demos["observations"][:32]), demos["instructions"][:32].tolist()
    with torch.inference_mode():
        want = trained(obs, instr)
        assert torch.equal(load_prior(str(out), merge_lora=False)(obs, instr), want)
        torch.testing.assert_close(load_prior(str(out))(obs, instr), want, rtol=1e-5, atol=1e-5)  # LoRA merged
        moved = tmp_path / "elsewhere" / "my_prior"
        shutil.move(str(out), moved)
        torch.testing.assert_close(load_prior(str(moved))(obs, instr), want, rtol=1e-5, atol=1e-5)
    cfg = load_prior(str(moved)).config
    for key in (
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
        "lora",
        "fingerprint",
        "file_sha256",
    ):
        assert key in cfg, key
    assert cfg["lora"]["target_modules"] == "all-linear" and cfg["pooling"] == "last"


def test_state_in_the_prompt_round_trip(tiny_clevr_run, tmp_path, monkeypatch):
    """--state-encoding embed (k state tokens in the LLM's input, the paper's reading): trains and reloads exactly."""
    monkeypatch.chdir(tmp_path)
    demos = fp.load_demos(tiny_clevr_run["demos"], fp.resolve_env("CLEVR-Robot-v0"))
    small = fp.select_steps(demos, demos["episode_ids"] < 20)
    fp.save_demos(small, str(tmp_path / "small.npz"))
    args = fp.Args(
        llm="tiny-random",
        demos_path=str(tmp_path / "small.npz"),
        state_encoding="embed",
        epochs=2,
        patience=0,
        batch_size=8,
        gradient_accumulation_steps=2,
        lr_schedule="linear",
        output_dir=str(tmp_path / "p"),
    )
    trained, summary = fp.train(args)
    assert trained.state_proj.out_features == 4 * 64 and trained.config["num_state_tokens"] == 4
    assert trained.config["prompt_template"] == fp.EMBED_PROMPT_TEMPLATE
    batches = -(-summary["train_samples"] // 8)
    assert summary["optimizer_steps"] == 2 * -(-batches // 2)  # one optimizer step per 2 micro-batches
    obs, instr = torch.from_numpy(small["observations"][:8]), small["instructions"][:8].tolist()
    with torch.inference_mode():
        assert torch.equal(load_prior(str(tmp_path / "p"), merge_lora=False)(obs, instr), trained(obs, instr))


def test_more_evaluation_sets(tiny_clevr_run, tmp_path, monkeypatch):
    """train(args, eval_sets): more demo sets (here: expert episodes of held-out instructions) evaluated before
    training and after every epoch, reported beside the held-out episodes; early stopping still reads "eval"."""
    monkeypatch.chdir(tmp_path)
    env = fp.resolve_env("CLEVR-Robot-v0")
    demos = fp.load_demos(tiny_clevr_run["demos"], env)
    small = fp.select_steps(demos, demos["episode_ids"] < 10)
    fp.save_demos(small, str(tmp_path / "small.npz"))
    recipe = fp.demo_recipe(fp.Args(num_episodes=6, demo_noise=0.0, goal_split="heldout", seed=7), env)
    heldout = fp.collect_expert_demos(env, recipe)
    assert not set(heldout["instructions"].tolist()) & set(demos["instructions"].tolist())  # unseen instructions
    args = fp.Args(llm="tiny-random", demos_path=str(tmp_path / "small.npz"), epochs=2, output_dir=str(tmp_path / "p"))
    prior, summary = fp.train(args, eval_sets={"heldout_goals": heldout})
    assert len(summary["history"]) == 3 and all(set(h) == {"eval", "heldout_goals"} for h in summary["history"])
    best = summary["history"][summary["best_epoch"]]["heldout_goals"]
    assert summary["heldout_goals_top1"] == best["top1"] == fp.evaluate(prior, heldout)["top1"]


def test_minilm_encoder_prior(tiny_clevr_run, tmp_path, monkeypatch):
    """The offline pretrained default (BERT encoder: mean pooling, [CLS]/[SEP]) and its seeded random twin."""
    monkeypatch.chdir(tmp_path)
    demos = fp.load_demos(tiny_clevr_run["demos"], fp.resolve_env("CLEVR-Robot-v0"))
    small = fp.select_steps(demos, demos["episode_ids"] < 5)
    fp.save_demos(small, str(tmp_path / "small.npz"))
    args = fp.Args(
        demos_path=str(tmp_path / "small.npz"),
        epochs=1,
        lora_rank=2,
        output_dir=str(tmp_path / "p"),
    )
    assert args.llm == "all-MiniLM-L6-v2"  # the default
    trained, summary = fp.train(args)
    assert trained.config["pooling"] == "mean" and trained.llm.config.hidden_size == 384
    assert summary["trainable_params"] < 0.02 * sum(p.numel() for p in trained.parameters())  # LoRA, fusion, head
    obs, instr = torch.from_numpy(small["observations"][:4]), small["instructions"][:4].tolist()
    with torch.inference_mode():
        assert torch.equal(load_prior(str(tmp_path / "p"), merge_lora=False)(obs, instr), trained(obs, instr))
    pretrained, tokenizer = fp.load_llm("all-MiniLM-L6-v2", torch.float32)
    assert tokenizer("a")["input_ids"] == [101, 1037, 102]  # [CLS] a [SEP]: the uncased BERT vocabulary
    twin1, _ = fp.load_llm("all-MiniLM-L6-v2-random", torch.float32)
    twin2, _ = fp.load_llm("all-MiniLM-L6-v2-random", torch.float32)
    for key in (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    ):
        assert getattr(twin1.config, key) == getattr(pretrained.config, key), key  # same architecture
    assert fp.fingerprint(tokenizer, twin1) == fp.fingerprint(tokenizer, twin2) != fp.fingerprint(tokenizer, pretrained)


def test_load_prior_errors_and_atomic_save(tiny_clevr_prior, tmp_path, monkeypatch):
    with pytest.raises(PriorError, match="no prior at"):
        load_prior(str(tmp_path / "nothing"))
    broken = tmp_path / "broken"
    shutil.copytree(tiny_clevr_prior, broken)
    (broken / "heads.safetensors").unlink()
    with pytest.raises(PriorError, match=r"heads\.safetensors .*incomplete prior directory"):
        load_prior(str(broken))
    # saving over an existing prior replaces it whole; an interrupted save leaves the old one intact
    prior = load_prior(tiny_clevr_prior, merge_lora=False)
    target = tmp_path / "target"
    fp.save_prior(prior, str(target))
    fp.save_prior(prior, str(target))
    assert sorted(os.listdir(tmp_path)) == ["broken", "target"]  # no temp or old directories left

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(fp, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        fp.save_prior(prior, str(tmp_path / "target"))
    with pytest.raises(KeyboardInterrupt):
        fp.save_prior(prior, str(tmp_path / "fresh"))
    assert not (tmp_path / "fresh").exists()
    load_prior(str(target))  # still complete


def test_demo_file_validation(tmp_path):
    clevr, reach = fp.resolve_env("CLEVR-Robot-v0"), fp.resolve_env("reach-v3")
    good = synthetic_demos()
    fp.save_demos(good, str(tmp_path / "good.npz"))
    loaded = fp.load_demos(str(tmp_path / "good.npz"), clevr)
    assert loaded["actions"].dtype == np.int64 and loaded["observations"].shape == (30, 24)
    fp.save_demos(synthetic_demos("reach-v3"), str(tmp_path / "reach.npz"))
    assert fp.load_demos(str(tmp_path / "reach.npz"), reach)["actions"].shape == (30, 4)

    def refused(demos, env, match):
        path = str(tmp_path / "bad.npz")
        fp.save_demos(demos, path)
        with pytest.raises(PriorError, match=match):
            fp.load_demos(path, env)

    refused({k: v for k, v in good.items() if k != "instructions"}, clevr, r"lacks the key\(s\) \['instructions'\]")
    nan = dict(good, observations=good["observations"].copy())
    nan["observations"][3, 2] = np.nan
    refused(nan, clevr, "observations contain NaN")
    refused(dict(good, actions=good["actions"].astype(np.float32)), clevr, r"Discrete\(40\)")
    refused(dict(good, actions=good["actions"] + 40), clevr, r"must lie in \[0, 40\)")
    refused(synthetic_demos("reach-v3"), clevr, "collected on env 'reach-v3' but --env-id is 'CLEVR-Robot-v0'")
    refused(good, reach, "collected on env 'CLEVR-Robot-v0'")
    refused(dict(synthetic_demos("reach-v3"), actions=np.zeros((30, 2), np.float32)), reach, "continuous actions of 4")
    refused(
        dict(good, observations=good["observations"][:, :20]), clevr, "20 dims but CLEVR-Robot-v0 observations have 24"
    )
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(PriorError, match="not a readable .npz"):
        fp.load_demos(str(tmp_path / "junk.npz"), clevr)
    with pytest.raises(PriorError, match="no such file"):
        fp.load_demos(str(tmp_path / "missing.npz"), clevr)


def test_split_by_episode():
    demos = synthetic_demos(episodes=10, steps=3)
    train, held = fp.split_by_episode(demos, 0.2, seed=0)
    assert len(held["actions"]) == 6 and len(train["actions"]) == 24
    assert not set(train["episode_ids"]) & set(held["episode_ids"])
    train1, held1 = fp.split_by_episode(synthetic_demos(episodes=2, steps=3), 0.01, seed=0)
    assert len(held1["actions"]) == 3 and len(train1["actions"]) == 3  # at least one episode each


def test_cli_errors_in_process(tmp_path, capsys, monkeypatch):
    fp.save_demos(synthetic_demos(), str(tmp_path / "good.npz"))
    fp.save_demos({k: v for k, v in synthetic_demos().items() if k != "episode_ids"}, str(tmp_path / "bad.npz"))
    cases = [
        (["--demos-path", str(tmp_path / "bad.npz")], "lacks the key(s) ['episode_ids']"),
        (["--env-id", "reach-v9"], "unknown --env-id 'reach-v9'"),
        (["--env-id", "clevr-robot-v0"], "Did you mean 'CLEVR-Robot-v0'?"),
        (["--demos-path", str(tmp_path / "good.npz"), "--llm", "Qwen2.5-05B"], "Did you mean 'Qwen2.5-0.5B'?"),
        (["--demos-path", str(tmp_path / "good.npz"), "--prompt-template", "no placeholders"], "exactly one {instr"),
        (
            [
                "--demos-path",
                str(tmp_path / "good.npz"),
                "--state-encoding",
                "embed",
                "--prompt-template",
                "{instruction}",
            ],
            "and one {state} with --state-encoding embed",
        ),
        (["--demos-path", str(tmp_path / "good.npz"), "--lora-rank", "-1"], "--lora-rank must be >= 0"),
        (["--env-id", "reach-v3", "--goal-split", "heldout"], "--goal-split applies to CLEVR-Robot only"),
    ]
    for argv, message in cases:
        code, err = run_main(argv, tmp_path, capsys, monkeypatch)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    # a Hub model that is not cached, offline: a fast, actionable error naming the offline choices
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, err = run_main(
        ["--demos-path", str(tmp_path / "good.npz"), "--llm", "Qwen2.5-0.5B"], tmp_path, capsys, monkeypatch
    )
    assert code == 2 and "'Qwen/Qwen2.5-0.5B' is not in the local Hugging Face cache" in err
    assert "tiny-random" in err and "all-MiniLM-L6-v2" in err


def test_llm_from_local_directory_and_hub_cache(tmp_path, monkeypatch):
    """--llm as a local directory, and a Hub id already in the local Hugging Face cache (no network needed)."""
    import huggingface_hub

    model, tokenizer = fp.load_llm("tiny-random", torch.float32)
    local = tmp_path / "my-model"
    model.save_pretrained(local)
    tokenizer.save_pretrained(local)
    loaded, tok = fp.load_llm(str(local), torch.float32)
    assert fp.fingerprint(tok, loaded) == fp.fingerprint(tokenizer, model)
    twin, _ = fp.load_llm(f"{local}-random", torch.float32)  # the twin of a local directory: drawn, not loaded
    assert twin.config.hidden_size == 64 and fp.fingerprint(tok, twin) == fp.fingerprint(tokenizer, model)
    repo = tmp_path / "hub" / "models--someone--tiny-qwen"
    shutil.copytree(local, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cached, _ = fp.load_llm("someone/tiny-qwen", torch.float32)
    assert fp.fingerprint(tokenizer, cached) == fp.fingerprint(tokenizer, model)
    with pytest.raises(PriorError, match="cannot load a model from this directory"):
        fp.load_llm(str(tmp_path / "hub"), torch.float32)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--llm", "no-such-model"], "unknown --llm 'no-such-model'"),
        pytest.param(["--env-id", "pick-plaec-v3"], "Did you mean 'pick-place-v3'?", marks=pytest.mark.slow),
        pytest.param(["--demos-path", "DEMOS"], "lacks the key(s) ['actions']", marks=pytest.mark.slow),
    ],
)
def test_cli_errors_subprocess(argv, message, tmp_path):
    """The real command line: exit code != 0, the message, and no traceback (test_cli_errors_in_process runs
    the same `main` in-process for every kind of error; each subprocess costs seconds of imports)."""
    bad = {k: v for k, v in synthetic_demos().items() if k != "actions"}
    fp.save_demos(bad, str(tmp_path / "bad.npz"))
    argv = [str(tmp_path / "bad.npz") if a == "DEMOS" else a for a in argv]
    if argv[0] == "--llm":  # the llm is resolved after the demos: give it good ones
        fp.save_demos(synthetic_demos(), str(tmp_path / "good.npz"))
        argv += ["--demos-path", str(tmp_path / "good.npz")]
    proc = run_cli([*argv, "--output-dir", str(tmp_path / "p")], cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "p").exists()


def test_torchrun_two_processes(tiny_clevr_run, tmp_path):
    """torchrun --nproc_per_node 2 on CPU (gloo): trains with a DistributedSampler and rank 0 saves one prior,
    which loads here (so tiny-random rebuilt identically in another process: fingerprints are checked)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    out = tmp_path / "ddp_prior"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        SCRIPT,
        "--llm",
        "tiny-random",
        "--demos-path",
        tiny_clevr_run["demos"],
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--output-dir",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout and proc.stdout.count("saved the prior to") == 1
    assert sorted(os.listdir(tmp_path)) == ["ddp_prior", "runs"]  # one prior, no temp directories
    assert len(os.listdir(tmp_path / "runs")) == 1  # only rank 0 writes
    losses = [float(line.split("train_loss=")[1].split()[0]) for line in proc.stdout.splitlines() if "train_loss=" in line]
    assert len(losses) == 2 and losses[1] < losses[0]  # one line per epoch, from rank 0 only
    assert load_prior(str(out)).config["env_id"] == "CLEVR-Robot-v0"


def test_epoch_batches_group_instructions():
    """Every sample once per epoch, in batches made of runs of --instruction-group samples sharing an instruction (so a
    batch of 64 holds about 16 distinct instructions); a new order each epoch; under DDP disjoint shards of equal
    length."""
    rng = np.random.default_rng(0)
    instructions = np.array([f"instruction {i}" for i in rng.integers(0, 50, size=1000)])
    args = fp.Args(batch_size=64, instruction_group=4)
    batches = fp.epoch_batches(instructions, args, epoch=1, rank=0, world=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) == 64 for b in batches[:-1])
    assert np.mean([len(set(instructions[b])) for b in batches]) <= 17  # 16 groups (an instruction's last may be short)
    assert not np.array_equal(np.concatenate(fp.epoch_batches(instructions, args, 2, 0, 1)), np.concatenate(batches))
    plain = fp.epoch_batches(instructions, fp.Args(batch_size=64, instruction_group=1), 1, 0, 1)
    assert np.mean([len(set(instructions[b])) for b in plain]) > 30  # plain shuffling: ~36 of the 50 per batch
    shards = [fp.epoch_batches(instructions, args, 1, rank, 2) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(batches) // 2
    assert not set(np.concatenate(shards[0]).tolist()) & set(np.concatenate(shards[1]).tolist())


# ------------------------------------------------------------------------------------------------------------
# The prior's contract: what forward does to the state, the Gaussian's floor, the caller's random streams
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoding", ["fused", "embed"])
def test_the_prior_reads_the_state_normalised_by_the_demos_statistics(encoding, tiny_clevr_run, tmp_path, monkeypatch):
    """forward reads (state - mean) / std of the training states, clipped to +-OBS_CLIP, with dims constant in the
    demos read as 0: moving the observations and the saved statistics together changes nothing; moving one does."""
    monkeypatch.chdir(tmp_path)
    prior = load_prior(tiny_clevr_run["prior"]) if encoding == "fused" else fp.train(fp.Args(
        llm="tiny-random", demos_path=tiny_clevr_run["demos"], state_encoding="embed", epochs=1,
        output_dir=str(tmp_path / "p")))[0]  # fmt: skip
    train, held = fp.split_by_episode(fp.load_demos(tiny_clevr_run["demos"], fp.resolve_env("CLEVR-Robot-v0")), 0.1, 1)
    states = train["observations"][:, :10].astype(np.float64)
    assert np.allclose(prior.config["obs_mean"], states.mean(0)) and np.allclose(prior.config["obs_std"], states.std(0))
    obs = torch.from_numpy(held["observations"][:16])
    instr = held["instructions"][:16].tolist()
    shift, scale = torch.linspace(-3, 3, 10), torch.linspace(0.5, 2, 10)
    with torch.inference_mode():
        want = prior(obs, instr)
        moved = obs.clone()
        moved[:, :10] = (obs[:, :10] - prior.obs_mean) * scale + prior.obs_mean + shift
        assert not torch.allclose(prior(moved, instr), want, atol=1e-3)  # the state matters
        prior.obs_mean += shift
        prior.obs_std *= scale
        torch.testing.assert_close(prior(moved, instr), want, rtol=1e-4, atol=1e-4)  # ... only as normalised
        far = moved.clone()
        far[:, 0] = prior.obs_mean[0] + 1e3 * prior.obs_std[0]
        edge = moved.clone()
        edge[:, 0] = prior.obs_mean[0] + fp.OBS_CLIP * prior.obs_std[0]
        torch.testing.assert_close(prior(far, instr), prior(edge, instr))  # clipped to +-OBS_CLIP
        prior.obs_informative[0] = 0.0  # a dim constant in the demos reads as 0, wherever it is
        torch.testing.assert_close(prior(far, instr), prior(moved, instr))


def test_the_gaussian_prior_never_falls_below_its_std_floor(tiny_reach_prior):
    """std = std_floor + softplus(raw): a head that asks for no spread at all still gets std_floor (and more spread
    adds to it)."""
    prior = load_prior(tiny_reach_prior)
    floor = prior.config["std_floor"]
    obs = torch.zeros(3, 39)
    with torch.inference_mode():
        prior.head.weight.zero_()
        prior.head.bias[4:] = -100.0  # the raw std
        _, std = prior(obs, ["reach the goal"] * 3)
        assert torch.allclose(std, torch.full_like(std, floor))
        prior.head.bias[4:] = 0.0
        _, std = prior(obs, ["reach the goal"] * 3)
        assert torch.allclose(std, torch.full_like(std, floor + np.log(2.0)))


def test_loading_a_prior_leaves_the_callers_random_streams_alone(tiny_clevr_prior, tmp_path, monkeypatch):
    """A PPO run loads (or makes) its prior between seeding and its first rollout: its random numbers must be those of
    vanilla PPO with the same seed. Checked for load_prior and for load_guidance_prior making a missing prior."""
    import random

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    def seeded():
        random.seed(5)
        np.random.seed(5)
        torch.manual_seed(5)

    seeded()
    want = draws()
    seeded()
    load_prior(tiny_clevr_prior)
    assert draws() == want
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fp, "Args", functools.partial(fp.Args, num_episodes=20, epochs=1))  # stage 1, small
    envs = SimpleNamespace(single_action_space=gym.spaces.Discrete(40),
                           single_observation_space=gym.spaces.Box(-1, 1, (24,)))  # fmt: skip
    seeded()
    fp.load_guidance_prior("CLEVR-Robot-v0", "tiny-random", None, envs)  # stage 1 seeds everything: restored after
    assert draws() == want and (tmp_path / "priors" / "CLEVR-Robot-v0__tiny-random").is_dir()
