# LaGO on CleanRL's ppo.py: PPO whose loss adds beta * KL(pi(.|s) || p(.|s, instruction)), the action prior made by
# finetune_prior.py. Lines of LaGO carry `# LaGO`. `--kl-coef 0` is vanilla PPO (no language model is loaded).
#     python lago_ppo_discrete.py                       # CLEVR-Robot-v0, the offline all-MiniLM-L6-v2 prior
#     python lago_ppo_discrete.py --llm Qwen2.5-1.5B    # a Hugging Face model id, an alias or a local directory
import os
import random
import time
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro
from torch.distributions import kl_divergence  # LaGO
from torch.distributions.categorical import Categorical
from torch.utils.tensorboard import SummaryWriter


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
    wandb_entity: Optional[str] = None
    """the entity (team) of wandb's project"""
    capture_video: bool = False
    """whether to capture videos of the agent performances (check out `videos` folder)"""
    save_model: bool = False
    """whether to save model into the `runs/{run_name}` folder"""

    # Algorithm specific arguments
    env_id: str = "CLEVR-Robot-v0"
    """the id of the environment"""
    goal_split: str = "train"
    """CLEVR-Robot's instruction levels of training: train, heldout, rephrase, compose, hard, all, or a '+' mixture"""
    max_episode_steps: Optional[int] = None
    """episode length before truncation (None: the env's own, 50 on CLEVR-Robot)"""
    total_timesteps: int = 400000
    """total timesteps of the experiments"""
    learning_rate: float = 1e-3
    """the learning rate of the optimizer"""
    num_envs: int = 8
    """the number of parallel game environments"""
    num_steps: int = 64
    """the number of steps to run in each environment per policy rollout"""
    anneal_lr: bool = True
    """Toggle learning rate annealing for policy and value networks"""
    gamma: float = 0.99
    """the discount factor gamma"""
    gae_lambda: float = 0.95
    """the lambda for the general advantage estimation"""
    num_minibatches: int = 4
    """the number of mini-batches"""
    update_epochs: int = 8
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
    target_kl: Optional[float] = None
    """the target KL divergence threshold"""

    # LaGO: guidance
    llm: str = "all-MiniLM-L6-v2"
    """language model of the prior (finetune_prior.py --llm): picks the default --prior-path"""
    prior_path: Optional[str] = None
    """directory of the prior made by finetune_prior.py (default: made on the first run, then reused)"""
    kl_coef: float = 1.0
    """beta, the weight of the KL to the prior in the loss (0 = vanilla PPO: no language model is loaded)"""
    kl_schedule: Literal["constant", "linear", "adaptive"] = "constant"
    """beta over training: constant; linear (decays to 0); adaptive (steers the KL toward --kl-target)"""
    kl_target: float = 0.1
    """the KL (nats per state) that the adaptive schedule holds"""
    kl_direction: Literal["reverse", "forward"] = "reverse"
    """reverse: KL(pi || prior), mode-seeking; forward: KL(prior || pi), covers every action the prior likes"""
    prior_fraction: float = 1.0
    """fraction of the rollout's states, drawn at random, at which the prior is evaluated and the KL taken"""
    prior_batch_size: int = 256
    """states per prior forward pass over the rollout (lower it if GPU memory runs out)"""
    residual_policy: bool = False
    """ours, not the paper's: the policy's logits are the prior's plus the actor's, so it starts as the prior"""

    # to be filled in runtime
    batch_size: int = 0
    """the batch size (computed in runtime)"""
    minibatch_size: int = 0
    """the mini-batch size (computed in runtime)"""
    num_iterations: int = 0
    """the number of iterations (computed in runtime)"""


def make_env(env_id, idx, capture_video, run_name, **env_kwargs):
    def thunk():
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

    def get_action_and_value(self, x, action=None, prior_logits=None):
        logits = self.actor(x)
        if prior_logits is not None:  # LaGO --residual-policy: the actor learns a correction of the prior
            logits = logits + prior_logits
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x), probs  # LaGO: probs, for the KL


def prior_kl(policy, prior, direction="reverse"):  # LaGO: exact over the actions, at each state
    return kl_divergence(policy, prior) if direction == "reverse" else kl_divergence(prior, policy)


def kl_coef_schedule(schedule, kl_coef, iteration, num_iterations):  # LaGO: beta of the fixed schedules
    return kl_coef * (1.0 - (iteration - 1.0) / num_iterations) if schedule == "linear" else kl_coef


def update_adaptive_kl_coef(kl_coef, measured_kl, kl_target, rate=0.1, low=1e-4, high=1e3):  # LaGO
    """Proportional controller (Ziegler et al. 2019, as TRL's AdaptiveKLController): at most +-10% per update."""
    error = min(max(measured_kl / kl_target - 1.0, -1.0), 1.0)
    return float(min(max(kl_coef * (1.0 + rate * error), low), high))


if __name__ == "__main__":
    args = tyro.cli(Args)
    counts = (args.num_envs, args.num_steps, args.num_minibatches, args.update_epochs)
    if min(counts) < 1 or args.total_timesteps < args.num_envs * args.num_steps or counts[0] * counts[1] % counts[2]:
        raise SystemExit(  # one line, not a ZeroDivisionError or a NaN advantage in a one-sample last minibatch
            "error: need --num-envs, --num-steps, --num-minibatches, --update-epochs >= 1, --total-timesteps"
            " >= --num-envs x --num-steps, and --num-minibatches dividing --num-envs x --num-steps"
        )
    if args.kl_coef < 0 or args.kl_target <= 0 or args.prior_batch_size < 1 or not 0 < args.prior_fraction <= 1:  # LaGO
        raise SystemExit(
            "error: LaGO needs --kl-coef >= 0 (0: vanilla PPO), --kl-target > 0, --prior-batch-size >= 1, "
            "0 < --prior-fraction <= 1"
        )
    if args.residual_policy and (args.kl_coef == 0 or args.prior_fraction < 1):  # LaGO
        raise SystemExit(
            "error: --residual-policy acts with the prior at every state: needs --kl-coef > 0 and --prior-fraction 1"
        )
    args.batch_size = int(args.num_envs * args.num_steps)
    args.minibatch_size = int(args.batch_size // args.num_minibatches)
    args.num_iterations = args.total_timesteps // args.batch_size
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
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
    env_kwargs = {} if args.max_episode_steps is None else {"max_episode_steps": args.max_episode_steps}
    if args.env_id.startswith("CLEVR-Robot"):  # ours: importing envs registers CLEVR-Robot-v0 and -KALM-v0
        from envs.clevr_language import parse_goal_split

        try:
            parse_goal_split(args.goal_split)
        except ValueError as e:
            raise SystemExit(f"error: --goal-split: {e}")
        env_kwargs["goal_split"] = args.goal_split
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, run_name, **env_kwargs) for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "only discrete action space is supported"

    use_prior = args.kl_coef > 0  # LaGO: the prior p(a | s, instruction), loaded (made on the first run) if used
    if use_prior:  # LaGO
        from finetune_prior import PriorError, action_distribution, load_guidance_prior

        try:  # LaGO: loading draws nothing from this run's random streams, so seeds stay paired with vanilla PPO
            prior, prior_path = load_guidance_prior(args.env_id, args.llm, args.prior_path, envs, device, args.cuda)
        except PriorError as e:
            raise SystemExit(f"error: {e}")
        print(f"LaGO prior: {prior_path} (llm {prior.config['llm']}), kl_coef={args.kl_coef} {args.kl_schedule}")

    agent = Agent(envs).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    # ALGO Logic: Storage setup
    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)
    instructions = [None] * args.num_steps  # LaGO: the instruction of each rollout state, which the prior reads
    rollout_prior_logits = torch.zeros((args.num_steps, args.num_envs, envs.single_action_space.n)).to(device)  # LaGO

    # TRY NOT TO MODIFY: start the game
    global_step = 0
    start_time = time.time()
    next_obs, infos = envs.reset(seed=args.seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    kl_coef = args.kl_coef  # LaGO
    prior_rng = np.random.default_rng(args.seed)  # LaGO: draws the states of --prior-fraction (none at 1)
    if use_prior and "instruction" not in infos:  # LaGO
        raise SystemExit(f"error: {args.env_id} gives no info['instruction'], which the prior reads")

    for iteration in range(1, args.num_iterations + 1):
        # Annealing the rate if instructed to do so.
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow
        if args.kl_schedule != "adaptive":  # LaGO
            kl_coef = kl_coef_schedule(args.kl_schedule, args.kl_coef, iteration, args.num_iterations)
        successes = []

        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done
            if use_prior:  # LaGO
                instructions[step] = [str(s) for s in infos["instruction"]]
            step_prior_logits = None  # LaGO: --residual-policy acts with the prior's logits at each step
            if args.residual_policy:
                with torch.no_grad():
                    rollout_prior_logits[step] = step_prior_logits = prior(next_obs, instructions[step]).float()

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value, _ = agent.get_action_and_value(next_obs, prior_logits=step_prior_logits)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            # TRY NOT TO MODIFY: execute the game and log data.
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            next_done = np.logical_or(terminations, truncations)
            truncated = truncations & ~terminations  # a time limit is no failure: bootstrap from the final obs
            if truncated.any():
                with torch.no_grad():
                    final_obs = torch.Tensor(np.stack(infos["final_obs"][truncated])).to(device)
                    reward = reward.copy()
                    reward[truncated] += args.gamma * agent.get_value(final_obs).flatten().cpu().numpy()
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)

            if "final_info" in infos and "episode" in infos["final_info"]:  # gymnasium 1.x: a dict of arrays
                final_info = infos["final_info"]
                for i in np.nonzero(final_info["_episode"])[0]:
                    writer.add_scalar("charts/episodic_return", final_info["episode"]["r"][i], global_step)
                    writer.add_scalar("charts/episodic_length", final_info["episode"]["l"][i], global_step)
                    if "success" in final_info:
                        successes.append(float(final_info["success"][i]))

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        # flatten the batch
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        b_policy_prior = None  # LaGO: the prior's logits that the --residual-policy adds
        if use_prior:  # LaGO: the prior at the rollout states, once, in batches; the update epochs never call it
            prior_inds = np.arange(args.batch_size)  # LaGO: every state, or a random --prior-fraction of them
            if args.prior_fraction < 1:  # (an unbiased estimate of the same mean KL)
                prior_inds = np.sort(
                    prior_rng.permutation(args.batch_size)[: int(np.ceil(args.prior_fraction * args.batch_size))]
                )
            b_instructions = [s for step_instructions in instructions for s in step_instructions]
            chunks = np.split(prior_inds, range(args.prior_batch_size, len(prior_inds), args.prior_batch_size))
            b_prior_logits = rollout_prior_logits.reshape(args.batch_size, -1).clone()  # LaGO: outside inference mode
            if not args.residual_policy:  # (--residual-policy has them from the rollout)
                with torch.inference_mode():
                    prior_logits = [prior(b_obs[inds], [b_instructions[i] for i in inds]) for inds in chunks]
                b_prior_logits[prior_inds] = torch.cat(prior_logits).float()
            b_prior_mask = torch.zeros(args.batch_size, dtype=torch.bool, device=device)  # LaGO: where evaluated
            b_prior_mask[prior_inds] = True
            with torch.no_grad():  # LaGO: the KL of the rollout policy, which the adaptive beta follows
                b_policy_prior = b_prior_logits if args.residual_policy else None
                rollout_dist = agent.get_action_and_value(b_obs, b_actions.long(), b_policy_prior)[4]
                rollout_kl = prior_kl(rollout_dist, action_distribution(b_prior_logits), args.kl_direction)
                rollout_kl = rollout_kl[b_prior_mask].mean()

        # Optimizing the policy and value network
        b_inds = np.arange(args.batch_size)
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            for start in range(0, args.batch_size, args.minibatch_size):
                end = start + args.minibatch_size
                mb_inds = b_inds[start:end]

                mb_prior = None if b_policy_prior is None else b_policy_prior[mb_inds]  # LaGO: --residual-policy
                _, newlogprob, entropy, newvalue, newdist = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions.long()[mb_inds], mb_prior
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
                if use_prior:  # LaGO: pull the policy toward the prior at the rollout states
                    kl = prior_kl(newdist, action_distribution(b_prior_logits[mb_inds]), args.kl_direction)
                    kl = kl[b_prior_mask[mb_inds]]  # LaGO: at the states where the prior was evaluated
                    kl_loss = kl.mean() if len(kl) else kl.sum()
                    loss = loss + kl_coef * kl_loss

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
        if successes:
            writer.add_scalar("charts/success_rate", np.mean(successes), global_step)
        if use_prior:  # LaGO
            writer.add_scalar("losses/prior_kl", rollout_kl.item(), global_step)
            writer.add_scalar("charts/kl_coef", kl_coef, global_step)
            if args.kl_schedule == "adaptive":
                kl_coef = update_adaptive_kl_coef(kl_coef, rollout_kl.item(), args.kl_target)
        sps = int(global_step / (time.time() - start_time))
        eta = (time.time() - start_time) * (args.num_iterations / iteration - 1)
        print(
            f"global_step={global_step}/{args.num_iterations * args.batch_size} SPS={sps} eta={eta / 60:.1f}min"
            + (f" success={np.mean(successes):.2f}" if successes else "")
            + (f" prior_kl={rollout_kl.item():.3f} kl_coef={kl_coef:.3g}" if use_prior else "")  # LaGO
        )
        writer.add_scalar("charts/SPS", sps, global_step)

    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.cleanrl_model"
        torch.save(agent.state_dict(), model_path + ".tmp")
        os.replace(model_path + ".tmp", model_path)  # an interrupted save leaves no half-written model
        print(f"model saved to {model_path}")

    envs.close()
    writer.close()
