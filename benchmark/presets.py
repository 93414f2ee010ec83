"""The budgets of the benchmark (benchmark/table.py --preset): rows, environments, and one Preset per named budget.

A Preset holds everything that defines the numbers of a table; `table.py` turns it into the scripts' command lines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from envs.metaworld import DEMONSTRATED, MT10

ROWS = ("ppo", "prior", "prior-sampled", "lago", "lago-random", "lago-adaptive")
PRIOR_TWIN_ROW = "prior-sampled-random"  # the random twin's prior alone, sampled: with --rows (the thesis protocol)
ENVS = ("clevr", "metaworld")
CLEVR_ENV_ID = "CLEVR-Robot-v0"
PRETRAINED_LLM = "all-MiniLM-L6-v2"
# CleanRL's PPO settings for the presets that ran with them (the discrete script's defaults learn CLEVR-Robot better)
CLEANRL_PPO = ("--learning-rate", "2.5e-4", "--update-epochs", "4", "--prior-fraction", "1")
# stage 1 as the published cpu, thesis and gpu tables ran it (before the fused default): state tokens in the LLM, a fixed
# number of epochs, the executed (noisy) actions as labels, plain shuffling
EMBED_STAGE1 = ("--state-encoding", "embed", "--patience", "0", "--demo-labels", "executed", "--instruction-group", "1")
OFFLINE_PRETRAINED = (PRETRAINED_LLM, "all-mpnet-base-v2", "SmolLM2-135M")  # from PyPI, each with a "-random" twin


@dataclass(frozen=True)
class Preset:
    """Everything that defines the numbers of a table (the budget); the CLI can override some fields."""

    seeds: tuple[int, ...]
    """seeds of the RL runs (and of the greedy prior's evaluation episodes); the priors use seed 1"""
    llm: str
    """the pretrained language model of the `prior`, `lago` and `lago-adaptive` rows"""
    random_llm: str
    """its random-init twin (the `lago-random` row)"""
    clevr_timesteps: int
    """env steps of every CLEVR-Robot RL run"""
    metaworld_timesteps: int
    """env steps of every Meta-World RL run (one run per task)"""
    metaworld_tasks: tuple[str, ...]
    """Meta-World tasks: one multi-task prior over all of them, one RL run per task"""
    metaworld_max_episode_steps: int
    """Meta-World episode length (its own is 500; v1 used 150)"""
    clevr_demo_episodes: int
    """CLEVR demonstrations for stage 1: episodes of the noisy scripted expert on train goals only"""
    clevr_demo_noise: float
    """probability that the CLEVR expert takes a random action instead"""
    metaworld_demo_episodes: int
    """Meta-World demonstrations for stage 1, per task"""
    metaworld_demo_noise: float
    """std of the Gaussian noise added to the Meta-World scripted expert's actions"""
    clevr_finetune_args: tuple[str, ...]
    """extra flags for finetune_prior.py on CLEVR (same for every language model)"""
    metaworld_finetune_args: tuple[str, ...]
    """extra flags for finetune_prior.py on Meta-World (same for every language model)"""
    clevr_ppo_args: tuple[str, ...]
    """PPO flags shared by every CLEVR row (num envs, rollout length, ...)"""
    metaworld_ppo_args: tuple[str, ...]
    """PPO flags shared by every Meta-World row"""
    clevr_eval_episodes: int
    """evaluation episodes of each trained agent (benchmark/evaluate.py) on each level, and of the prior alone"""
    metaworld_eval_episodes: int
    """evaluation episodes of each trained agent on its task, and of the prior alone"""
    clevr_kl_coef: float | None = None
    """beta of the CLEVR LaGO rows (the adaptive row's starting value); None = the script's default"""
    metaworld_kl_coef: float | None = None
    """beta of the Meta-World LaGO rows; None = the script's default"""
    clevr_kl_target: float | None = None
    """KL the adaptive row holds on CLEVR; None = the script's default"""
    metaworld_kl_target: float | None = None
    """KL the adaptive row holds on Meta-World; None = the script's default"""
    device_args: tuple[str, ...] = ()
    """flags given to every script (e.g. the device)"""
    clevr_env_id: str = CLEVR_ENV_ID
    """the CLEVR-Robot id: CLEVR-Robot-v0, or CLEVR-Robot-KALM-v0 (KALM's success test; its own priors)"""
    clevr_goal_split: str = "train"
    """the CLEVR goals RL trains on: a level or a '+' mixture of levels (each episode draws its level)"""
    clevr_levels: tuple[str, ...] = ("train", "heldout")
    """the CLEVR levels every run (and the prior alone) is evaluated on, each separately ("compose" only if it is in
    clevr_goal_split: the agents read two goal slots only then)"""
    rows: tuple[str, ...] = ROWS
    """the rows run by default (--rows overrides)"""
    metaworld_kl_schedule: str = "constant"
    """beta's schedule of the Meta-World lago and lago-random rows (lago_ppo_continuous.py --kl-schedule)"""
    metaworld_demo_tasks: tuple[str, ...] = ()
    """Meta-World tasks of stage 1's demonstrations (empty: metaworld_tasks). When set, the results carry each task's
    instruction level (envs.metaworld.LEVELS) and the table shows the levels"""
    clevr_lago_args: tuple[str, ...] = ()
    """more lago_ppo_discrete.py flags for the guided CLEVR rows only (settings about the prior, e.g. its KL direction);
    settings that are not about the prior go to clevr_ppo_args, which every row gets"""


PRESETS: dict[str, Preset] = {
    # The whole table on a 2-core CPU within a few hours with --jobs 2 (docs/performance.md).
    # Tasks: easy / medium / hard of MT10 (reach, press, push an object), none solved by random actions.
    # 8 envs: the prior's batch is 8 (cheaper per sample on the CPU than at 4); rollout batches
    # as the scripts' defaults (CLEVR 512); Meta-World 1024 in 16 minibatches of 64 (CleanRL's size) so
    # that 30k steps still make ~29 PPO updates.
    "cpu": Preset(
        seeds=(1, 2, 3),
        llm=PRETRAINED_LLM,
        random_llm=f"{PRETRAINED_LLM}-random",
        clevr_timesteps=50_000,
        metaworld_timesteps=30_000,
        metaworld_tasks=("reach-v3", "button-press-topdown-v3", "push-v3"),
        metaworld_max_episode_steps=200,
        clevr_demo_episodes=1000,
        clevr_demo_noise=0.3,
        metaworld_demo_episodes=10,
        metaworld_demo_noise=0.3,
        clevr_finetune_args=("--epochs", "5", *EMBED_STAGE1),
        metaworld_finetune_args=("--epochs", "5", *EMBED_STAGE1),
        clevr_ppo_args=(
            "--num-envs",
            "8",
            "--num-steps",
            "64",
            *CLEANRL_PPO,
        ),
        metaworld_ppo_args=("--num-envs", "8", "--num-steps", "128", "--num-minibatches", "16"),
        clevr_eval_episodes=100,
        metaworld_eval_episodes=20,
    ),
    # The thesis protocol: RL on the mixture of the four instruction levels, so the prior guides where it
    # has no demonstrations (stage 1 sees train goals only); each level evaluated separately, and their mean.
    # PPO settings: those of the baseline that learns (benchmark/results/clevr_baseline).
    # CLEVR-Robot only; one prior per language model (seed 1), shared by the RL seeds.
    "thesis": Preset(
        seeds=(1, 2, 3),
        llm=PRETRAINED_LLM,
        random_llm=f"{PRETRAINED_LLM}-random",
        clevr_timesteps=200_000,
        metaworld_timesteps=30_000,
        metaworld_tasks=("reach-v3", "button-press-topdown-v3", "push-v3"),
        metaworld_max_episode_steps=200,
        clevr_demo_episodes=500,
        clevr_demo_noise=0.3,
        metaworld_demo_episodes=10,
        metaworld_demo_noise=0.3,
        clevr_finetune_args=("--epochs", "5", *EMBED_STAGE1),
        metaworld_finetune_args=("--epochs", "5", *EMBED_STAGE1),
        clevr_ppo_args=(
            *("--num-envs", "8", "--num-steps", "64", "--learning-rate", "1e-3", "--update-epochs", "8"),
            *("--prior-fraction", "1"),
        ),
        metaworld_ppo_args=("--num-envs", "8", "--num-steps", "128", "--num-minibatches", "16"),
        clevr_eval_episodes=200,
        metaworld_eval_episodes=20,
        clevr_goal_split="train+rephrase+heldout+compose",
        clevr_levels=("train", "heldout", "rephrase", "compose"),
        rows=(*ROWS, PRIOR_TWIN_ROW),
    ),
    # One seed, a few hundred steps: checks the pipeline end to end (tests/test_benchmark_harness.py).
    "smoke": Preset(
        seeds=(1,),
        llm=PRETRAINED_LLM,
        random_llm=f"{PRETRAINED_LLM}-random",
        clevr_timesteps=256,
        metaworld_timesteps=256,
        metaworld_tasks=("reach-v3",),
        metaworld_max_episode_steps=64,
        clevr_demo_episodes=20,
        clevr_demo_noise=0.3,
        metaworld_demo_episodes=2,
        metaworld_demo_noise=0.3,
        clevr_finetune_args=("--epochs", "1"),
        metaworld_finetune_args=("--epochs", "1"),
        clevr_ppo_args=(
            "--num-envs",
            "4",
            "--num-steps",
            "32",
            *CLEANRL_PPO,
        ),
        metaworld_ppo_args=("--num-envs", "2", "--num-steps", "64", "--num-minibatches", "4"),
        clevr_eval_episodes=2,
        metaworld_eval_episodes=2,
    ),
    # Full scale on one GPU (cannot run on the 2-core CPU machine): Qwen2.5-1.5B prior, MT10 at
    # Meta-World's own 500-step episodes, the scripts' default PPO settings, 5 seeds. No lago-random row: there is no
    # loadable random-init twin of Qwen2.5-1.5B (random_llm is kept for --rows with a --random-llm that exists).
    "gpu": Preset(
        seeds=(1, 2, 3, 4, 5),
        llm="Qwen2.5-1.5B",
        random_llm="Qwen2.5-1.5B-random",
        clevr_timesteps=500_000,
        metaworld_timesteps=500_000,
        metaworld_tasks=MT10,
        metaworld_max_episode_steps=500,
        clevr_demo_episodes=1000,
        clevr_demo_noise=0.3,
        metaworld_demo_episodes=20,
        metaworld_demo_noise=0.3,
        clevr_finetune_args=("--epochs", "10", *EMBED_STAGE1),
        metaworld_finetune_args=("--epochs", "10", *EMBED_STAGE1),
        clevr_ppo_args=(
            "--num-envs",
            "16",
            "--num-steps",
            "32",
            *CLEANRL_PPO,
        ),
        metaworld_ppo_args=("--num-envs", "16", "--num-steps", "128"),
        clevr_eval_episodes=100,
        metaworld_eval_episodes=50,
        rows=("ppo", "prior", "prior-sampled", "lago", "lago-adaptive"),
    ),
}

# Full scale without network: the thesis protocol at the gpu preset's budget with the offline models.
# MiniLM by default; mpnet with `--llm all-mpnet-base-v2` (its twin follows) into another --results-dir. Not run in
# full anywhere yet: docs/performance.md gives the expected wall time from the rates measured on an H100 machine.
PRESETS["offline"] = dataclasses.replace(
    PRESETS["thesis"],
    seeds=(1, 2, 3, 4, 5),
    clevr_timesteps=500_000,
    metaworld_timesteps=500_000,
    metaworld_tasks=MT10,
    metaworld_max_episode_steps=500,
    metaworld_demo_episodes=20,
    metaworld_finetune_args=("--epochs", "10", *EMBED_STAGE1),
    metaworld_ppo_args=("--num-envs", "16", "--num-steps", "128"),
    metaworld_eval_episodes=50,
)

# The thesis protocol at the paper's difficulty: KALM's success test and five levels, hard (three relations) among
# them, where PPO learns little (benchmark/README.md). Stage 1 with finetune_prior.py's defaults
# (2,000 noisy expert episodes, expert labels, early stopping) on the train goals of this env.
PRESETS["kalm"] = dataclasses.replace(
    PRESETS["thesis"],
    seeds=(1, 2, 3),
    clevr_env_id="CLEVR-Robot-KALM-v0",
    clevr_demo_episodes=2000,
    clevr_finetune_args=(),
    clevr_goal_split="train+heldout+rephrase+compose+hard",
    clevr_levels=("train", "heldout", "rephrase", "compose", "hard"),
)

# Meta-World instruction levels (after KALM): stage 1 on the 10 demonstrated tasks; RL and evaluation on four
# of them, the same four reworded, and their four unseen counterparts (wall variant, opposite skill); 100-step episodes
# as KALM's. Budget, beta and task set chosen by measurement (20,000 steps with a constant beta leaves LaGO far below its
# prior; 60,000 with beta decaying linearly puts it above): benchmark/README.md#meta-world-instruction-levels.
METAWORLD_LEVEL_TASKS = ("reach-v3", "push-v3", "window-open-v3", "faucet-open-v3")
PRESETS["metaworld-levels"] = dataclasses.replace(
    PRESETS["cpu"],
    metaworld_demo_tasks=DEMONSTRATED,
    metaworld_tasks=(
        *METAWORLD_LEVEL_TASKS,
        *(f"{task}:rephrase" for task in METAWORLD_LEVEL_TASKS),
        *("reach-wall-v3", "push-wall-v3", "window-close-v3", "faucet-close-v3"),
    ),
    metaworld_timesteps=60_000,
    metaworld_max_episode_steps=100,
    metaworld_demo_episodes=25,
    metaworld_demo_noise=0.3,
    metaworld_finetune_args=(),
    metaworld_kl_coef=1.0,  # measured against 0.1 (the script's default) and 10: benchmark/README.md
    metaworld_kl_schedule="linear",
    rows=("ppo", "prior", "prior-sampled", "lago", "lago-random", PRIOR_TWIN_ROW),
)
