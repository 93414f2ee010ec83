"""LaGO with discrete actions: PPO guided by a language-model action prior (CLEVR-Robot by default).

    python lago_ppo_discrete.py --llm Qwen2.5-1.5B                  # LaGO on CLEVR-Robot-v0
    python lago_ppo_discrete.py --kl-coef 0                         # vanilla PPO, nothing of the LLM loaded
    python lago_ppo_discrete.py --goal-split train+rephrase+heldout+compose   # instruction levels, each evaluated
    python lago_ppo_discrete.py --env-id CartPole-v1 --kl-coef 0    # any gymnasium env with a Discrete action space

CleanRL's ppo.py plus LaGO's guidance: the action prior p(a | s, instruction) made by finetune_prior.py is evaluated
once at every state of the rollout (batched, no gradients) and the PPO loss adds beta * KL(pi(.|s) || p(.|s)), exact
over the actions. `--kl-coef 0` is vanilla PPO through the same code, with nothing of the language model imported.

Read against CleanRL's ppo.py: `grep -n "# LaGO"` lists LaGO's method (a tag on a line covers that line; on a comment
or a def, the block under it); every other departure names its reason: `# gymnasium 1.x:` (same-step autoreset,
final_info), `# tyro 1.x:`, `# truncation:` (a time limit bootstraps from the episode's real final observation, where
CleanRL treats it as a termination), `# CLEVR-Robot:` (its instruction levels and success), `# errors:` (one-line
messages instead of tracebacks), `# Ctrl-C:`, `# report:` (progress line, success rate, final evaluation, eval.json,
summary), `# speed:` (--async-envs), `# resume:` (checkpoints, runs in chunks), `# tests:` (a loop of CleanRL's as a
function the tests call).
"""

import datetime  # report: elapsed and eta
import difflib  # errors: "did you mean"
import json  # report: eval.json
import os
import random
import signal  # Ctrl-C
import sys  # Ctrl-C
import time
from collections import deque  # report: the last 100 episodes
from dataclasses import dataclass
from typing import Literal, Optional  # tyro 1.x: Optional[str] = None, not str = None; Literal: LaGO's choices

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions import kl_divergence  # LaGO
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter

from envs.clevr_robot import run_levels  # CLEVR-Robot: its levels; importing envs registers CLEVR-Robot-v0


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=False`"""
    cuda: bool = True
    """if toggled, cuda will be enabled by default"""
    track: bool = False
    """if toggled, this experiment will be tracked with Weights and Biases"""
    wandb_project_name: str = "cleanRL"
    """the wandb's project name"""
    wandb_entity: Optional[str] = None  # tyro 1.x
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False  # report: as in CleanRL's ppo_continuous_action.py
    """whether to save model into the `runs/{run_name}` folder"""
    async_envs: bool = False  # speed
    """if toggled, envs step in parallel subprocesses (gymnasium's AsyncVectorEnv): faster with many envs and cores"""
    checkpoint_minutes: float = 0.0  # resume
    """write runs/{run_name}/checkpoint.pt (atomically) every this many minutes of training (0: never)"""
    stop_after_minutes: Optional[float] = None  # resume
    """stop after the first iteration that ends this many minutes after the script started, write the checkpoint and
    exit with code 75; continue with --resume (long runs in chunks under a scheduler's time limit)"""
    resume: Optional[str] = None  # resume
    """a checkpoint.pt to continue its run from (same flags): agent, optimizer, beta, counters and random streams
    are restored; the envs restart their episodes, so a resumed run is not bit-identical to an unbroken one"""

    # Algorithm specific arguments
    env_id: str = "CLEVR-Robot-v0"  # CLEVR-Robot
    """the id of the environment (any gymnasium env with a Discrete action space)"""
    goal_split: str = "train"  # CLEVR-Robot
    """CLEVR-Robot goals of training: a level (train, heldout, all, rephrase, compose) or a '+' mixture of levels, e.g.
    train+rephrase+heldout+compose (each episode draws its level uniformly)"""
    eval_levels: Optional[str] = None  # CLEVR-Robot
    """CLEVR-Robot: comma list of levels evaluated separately at the end (--eval-episodes each), e.g.
    train,heldout,rephrase,compose; None: train,heldout, then the other levels of --goal-split. With this flag or a
    --goal-split other than train, the mean success over the levels is reported too (eval.json: eval_mean_success)"""
    max_episode_steps: Optional[int] = None  # CLEVR-Robot: episode length (gym.make's max_episode_steps)
    """episode length before truncation (None: the env's own, 50 on CLEVR-Robot)"""
    total_timesteps: int = 500000
    """total timesteps of the experiments"""
    learning_rate: float = 2.5e-4
    """the learning rate of the optimizer"""
    num_envs: int = 4
    """the number of parallel game environments"""
    num_steps: int = 128
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 4
    """the K epochs to update the policy"""
    norm_adv: bool = True
    """Toggles advantages normalization"""
    clip_coef: float = 0.2
    """the surrogate clipping coefficient"""
    clip_vloss: bool = True
    """Toggles whether or not to use a clipped loss for the value function, as per the paper."""
    ent_coef: float = 0.01
    """coefficient of the entropy"""
    vf_coef: float = 0.5
    """coefficient of the value function"""
    max_grad_norm: float = 0.5
    """the maximum norm for the gradient clipping"""
    target_kl: Optional[float] = None  # tyro 1.x
    """the target KL divergence threshold"""

    # LaGO: guidance
    llm: str = "all-MiniLM-L6-v2"
    """language model of the prior (finetune_prior.py's --llm): picks the default --prior-path"""
    prior_path: Optional[str] = None
    """directory of the prior made by finetune_prior.py (default: lago_prior.default_prior_path(env_id, llm))"""
    kl_coef: float = 1.0
    """beta, the weight of the KL to the prior in the loss (0 = vanilla PPO: no language model is loaded)"""
    kl_schedule: Literal["constant", "linear", "adaptive"] = "constant"
    """beta over training: constant; linear (decays from --kl-coef to 0);
    adaptive (starts at --kl-coef, steers the KL toward --kl-target)"""
    kl_target: float = 0.1
    """the KL (nats per state) that the adaptive schedule holds"""
    kl_direction: Literal["reverse", "forward"] = "reverse"
    """reverse: KL(pi || prior), mode-seeking; forward: KL(prior || pi), covers every action the prior likes"""
    prior_batch_size: int = 256
    """states per prior forward pass when the rollout's states are evaluated (lower it if GPU memory runs out)"""
    eval_episodes: int = 100  # report
    """episodes of the final evaluation on each goal split (0 = no evaluation); written to runs/{run_name}/eval.json"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


def make_env(env_id, idx, capture_video, run_name, **env_kwargs):
    def thunk():
        # CLEVR-Robot: env_kwargs go to gym.make: max_episode_steps, goal_split (a level or a '+' mixture of levels:
        # "train" for learning, the others test generalisation) and goal_slots (2: room for two-relation goals)
        if capture_video and idx == 0:
            env = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
            env = gym.wrappers.RecordVideo(env, f"videos/{run_name}")
        else:
            env = gym.make(env_id, **env_kwargs)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        return env

    return thunk


def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, envs):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(np.array(envs.single_observation_space.shape).prod(), 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(np.array(envs.single_observation_space.shape).prod(), 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, 64)),
            nn.Tanh(),
            layer_init(nn.Linear(64, envs.single_action_space.n), std=0.01),
        )

    def get_value(self, x):
        return self.critic(x)

    def get_action_and_value(self, x, action=None):
        logits = self.actor(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        # LaGO: the distribution itself is returned too, for the exact KL to the prior
        return action, probs.log_prob(action), probs.entropy(), self.critic(x), probs


# LaGO
def prior_kl(policy_dist, prior_dist, direction="reverse"):
    """Exact KL between the policy and the prior at each state: reverse KL(pi || prior) or forward KL(prior || pi)."""
    if direction == "reverse":
        return kl_divergence(policy_dist, prior_dist)
    if direction == "forward":
        return kl_divergence(prior_dist, policy_dist)
    raise ValueError(f"kl direction must be 'reverse' or 'forward', got {direction!r}")


# LaGO
def prior_on_states(prior, observations, instructions, batch_size):
    """The prior's logits [N, n] at N states (raw observations [N, obs_dim], N instructions), batch_size
    at a time, in inference mode (torch.cat outside it returns ordinary tensors that the loss can use)."""
    with torch.inference_mode():
        chunks = [
            prior(observations[i : i + batch_size], instructions[i : i + batch_size])
            for i in range(0, len(instructions), batch_size)
        ]
    return torch.cat(chunks).float()


# LaGO
def kl_coef_schedule(schedule, kl_coef, iteration, num_iterations):
    """beta of the fixed schedules at `iteration` (1-based): constant, or linear decay from kl_coef to 0."""
    if schedule == "constant":
        return kl_coef
    if schedule == "linear":
        return kl_coef * (1.0 - (iteration - 1.0) / num_iterations)
    raise ValueError(f"kl schedule {schedule!r} is not a fixed schedule (constant, linear)")


# LaGO
def update_adaptive_kl_coef(kl_coef, measured_kl, kl_target, rate=0.1, low=1e-4, high=1e3):
    """Adaptive beta, a proportional multiplicative controller (Ziegler et al. 2019; TRL's AdaptiveKLController):
    beta *= 1 + rate * clip(KL / target - 1, -1, 1), i.e. at most +-10% per update, up when the policy is further
    from the prior than the target, down when closer; kept in [low, high]. (PPO-penalty's doubling/halving
    overshoots here: the clipped gradient limits how fast the KL can follow beta.)"""
    error = min(max(measured_kl / kl_target - 1.0, -1.0), 1.0)
    return float(min(max(kl_coef * (1.0 + rate * error), low), high))


# truncation
def bootstrap_truncations(reward, terminations, truncations, final_obs, value_of, gamma):
    """The reward with `gamma * V(final observation)` added where the time limit cut an episode (truncated, not
    terminated): a truncation is not a failure. `final_obs` is infos["final_obs"] (with SAME_STEP autoreset the next
    observation already belongs to the next episode); `value_of` maps observations [k, obs_dim] to values [k]."""
    truncated = truncations & ~terminations
    if not truncated.any():
        return reward
    reward = reward.copy()
    reward[truncated] += gamma * value_of(np.stack(final_obs[truncated]))
    return reward


# tests: CleanRL's GAE loop, as a function
def compute_gae(rewards, values, dones, next_value, next_done, gamma, gae_lambda):
    """CleanRL's GAE(lambda) over a rollout [num_steps, num_envs]; dones[t] = 1 where obs[t] starts a new episode."""
    num_steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextnonterminal = 1.0 - next_done
            nextvalues = next_value
        else:
            nextnonterminal = 1.0 - dones[t + 1]
            nextvalues = values[t + 1]
        delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
        advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    return advantages


# resume: flags a resumed run may change (where and how it runs, not what it learns)
RESUME_FREE_FLAGS = ("resume", "checkpoint_minutes", "stop_after_minutes", "cuda", "async_envs", "prior_batch_size")
RESUME_FREE_FLAGS += ("batch_size", "minibatch_size", "num_iterations")  # computed from the others


# report
def hms(seconds):
    return str(datetime.timedelta(seconds=int(seconds)))


# Ctrl-C
def write_atomically(path, write):
    """write(tmp_path), then rename it to `path`: an interrupted or failed write leaves no file behind."""
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# report
def evaluate(agent, make_env, env_id, eval_episodes, seed, device, **env_kwargs):
    """Mean return and success rate of the policy (actions sampled, as in training) over `eval_episodes` episodes."""
    env = make_env(env_id, 0, False, "eval", **env_kwargs)()
    returns, successes = [], []
    obs, _ = env.reset(seed=seed)
    episodic_return = 0.0
    while len(returns) < eval_episodes:
        with torch.inference_mode():
            action, _, _, _, _ = agent.get_action_and_value(torch.tensor(obs, dtype=torch.float32, device=device)[None])
        obs, reward, terminated, truncated, info = env.step(action.item())
        episodic_return += float(reward)
        if terminated or truncated:
            returns.append(episodic_return)
            if "success" in info:
                successes.append(float(info["success"]))
            episodic_return = 0.0
            obs, _ = env.reset()
    env.close()
    return {
        "episodes": eval_episodes,
        "episodic_return": float(np.mean(returns)) if returns else None,
        "success_rate": float(np.mean(successes)) if successes else None,
    }


if __name__ == "__main__":
    script_start = time.time()  # report
    args = tyro.cli(Args)
    if args.capture_video:  # errors
        try:
            import moviepy  # noqa: F401  (gymnasium's RecordVideo writes the videos with it)
        except ImportError:
            raise SystemExit(
                "error: --capture-video needs moviepy, which requirements.txt leaves out: pip install moviepy"
            )
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    if args.num_iterations < 1:  # errors
        raise SystemExit(
            f"error: --total-timesteps {args.total_timesteps} is less than one rollout "
            f"(--num-envs x --num-steps = {args.batch_size})"
        )
    if args.batch_size % args.num_minibatches != 0:  # errors
        raise SystemExit(
            f"error: --num-minibatches {args.num_minibatches} does not divide the batch of {args.batch_size} "
            f"(--num-envs x --num-steps); pick a divisor of {args.batch_size}"
        )
    # LaGO: the guidance flags (errors)
    if args.kl_coef < 0:
        raise SystemExit(f"error: --kl-coef must be >= 0 (0 = vanilla PPO), got {args.kl_coef}")
    if args.kl_schedule == "adaptive" and args.kl_target <= 0:
        raise SystemExit(f"error: --kl-schedule adaptive needs --kl-target > 0 (nats per state), got {args.kl_target}")
    if args.prior_batch_size < 1:
        raise SystemExit(f"error: --prior-batch-size must be at least 1, got {args.prior_batch_size}")
    if args.env_id not in gym.registry:  # errors
        close = difflib.get_close_matches(args.env_id, list(gym.registry), n=3)
        raise SystemExit(
            f"error: unknown --env-id {args.env_id!r}"
            + (f"; did you mean {', '.join(close)}?" if close else "")
            + ". This script runs registered gymnasium envs with Discrete actions (default CLEVR-Robot-v0); "
            "Meta-World tasks go to lago_ppo_continuous.py"
        )
    # CLEVR-Robot: its instruction levels (training goals, levels evaluated at the end); other envs have one set
    is_clevr = args.env_id.startswith("CLEVR-Robot")
    protocol = args.goal_split != "train" or args.eval_levels is not None  # report the mean over the levels too
    if not is_clevr and protocol:
        raise SystemExit(
            f"error: --goal-split / --eval-levels are CLEVR-Robot's instruction levels; {args.env_id} has none"
        )
    try:
        eval_splits, goal_slots = run_levels(args.goal_split, args.eval_levels) if is_clevr else ([None], None)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    checkpoint = None
    if args.resume is not None:  # resume: our own file (it holds random states, so it is not loaded weights_only)
        try:
            checkpoint = torch.load(args.resume, map_location="cpu", weights_only=False)
            saved_args = checkpoint["args"]
        except Exception as e:
            raise SystemExit(f"error: --resume {args.resume}: not a checkpoint.pt this script wrote ({e})")
        changed = [k for k, v in vars(args).items() if k not in RESUME_FREE_FLAGS and saved_args.get(k) != v]
        if changed:
            was = ", ".join(f"--{k.replace('_', '-')} {saved_args.get(k)}" for k in changed)
            raise SystemExit(f"error: --resume continues a run with its own flags; it had {was}: pass those")
    run_name = (
        checkpoint["run_name"] if checkpoint else f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    )
    checkpoint_path = f"runs/{run_name}/checkpoint.pt"  # resume
    if args.track:
        import wandb

        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            monitor_gym=True,
            save_code=True,
        )
    writer = SummaryWriter(f"runs/{run_name}")

    def interrupted(signum, frame):  # Ctrl-C: files are written atomically, so none is left half-written
        print(f"\ninterrupted: the run's outputs so far are in runs/{run_name}", file=sys.stderr, flush=True)
        raise SystemExit(130)

    signal.signal(signal.SIGINT, interrupted)  # Ctrl-C
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n%s" % ("\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])),
    )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    # CLEVR-Robot: trains on --goal-split (default the "train" goals) and is evaluated on each of eval_splits (default
    # "train" and "heldout"), every env with the same goal_slots (same observation size); other envs have one split
    env_kwargs = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    if goal_slots is not None:
        env_kwargs["goal_slots"] = goal_slots
    train_kwargs = dict(env_kwargs, goal_split=args.goal_split) if is_clevr else env_kwargs
    vector_env = gym.vector.AsyncVectorEnv if args.async_envs else gym.vector.SyncVectorEnv  # speed
    envs = vector_env(
        [make_env(args.env_id, i, args.capture_video, run_name, **train_kwargs) for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,  # gymnasium 1.x
    )
    if not isinstance(envs.single_action_space, gym.spaces.Discrete):  # errors
        raise SystemExit(
            f"error: {args.env_id} has a {type(envs.single_action_space).__name__} action space; this script needs a "
            f"Discrete one. For continuous actions use lago_ppo_continuous.py --env-id {args.env_id}"
        )

    # LaGO: the prior is loaded only when it is used; with --kl-coef 0 no language model is imported
    use_prior = args.kl_coef > 0
    prior = None
    if use_prior:
        from lago_prior import PriorError, action_distribution, load_guidance_prior, preserved_random_state

        try:  # LaGO: loading (or making) the prior draws nothing from this run's random streams: seeds stay paired
            with preserved_random_state():
                prior, prior_path = load_guidance_prior(args.env_id, args.llm, args.prior_path, envs, device, args.cuda)
        except (FileNotFoundError, PriorError) as e:
            raise SystemExit(f"error: {e}")
        print(f"LaGO prior: {prior_path} (llm {prior.config['llm']}), kl_coef={args.kl_coef} {args.kl_schedule}")

    agent = Agent(envs).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    def value_of(observations):  # truncation: V of observations [k, obs_dim]
        with torch.no_grad():
            return agent.get_value(torch.Tensor(observations).to(device)).flatten().cpu().numpy()

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)
    # LaGO: what the prior reads at every rollout state besides the observation: the instruction of the episode
    instructions = [[""] * args.num_envs for _ in range(args.num_steps)]

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    prior_time = 0.0  # LaGO
    kl_coef = args.kl_coef  # LaGO
    recent_returns, recent_successes = deque(maxlen=100), deque(maxlen=100)  # report
    start_iteration, last_checkpoint = 1, time.time()  # resume
    if checkpoint is not None:  # resume: the state after the checkpoint's iteration
        agent.load_state_dict(checkpoint["agent"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        start_iteration, global_step = checkpoint["iteration"] + 1, checkpoint["global_step"]
        kl_coef, prior_time = checkpoint["kl_coef"], checkpoint["prior_time"]
        start_time = time.time() - checkpoint["train_time"]
        recent_returns.extend(checkpoint["recent_returns"])
        recent_successes.extend(checkpoint["recent_successes"])
        random.setstate(checkpoint["rng"]["python"])
        np.random.set_state(checkpoint["rng"]["numpy"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
    # LaGO: infos hold the instructions; resume: a resumed run starts new episodes, seeded by its iteration
    next_obs, infos = envs.reset(seed=args.seed + 10_000 * (start_iteration - 1))
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    if use_prior and "instruction" not in infos:  # LaGO
        raise SystemExit(f"error: {args.env_id} gives no info['instruction'], which the prior reads")

    for iteration in range(start_iteration, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow
        # LaGO: beta of this iteration (the adaptive controller updates it after each update instead)
        if args.kl_schedule != "adaptive":
            kl_coef = kl_coef_schedule(args.kl_schedule, args.kl_coef, iteration, args.num_iterations)
        iteration_successes = []  # report

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done

            if use_prior:  # LaGO: the instructions of the episodes now running
                instructions[step] = [str(s) for s in infos["instruction"]]

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value, _ = agent.get_action_and_value(next_obs)  # LaGO: and the distribution
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            next_done = np.logical_or(terminations, truncations)
            # truncation: a time-limit truncation bootstraps from the real final observation (gymnasium 1.x: final_obs)
            reward = bootstrap_truncations(
                reward, terminations, truncations, infos.get("final_obs"), value_of, args.gamma
            )
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)

            # gymnasium 1.x: final_info is a dict of arrays; report: returns and success of the last 100 episodes
            if "final_info" in infos and "episode" in infos["final_info"]:
                final_info = infos["final_info"]
                for i in np.nonzero(final_info["_episode"])[0]:
                    episodic_return = float(final_info["episode"]["r"][i])
                    recent_returns.append(episodic_return)
                    writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                    writer.add_scalar("charts/episodic_length", final_info["episode"]["l"][i], global_step)
                    if "success" in final_info and final_info["_success"][i]:  # CLEVR-Robot
                        iteration_successes.append(float(final_info["success"][i]))
                        recent_successes.append(float(final_info["success"][i]))

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            # tests: CleanRL's GAE loop, as a function
            advantages = compute_gae(rewards, values, dones, next_value, next_done, args.gamma, args.gae_lambda)
            returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        # LaGO: the prior at every state of the rollout, once each, batched over envs and steps; the update epochs
        # then never call the LLM
        if use_prior:
            prior_start = time.time()
            b_instructions = [s for step_instructions in instructions for s in step_instructions]
            b_prior_logits = prior_on_states(prior, b_obs, b_instructions, args.prior_batch_size)
            prior_time += time.time() - prior_start
            with torch.no_grad():  # LaGO: the KL of the policy that collected the rollout (drives the adaptive beta)
                rollout_dist = agent.get_action_and_value(b_obs, b_actions.long())[4]
                b_prior = action_distribution(b_prior_logits)
                rollout_kl = prior_kl(rollout_dist, b_prior, args.kl_direction).mean().item()

        # Optimizing the policy and value network
        b_inds = np.arange(args.batch_size)
        clipfracs = []
        prior_kls = []  # LaGO
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = b_inds[start:end]

                _, newlogprob, entropy, newvalue, newdist = agent.get_action_and_value(  # LaGO: newdist
                    b_obs[mb_inds], b_actions.long()[mb_inds]
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    # calculate approx_kl http://joschu.net/blog/kl-approx.html
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds],
                        -args.clip_coef,
                        args.clip_coef,
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef
                # LaGO: pull the policy toward the prior, exact KL over the actions at the rollout states
                if use_prior:
                    kl_loss = prior_kl(newdist, action_distribution(b_prior_logits[mb_inds]), args.kl_direction).mean()
                    loss = loss + kl_coef * kl_loss
                    prior_kls.append(kl_loss.item())

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y

        # TRY NOT TO MODIFY: record rewards for plotting purposes
        writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)
        writer.add_scalar("losses/value_loss", v_loss.item(), global_step)
        writer.add_scalar("losses/policy_loss", pg_loss.item(), global_step)
        writer.add_scalar("losses/entropy", entropy_loss.item(), global_step)
        writer.add_scalar("losses/old_approx_kl", old_approx_kl.item(), global_step)
        writer.add_scalar("losses/approx_kl", approx_kl.item(), global_step)
        writer.add_scalar("losses/clipfrac", np.mean(clipfracs), global_step)
        writer.add_scalar("losses/explained_variance", explained_var, global_step)
        if iteration_successes:  # report
            writer.add_scalar("charts/success_rate", np.mean(iteration_successes), global_step)
        # LaGO: the KL to the prior (of the rollout policy, and averaged over this update's minibatches), beta, and
        # the prior's share of wall time; the adaptive beta follows the rollout policy's KL, as TRL's controller
        if use_prior:
            measured_kl = float(np.mean(prior_kls))
            writer.add_scalar("losses/prior_kl", measured_kl, global_step)
            writer.add_scalar("losses/prior_kl_rollout", rollout_kl, global_step)
            writer.add_scalar("charts/kl_coef", kl_coef, global_step)
            if args.kl_schedule == "adaptive":
                kl_coef = update_adaptive_kl_coef(kl_coef, rollout_kl, args.kl_target)
        elapsed = time.time() - start_time
        writer.add_scalar("charts/prior_time_share", prior_time / elapsed, global_step)  # LaGO
        # report: one progress line per iteration instead of CleanRL's line per episode and "SPS:"
        sps = int(global_step / elapsed)
        writer.add_scalar("charts/SPS", sps, global_step)
        eta = elapsed / iteration * (args.num_iterations - iteration)
        progress = f"global_step={global_step}/{args.num_iterations * args.batch_size} SPS={sps}"
        progress += f" elapsed={hms(elapsed)} eta={hms(eta)}"
        if recent_returns:
            progress += f" return(last {len(recent_returns)})={np.mean(recent_returns):.2f}"
        if recent_successes:
            progress += f" success={np.mean(recent_successes):.2f}"
        if use_prior:  # LaGO
            progress += f" prior_kl={measured_kl:.3f} kl_coef={kl_coef:.4g} prior_time={prior_time / elapsed:.0%}"
        print(progress)

        # resume: a checkpoint every --checkpoint-minutes, and one before stopping at --stop-after-minutes
        stop = args.stop_after_minutes is not None and time.time() - script_start > 60 * args.stop_after_minutes
        stop = stop and iteration < args.num_iterations
        if stop or (args.checkpoint_minutes > 0 and time.time() - last_checkpoint > 60 * args.checkpoint_minutes):
            state = {
                "args": vars(args),
                "run_name": run_name,
                "iteration": iteration,
                "global_step": global_step,
                "agent": agent.state_dict(),
                "optimizer": optimizer.state_dict(),
                "kl_coef": kl_coef,
                "prior_time": prior_time,
                "train_time": time.time() - start_time,
                "recent_returns": list(recent_returns),
                "recent_successes": list(recent_successes),
                "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            }
            write_atomically(checkpoint_path, lambda tmp: torch.save(state, tmp))
            last_checkpoint = time.time()
        if stop:
            print(f"stopped at global_step={global_step}: continue with the same flags and --resume {checkpoint_path}")
            envs.close()
            writer.close()
            raise SystemExit(75)

    train_time = time.time() - start_time  # report
    if args.save_model:  # report: as in CleanRL's ppo_continuous_action.py, written atomically (Ctrl-C)
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        write_atomically(model_path, lambda tmp: torch.save(agent.state_dict(), tmp))
        print(f"model saved to {model_path}")

    # report: final evaluation on each goal split (CLEVR-Robot: each level of eval_splits, by default train and
    # held-out goals), eval.json, then one summary line
    eval_start = time.time()
    results = {}
    if args.eval_episodes > 0:
        for split in eval_splits:
            name = split or "eval"
            eval_kwargs = env_kwargs if split is None else dict(env_kwargs, goal_split=split)
            results[name] = evaluate(
                agent, make_env, args.env_id, args.eval_episodes, args.seed + 100_000, device, **eval_kwargs
            )
            for key in ("episodic_return", "success_rate"):
                if results[name][key] is not None:
                    writer.add_scalar(f"eval/{name}_{key}", results[name][key], global_step)
    mean_success = None  # CLEVR-Robot: the mean success rate over the levels (with --goal-split / --eval-levels)
    if protocol and results:
        mean_success = float(np.mean([result["success_rate"] for result in results.values()]))
        writer.add_scalar("eval/mean_success_rate", mean_success, global_step)
    summary = {
        "env_id": args.env_id,
        "run_name": run_name,
        "global_step": global_step,
        "wall_time_s": train_time,
        "prior_time_s": prior_time,
        "eval_time_s": time.time() - eval_start,
        "total_time_s": time.time() - script_start,
        "final_episodic_return": float(np.mean(recent_returns)) if recent_returns else None,
        "final_success_rate": float(np.mean(recent_successes)) if recent_successes else None,
        "final_episodes": len(recent_returns),
        "eval": results,
        **({"eval_mean_success": mean_success} if protocol else {}),  # CLEVR-Robot: mean of the levels' successes
        "args": vars(args),
    }

    def write_summary(tmp):
        with open(tmp, "w") as f:
            json.dump(summary, f, indent=2)

    write_atomically(f"runs/{run_name}/eval.json", write_summary)

    line = f"summary: {run_name} steps={global_step} time={train_time:.0f}s (prior {prior_time / train_time:.0%})"
    if recent_returns:
        line += f" return(last {len(recent_returns)})={np.mean(recent_returns):.2f}"
    if recent_successes:
        line += f" success(last {len(recent_successes)})={np.mean(recent_successes):.2f}"
    for name, result in results.items():
        line += f" | eval {name}: return={result['episodic_return']:.2f}"
        if result["success_rate"] is not None:
            line += f" success={result['success_rate']:.2f}"
    if mean_success is not None:
        line += f" | eval_mean_success={mean_success:.2f}"
    print(line + f" -> runs/{run_name}/eval.json")

    envs.close()
    writer.close()
