"""What one PPO update computes, in both scripts, pinned against formulas written here (issue 28, item 1).

Each script runs in this process, unchanged (runpy, as `python lago_ppo_*.py`), with two spies:
- gymnasium's SyncVectorEnv.step, which records what the envs returned (rewards, terminations, truncations, final
  observations) and the value the critic gave each final observation at that moment;
- torch.nn.utils.clip_grad_norm_, which the script calls once per minibatch between loss.backward() and
  optimizer.step(): it reads the script's variables (the caller's frame), recomputes the loss on a copy of the agent
  as it is then (the parameters the gradients belong to) from this file's own formulas, and keeps both gradients.
The formulas are the textbook ones, written out: the clipped surrogate on normalised advantages (as a case split,
not a clamp), the clipped value loss, the entropy bonus, beta * KL(pi || prior) as explicit sums (Categorical) and
in closed form (diagonal Gaussians), GAE as a sum over each episode's future TD errors, and the time-limit
bootstrap r + gamma * V(final obs). The settings make every branch matter: a large learning rate and several
epochs push ratios out of [1 - eps, 1 + eps], short episodes truncate, ent_coef and kl_coef are nonzero.

LAGO_TEST_SCRIPTS_DIR=/some/dir runs these tests on copies of the two scripts there (a mutation check: a copy
with a one-line change to the update's math must fail them)."""

import copy
import math
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import script_runs
import torch
import finetune_prior as fp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SCRIPTS = Path(os.environ.get("LAGO_TEST_SCRIPTS_DIR", str(REPO)))
DISCRETE, CONTINUOUS = str(SCRIPTS / "lago_ppo_discrete.py"), str(SCRIPTS / "lago_ppo_continuous.py")


GAMMA, LAMBDA, CLIP, ENT, VF, BETA = 0.9, 0.8, 0.2, 0.05, 0.5, 0.5
COMMON = [
    "--gamma",
    str(GAMMA),
    "--gae-lambda",
    str(LAMBDA),
    "--clip-coef",
    str(CLIP),
    "--ent-coef",
    str(ENT),
    "--vf-coef",
    str(VF),
    "--kl-coef",
    str(BETA),
    "--llm",
    "tiny-random",
    "--num-envs",
    "2",
    "--num-minibatches",
    "4",
    "--update-epochs",
    "4",
]
# CLEVR-Robot: 6-step episodes (successes terminate, the others truncate), 2 rollouts of 2 x 32 steps
CLEVR = [
    *COMMON,
    "--max-episode-steps",
    "6",
    "--num-steps",
    "32",
    "--total-timesteps",
    "128",
    "--learning-rate",
    "0.02",
]
# reach-v3: 8-step episodes (all truncate), 2 rollouts of 2 x 24 steps
REACH = [*COMMON, "--max-episode-steps", "8", "--num-steps", "24", "--total-timesteps", "96", "--learning-rate", "0.02"]


# ------------------------------------------------------------------------------------------------------------
# The formulas, written out
# ------------------------------------------------------------------------------------------------------------
LOG_2PI = math.log(2 * math.pi)


def categorical_terms(agent, obs, actions, prior_logits, direction):
    """log pi(a|s), entropy and KL to the prior per state, for the discrete agent's actor (logits)."""
    logp = agent.actor(obs) - torch.logsumexp(agent.actor(obs), dim=-1, keepdim=True)
    logq = prior_logits - torch.logsumexp(prior_logits, dim=-1, keepdim=True)
    p, q = logp.exp(), logq.exp()
    logprob = logp[torch.arange(len(actions)), actions.long()]
    entropy = -(p * logp).sum(-1)
    kl = (p * (logp - logq)).sum(-1) if direction == "reverse" else (q * (logq - logp)).sum(-1)
    return logprob, entropy, kl


def gaussian_terms(agent, obs, actions, prior_mean, prior_std, direction):
    """The same for the continuous agent (a diagonal Gaussian): sums over the action dimensions."""
    mean = agent.actor_mean(obs)
    log_std = agent.actor_logstd.expand_as(mean)
    std = log_std.exp()
    logprob = (-((actions - mean) ** 2) / (2 * std**2) - log_std - 0.5 * LOG_2PI).sum(-1)
    entropy = (0.5 + 0.5 * LOG_2PI + log_std).sum(-1)
    m1, s1, m2, s2 = (
        (mean, std, prior_mean, prior_std) if direction == "reverse" else (prior_mean, prior_std, mean, std)
    )
    kl = (torch.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5).sum(-1)
    return logprob, entropy, kl


def ppo_loss(terms, values, old_logprob, advantages, returns, old_values, direction="reverse", clip_vloss=True):
    """The PPO + LaGO loss of one minibatch; `terms` = (logprob, entropy, kl) of the current policy, kl only at the
    states where the prior was evaluated. Returns the loss and how many samples had their policy term / value term
    clipped (gradient cut by the clipping)."""
    logprob, entropy, kl = terms
    n = len(advantages)
    mean = advantages.sum() / n
    std = (((advantages - mean) ** 2).sum() / (n - 1)).sqrt()  # the sample std, as torch.Tensor.std
    adv = (advantages - mean) / (std + 1e-8)
    ratio = (logprob - old_logprob).exp()
    # clipped surrogate, case by case: past 1 + eps with a positive advantage (or below 1 - eps with a negative
    # one) the objective is the constant (1 +- eps) * A; otherwise ratio * A
    cut_high, cut_low = (adv > 0) & (ratio > 1 + CLIP), (adv < 0) & (ratio < 1 - CLIP)
    surrogate = torch.where(cut_high, (1 + CLIP) * adv, torch.where(cut_low, (1 - CLIP) * adv, ratio * adv))
    pg_loss = -surrogate.mean()
    if clip_vloss:  # the value may move at most eps from the rollout's per update, unless that lowers the loss
        clipped = old_values + (values - old_values).clamp(-CLIP, CLIP)
        unclipped_err, clipped_err = (values - returns) ** 2, (clipped - returns) ** 2
        v_loss = 0.5 * torch.where(clipped_err > unclipped_err, clipped_err, unclipped_err).mean()
        v_cut = int(((clipped_err > unclipped_err) & ((values - old_values).abs() > CLIP)).sum())
    else:
        v_loss, v_cut = 0.5 * ((values - returns) ** 2).mean(), 0
    kl_mean = kl.sum() / max(len(kl), 1)  # over the states where the prior was evaluated (none: 0)
    loss = pg_loss - ENT * entropy.mean() + VF * v_loss + BETA * kl_mean
    return loss, int((cut_high | cut_low).sum()), v_cut


def gae(rewards, values, dones, next_value, next_done, gamma=GAMMA, lam=LAMBDA):
    """A_t = sum over l of (gamma * lambda)^l * delta_{t+l} up to the end of t's episode, delta_t = r_t +
    gamma * V(s_{t+1}) * [s_{t+1} in the same episode] - V(s_t); float64, one env (column) at a time. As the
    scripts store them: dones[t] = 1 when obs[t] starts a new episode (step t-1 ended one); next_value, next_done:
    of the observation after the rollout."""
    T, N = rewards.shape
    values = np.concatenate([values, next_value[None]], 0)
    ends = np.concatenate([dones[1:], next_done[None]], 0)  # ends[t]: step t ended its episode
    advantages = np.zeros((T, N))
    for env in range(N):
        delta = [rewards[t, env] + gamma * values[t + 1, env] * (1 - ends[t, env]) - values[t, env] for t in range(T)]
        for t in range(T):
            total, weight = 0.0, 1.0
            for u in range(t, T):
                total += weight * delta[u]
                if ends[u, env]:
                    break
                weight *= gamma * lam
            advantages[t, env] = total
    return advantages


def normalise(obs_rms, x):
    """The continuous policy's observation normalisation: (x - mean) / sqrt(var + 1e-8), clipped to +-10."""
    return np.clip((x - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10.0, 10.0)


# ------------------------------------------------------------------------------------------------------------
# The spies
# ------------------------------------------------------------------------------------------------------------
class Spy:
    """Records, for a run of `script`, every env step and every minibatch update (see the module docstring)."""

    def __init__(self, kind, prior, monkeypatch, direction="reverse", clip_vloss=True):
        self.kind, self.direction, self.clip_vloss = kind, direction, clip_vloss
        self.prior = fp.load_prior(prior)
        self.steps, self.states, self.updates, self.rollouts = [], [], [], []
        real_step, real_clip = gym.vector.SyncVectorEnv.step, torch.nn.utils.clip_grad_norm_

        def step(envs, actions):
            script = sys._getframe(1).f_locals  # the script's module globals
            state = script["next_obs"] if self.kind == "discrete" else script["next_raw_obs"]  # what the env gave
            self.states.append(
                (torch.as_tensor(state, dtype=torch.float32).clone(), list(script["infos"]["instruction"]))
            )
            out = real_step(envs, actions)
            self.record_step(script, out)
            return out

        def clip_grad_norm_(parameters, max_norm, *args, **kwargs):
            self.record_update(sys._getframe(1).f_locals)
            return real_clip(parameters, max_norm, *args, **kwargs)

        monkeypatch.setattr(gym.vector.SyncVectorEnv, "step", step)
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_grad_norm_)

    def record_step(self, script, out):
        _, reward, terminations, truncations, infos = out
        expected = np.asarray(reward, dtype=np.float64).copy()
        truncated = np.asarray(truncations) & ~np.asarray(terminations)
        for i in np.flatnonzero(truncated):  # a time limit is no failure: r + gamma * V(final observation)
            final = np.asarray(infos["final_obs"][i], dtype=np.float64)
            if self.kind == "continuous":
                final = normalise(script["obs_rms"], final)  # the statistics before this step's update
            with torch.no_grad():
                expected[i] += GAMMA * script["agent"].critic(torch.tensor(final, dtype=torch.float32)).item()
        self.steps.append(
            {
                "reward": expected,
                "done": np.asarray(terminations) | np.asarray(truncations),
                "terminated": int(np.sum(terminations)),
                "truncated": int(truncated.sum()),
            }
        )

    def record_update(self, s):
        agent, mb = s["agent"], torch.as_tensor(s["mb_inds"])
        if len(self.rollouts) < s["iteration"]:  # the first minibatch of a rollout: the agent is the rollout's
            self.check_rollout(s)
        ref = copy.deepcopy(agent)  # the parameters before this minibatch's optimizer.step()
        for p in ref.parameters():
            p.grad = None
        obs, actions = s["b_obs"][mb], s["b_actions"][mb]
        if self.kind == "discrete":
            logprob, entropy, kl = categorical_terms(ref, obs, actions, s["b_prior_logits"][mb], self.direction)
        else:
            prior = (s["b_prior_means"][mb], s["b_prior_stds"][mb])
            logprob, entropy, kl = gaussian_terms(ref, obs, actions, *prior, self.direction)
        loss, pg_cut, v_cut = ppo_loss(
            (logprob, entropy, kl[torch.as_tensor(self.evaluated)[mb]]),
            ref.critic(obs).view(-1),
            s["b_logprobs"][mb],
            s["b_advantages"][mb],
            s["b_returns"][mb],
            s["b_values"][mb],
            self.direction,
            self.clip_vloss,
        )
        loss.backward()
        self.updates.append(
            {
                "loss": (s["loss"].item(), loss.item()),
                "grads": [(p.grad.clone(), q.grad.clone()) for p, q in zip(agent.parameters(), ref.parameters())],
                "pg_cut": pg_cut,
                "v_cut": v_cut,
                "kl_coef": s["kl_coef"],
            }
        )

    def check_rollout(self, s):
        """The rollout's stored batch against the recorded env steps: the prior's outputs at each state with its
        instruction, rewards with the bootstrap, values, log-probabilities, advantages (GAE) and returns, each
        recomputed here."""
        args, agent = s["args"], s["agent"]
        T, N = args.num_steps, args.num_envs
        steps = self.steps[len(self.rollouts) * T : (len(self.rollouts) + 1) * T]
        states = self.states[len(self.rollouts) * T : (len(self.rollouts) + 1) * T]
        # the states where the prior was evaluated: all, or --prior-fraction of them (drawn by the script)
        self.evaluated = s["b_prior_mask"].numpy().copy() if "b_prior_mask" in s else np.ones(T * N, dtype=bool)
        with torch.inference_mode():
            prior = self.prior(torch.cat([x for x, _ in states]), [text for _, texts in states for text in texts])
        if self.kind == "discrete":
            got, want = s["b_prior_logits"], prior
        else:
            got, want = torch.cat([s["b_prior_means"], s["b_prior_stds"]], 1), torch.cat(prior, 1)
        prior_outputs = (got[self.evaluated].double().numpy(), want[self.evaluated].double().numpy())
        rewards = np.stack([st["reward"] for st in steps])
        previous = self.steps[len(self.rollouts) * T - 1]["done"] if self.rollouts else np.zeros(N, dtype=bool)
        dones = np.stack([previous] + [st["done"] for st in steps[:-1]]).astype(np.float64)
        next_done = steps[-1]["done"].astype(np.float64)
        with torch.no_grad():
            values = agent.critic(s["b_obs"]).view(T, N).double().numpy()
            next_value = agent.critic(s["next_obs"]).view(-1).double().numpy()
            if self.kind == "discrete":
                logprob = categorical_terms(agent, s["b_obs"], s["b_actions"], s["b_prior_logits"], "reverse")[0]
            else:
                b = (s["b_prior_means"], s["b_prior_stds"])
                logprob = gaussian_terms(agent, s["b_obs"], s["b_actions"], *b, "reverse")[0]
        advantages = gae(rewards, values, dones, next_value, next_done)
        self.rollouts.append(
            {
                "prior": prior_outputs,
                "rewards": (s["rewards"].double().numpy(), rewards),
                "values": (s["b_values"].double().numpy(), values.reshape(-1)),
                "logprobs": (s["b_logprobs"].double().numpy(), logprob.double().numpy()),
                "advantages": (s["b_advantages"].double().numpy(), advantages.reshape(-1)),
                "returns": (s["b_returns"].double().numpy(), (advantages + values).reshape(-1)),
                "evaluated": int(self.evaluated.sum()),
                "terminated": sum(st["terminated"] for st in steps),
                "truncated": sum(st["truncated"] for st in steps),
            }
        )


def run_spied(kind, prior, tmp_path, monkeypatch, extra=(), direction="reverse", clip_vloss=True):
    spy = Spy(kind, prior, monkeypatch, direction, clip_vloss)
    script, budget = (DISCRETE, CLEVR) if kind == "discrete" else (CONTINUOUS, REACH)
    script_runs.run_in_process(script, [*budget, "--prior-path", prior, *extra], tmp_path, monkeypatch)
    return spy


def prior_of(kind, request):
    return request.getfixturevalue("tiny_clevr_prior" if kind == "discrete" else "tiny_reach_prior")


KINDS = pytest.mark.parametrize("kind", ["discrete", "continuous"])


# ------------------------------------------------------------------------------------------------------------
# The tests
# ------------------------------------------------------------------------------------------------------------
def test_reference_gae_on_a_hand_computed_rollout():
    """The reference GAE above, on a rollout worked out by hand (gamma 0.9, lambda 0.5). Env 0: its episode
    terminates after step 1 (obs[2] starts a new one), the rollout ends mid-episode (bootstrap from next_value 1.0).
    Env 1: the rollout's last step ends its episode."""
    rewards = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 1.0]])
    values = np.array([[0.5, 0.0], [0.6, 0.0], [0.7, 0.0], [0.8, 0.0]])
    dones = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    advantages = gae(rewards, values, dones, np.array([1.0, 5.0]), np.array([0.0, 1.0]), gamma=0.9, lam=0.5)
    # env 0: A3 = 4 + .9*1 - .8; A2 = (3 + .9*.8 - .7) + .45*A3; A1 = 2 - .6 (episode ends);
    #        A0 = (1 + .9*.6 - .5) + .45*A1
    # env 1: A3 = 1 (no bootstrap past the end); A2 = .45*A3; A1 = .45*A2; A0 = .45*A1
    expected = [[1.67, 0.091125], [1.4, 0.2025], [4.865, 0.45], [4.1, 1.0]]
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)


@KINDS
def test_update_gradients_match_the_written_out_loss(kind, request, tmp_path, monkeypatch):
    """Every minibatch of two rollouts (4 epochs x 4 minibatches each): the script's loss and its gradient on
    every parameter equal those of PPO's clipped surrogate + clipped value loss - entropy bonus + beta * KL."""
    spy = run_spied(kind, prior_of(kind, request), tmp_path, monkeypatch)
    assert len(spy.updates) == 2 * 4 * 4
    assert [u["kl_coef"] for u in spy.updates] == [BETA] * 32  # the constant schedule
    for n, update in enumerate(spy.updates):
        for k, (got, want) in enumerate(update["grads"]):
            torch.testing.assert_close(
                got, want, rtol=1e-4, atol=1e-5, msg=lambda m, n=n, k=k: f"minibatch {n}, parameter {k}: {m}"
            )
        script_loss, loss = update["loss"]
        assert script_loss == pytest.approx(loss, rel=1e-5, abs=1e-5), f"minibatch {n}: loss"
    # the clipping did cut gradients: of the surrogate (ratios out of range) and of the value loss
    assert sum(u["pg_cut"] for u in spy.updates) > 0
    assert sum(u["v_cut"] for u in spy.updates) > 0


@KINDS
def test_rollout_advantages_returns_and_bootstrap_match_gae(kind, request, tmp_path, monkeypatch):
    """Each rollout's stored rewards are the env's, plus gamma * V(final obs) where an episode was truncated (not
    where it terminated); its advantages are GAE over those rewards and the critic's values, cut at episode ends;
    returns = advantages + values; the stored values and log-probabilities are the rollout policy's; the stored
    prior outputs are the prior's at each rollout state with that state's instruction (raw observations, on
    Meta-World)."""
    spy = run_spied(kind, prior_of(kind, request), tmp_path, monkeypatch)
    assert len(spy.rollouts) == 2
    for n, rollout in enumerate(spy.rollouts):
        for name in ("prior", "rewards", "values", "logprobs", "advantages", "returns"):
            got, want = rollout[name]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=f"rollout {n}: {name}")
    assert sum(r["truncated"] for r in spy.rollouts) >= 4  # the bootstrap was exercised
    if kind == "discrete":
        assert sum(r["terminated"] for r in spy.rollouts) >= 1  # and terminations, which it must leave alone


def test_forward_kl_and_unclipped_value_loss(tiny_clevr_prior, tmp_path, monkeypatch):
    """The other branches of the discrete update: --kl-direction forward, --no-clip-vloss."""
    spy = run_spied(
        "discrete",
        tiny_clevr_prior,
        tmp_path,
        monkeypatch,
        ["--kl-direction", "forward", "--no-clip-vloss", "--total-timesteps", "64"],
        direction="forward",
        clip_vloss=False,
    )
    assert len(spy.updates) == 16
    for n, update in enumerate(spy.updates):
        for got, want in update["grads"]:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert update["loss"][0] == pytest.approx(update["loss"][1], rel=1e-5, abs=1e-5), f"minibatch {n}"
    assert sum(u["pg_cut"] for u in spy.updates) > 0


@KINDS
def test_prior_fraction_takes_the_kl_at_the_drawn_states_only(kind, request, tmp_path, monkeypatch):
    """--prior-fraction 0.3: the prior is evaluated at ceil(0.3 x 48 or 64) states of each rollout (its outputs there
    are its outputs at those states), and beta * KL is the mean over the drawn states of each minibatch only."""
    spy = run_spied(kind, prior_of(kind, request), tmp_path, monkeypatch, ["--prior-fraction", "0.3"])
    batch = 64 if kind == "discrete" else 48
    assert [r["evaluated"] for r in spy.rollouts] == [math.ceil(0.3 * batch)] * 2
    for n, rollout in enumerate(spy.rollouts):
        np.testing.assert_allclose(*rollout["prior"], rtol=1e-5, atol=1e-5, err_msg=f"rollout {n}")
    for n, update in enumerate(spy.updates):
        for got, want in update["grads"]:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert update["loss"][0] == pytest.approx(update["loss"][1], rel=1e-5, abs=1e-5), f"minibatch {n}"


def kl_to_prior(kind, agent, run):
    """Mean KL(pi || prior) over a run's rollout states, from the prior outputs the guided run stored."""
    with torch.no_grad():
        if kind == "discrete":
            terms = categorical_terms(agent, run["b_obs"], run["b_actions"], run["b_prior_logits"], "reverse")
        else:
            prior = (run["b_prior_means"], run["b_prior_stds"])
            terms = gaussian_terms(agent, run["b_obs"], run["b_actions"], *prior, "reverse")
    return terms[2].mean().item()


@KINDS
def test_guidance_lowers_the_kl_to_the_prior(kind, request, tmp_path, monkeypatch):
    """Same seed, same first rollout: after one update the policy is closer to the prior (reverse KL on the
    rollout states) with beta > 0 than with beta = 0, and closer than the rollout policy was."""
    prior = prior_of(kind, request)
    script = DISCRETE if kind == "discrete" else CONTINUOUS
    budget = [
        "--num-envs",
        "2",
        "--num-steps",
        "32",
        "--total-timesteps",
        "64",
        "--learning-rate",
        "1e-3",
        "--prior-fraction",
        "1",
        "--llm",
        "tiny-random",
        "--prior-path",
        prior,
        *(["--max-episode-steps", "8"] if kind == "continuous" else []),
    ]
    rollout_agents = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip_grad_norm_(*args, **kwargs):
        script = sys._getframe(1).f_locals
        if script["epoch"] == 0 and script["start"] == 0:  # the first minibatch: before any optimizer.step()
            rollout_agents.append(copy.deepcopy(script["agent"]))
        return real_clip(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_grad_norm_)
    runs = {}
    for beta in ("0", "1"):
        (tmp_path / beta).mkdir()
        runs[beta] = script_runs.run_in_process(script, [*budget, "--kl-coef", beta], tmp_path / beta, monkeypatch)
    vanilla, guided = runs["0"], runs["1"]
    assert "b_prior_logits" not in vanilla and "b_prior_means" not in vanilla  # beta = 0: no prior at all
    assert torch.equal(vanilla["b_obs"], guided["b_obs"]) and torch.equal(vanilla["b_actions"], guided["b_actions"])
    assert len(rollout_agents) == 2
    for name, value in rollout_agents[0].state_dict().items():  # the same rollout policy
        assert torch.equal(value, rollout_agents[1].state_dict()[name]), name
    before = kl_to_prior(kind, rollout_agents[0], guided)
    assert before == pytest.approx(guided["rollout_kl"].item(), rel=1e-4)  # the KL the script logs
    kl_guided, kl_vanilla = kl_to_prior(kind, guided["agent"], guided), kl_to_prior(kind, vanilla["agent"], guided)
    assert kl_guided < kl_vanilla and kl_guided < before, (kl_guided, kl_vanilla, before)
