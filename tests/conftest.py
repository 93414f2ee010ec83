"""Session fixtures: small tiny-random priors fine-tuned on real expert demos, built once per test session.

    tiny_clevr_prior  path of a CLEVR-Robot-v0 prior (Categorical over 40 actions)
    tiny_reach_prior  path of a reach-v3 prior (Gaussian over 4 action dims)
    tiny_clevr_run / tiny_reach_run: dicts with "prior", "demos" (the saved .npz) and "summary" (train()'s)
Load them with `finetune_prior.load_prior(path)`. They are real fine-tuning runs of finetune_prior.py
(tiny budgets), so their outputs are above chance but far from good policies.
"""

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # the scripts and envs/ live at the repository root
    sys.path.insert(0, str(REPO))


@contextlib.contextmanager
def _quiet_run(workdir: Path):
    """One torch thread (tests share 2 cores) and runs/ written under `workdir`; restored afterwards."""
    import envs.clevr_expert  # imported before the chdir (imports envs.clevr_robot, envs.clevr_language)
    import envs.metaworld  # noqa: F401

    threads, cwd = torch.get_num_threads(), os.getcwd()
    torch.set_num_threads(1)
    os.chdir(workdir)
    try:
        yield
    finally:
        os.chdir(cwd)
        torch.set_num_threads(threads)


def _train(workdir: Path, **kwargs) -> dict:
    import finetune_prior

    args = finetune_prior.Args(
        llm="tiny-random",
        output_dir=str(workdir / "prior"),
        save_demos_path=str(workdir / "demos.npz"),
        **kwargs,
    )
    with _quiet_run(workdir):
        _, summary = finetune_prior.train(args)
    return {"prior": str(workdir / "prior"), "demos": str(workdir / "demos.npz"), "summary": summary}


@pytest.fixture(scope="session")
def tiny_clevr_run(tmp_path_factory) -> dict:
    """CLEVR-Robot-v0: 300 expert episodes (~1,100 steps), at most 16 epochs of tiny-random (~10 s on 2 cores)."""
    return _train(
        tmp_path_factory.mktemp("tiny_clevr"),
        env_id="CLEVR-Robot-v0",
        num_episodes=300,
        epochs=16,
        batch_size=32,
    )


@pytest.fixture(scope="session")
def tiny_reach_run(tmp_path_factory) -> dict:
    """reach-v3: 4 expert episodes of at most 40 steps, 4 epochs of tiny-random (a few seconds)."""
    return _train(
        tmp_path_factory.mktemp("tiny_reach"),
        env_id="reach-v3",
        num_episodes=4,
        max_episode_steps=40,
        epochs=4,
        batch_size=16,
        learning_rate=3e-3,
        eval_fraction=0.25,
    )


@pytest.fixture(scope="session")
def tiny_clevr_prior(tiny_clevr_run) -> str:
    return tiny_clevr_run["prior"]


@pytest.fixture(scope="session")
def tiny_reach_prior(tiny_reach_run) -> str:
    return tiny_reach_run["prior"]
