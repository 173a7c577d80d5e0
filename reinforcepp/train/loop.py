"""The training loop, read top to bottom like the paper's Algorithm 1."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import torch

from reinforcepp.algos import compute_advantages, kl_estimate, sequence_mean_kl, truncation_mask
from reinforcepp.config import Config
from reinforcepp.eval import eval_metrics, run_eval_suite
from reinforcepp.rollout import Rollout, RowStreams, SamplingParams, TorchEngine

from . import dist, sharding
from .dynamic_sampling import Samples, fill_with_informative_groups
from .experience import Experience, gather_experience
from .forward import autocast_dtype, critic_values, policy_logprobs
from .metrics import open_metrics_log
from .numerics import DriftWarnings, check_weights, to_float32
from .run import Run, build_run
from .samples import log_samples
from .scoring import RewardPipeline
from .state import refuse_to_overwrite, restore_state, save_final, save_state
from .stats import step_metrics
from .update import rank_micro_batches, shuffled_orders, single_pass, update_actor, update_critic

log = logging.getLogger(__name__)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The randomness of one RL step (sampling, shuffling) depends only on (seed, step), so a resumed
    run draws exactly what an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


@contextmanager
def timed(timings: dict[str, float], name: str):
    """Add the block's seconds to timings["timing/<name>"] (summed over algo.filter_groups' rounds)."""
    start = time.perf_counter()
    yield
    key = f"timing/{name}"
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


def train(cfg: Config, *, on_step_end: Callable[[int, dict[str, float]], None] | None = None) -> Path:
    """Run REINFORCE++ (or the preset's algorithm) for cfg.train.num_steps RL steps; returns the
    directory of the final Hugging Face model."""
    run = build_run(cfg)
    if cfg.ckpt.resume:
        start = restore_state(run)
    else:
        refuse_to_overwrite(run)
        start = 0
    run.metrics = open_metrics_log(cfg, start)
    n, algo = cfg.rollout.n_samples_per_prompt, cfg.algo
    pipeline = RewardPipeline(run.scorer, run.reward_transform, cfg.reward, cfg.rollout.max_new_tokens)
    drift = DriftWarnings()
    try:
        if start == 0 and cfg.train.eval_every and cfg.eval.before_training:
            run.metrics.log_eval(0, evaluate(run))  # the starting policy: step 0 of every curve
        for step in range(start + 1, cfg.train.num_steps + 1):
            timings: dict[str, float] = {}
            generator = step_generator(cfg.seed, step)
            step_start, collectives_start = time.perf_counter(), dist.collective_seconds()
            kl_in_reward = algo.kl.applied_to == "reward"
            source = old_logp_source(run, kl_in_reward, cfg.rollout.batch_size * n)
            # 1-3. Sample prompts, roll out n responses each with the current (old) policy and score them into R
            #      (train/scoring.py: the whole path from the reward function to R; ReMax also scores a greedy
            #      response per prompt, its baseline, the same way); with algo.filter_groups, rounds until the
            #      batch is made of groups whose rewards differ (DAPO).
            samples = roll_out(run, pipeline, step, 0, source, timings)
            filter_metrics = {}
            if algo.filter_groups:
                samples, filter_metrics = fill_with_informative_groups(
                    samples, lambda k: roll_out(run, pipeline, step, k, source, timings), cfg, step)
            prompt_indices, exp, finished = samples.prompt_indices, samples.exp, samples.finished
            with timed(timings, "reward"):
                scores = pipeline.finish(samples.rewards, n, step)
            response_lengths = exp.response_mask.sum(dim=1)  # before any row or token leaves the loss
            exp.keep_rows(scores.kept)  # samples the reward skipped (ReMax: or whose baseline it skipped) leave
            if algo.mask_truncated:  # DAPO overlong filtering: out of the loss and the whitening, still in baselines
                exp.response_mask = truncation_mask(exp.response_mask, finished)
                check_all_truncated(exp.response_mask, step)
            # 4. Experience: log pi_old, log pi_ref, values and the per-token KL over the global batch, each rank
            #    computing the rows of its share of the update's first-epoch micro-batches.
            with timed(timings, "experience"):
                # the update's shuffles, drawn first: these passes then batch rows as its first epoch does
                actor_orders = shuffled_orders(cfg, len(scores.rewards), generator)
                critic_orders = shuffled_orders(cfg, len(scores.rewards), generator) if run.critic is not None else None
                exp = make_experience(run, exp, source, policy_order=actor_orders[0],
                                      critic_order=None if critic_orders is None else critic_orders[0])
                kl = kl_estimate(exp.old_logp, exp.ref_logp, algo.kl.estimator, clamp=algo.kl.clamp) if kl_in_reward else None
                kl_coef = run.kl_controller.coef  # this step's beta (algo.kl.target: adapted after each step)
                # 5. Advantages (REINFORCE++: token returns, then the global batch z-score).
                advantages, returns = compute_advantages(
                    algo.advantage.estimator, rewards=scores.rewards, mask=exp.response_mask, group_size=n,
                    kl=kl, kl_coef=kl_coef if kl_in_reward else 0.0, gamma=algo.advantage.gamma,
                    lam=algo.advantage.lam, values=exp.values, greedy_rewards=scores.greedy,
                )
                exp.advantages = to_float32(advantages, f"step {step}: advantages")
                exp.returns = to_float32(returns, f"step {step}: returns")
            # 6. Update: PPO-clip epochs over shuffled mini-batches (and the critic for PPO).
            with timed(timings, "update"):
                stats = update_actor(run.actor, exp, cfg, actor_orders, step=step, kl_coef=kl_coef)
                if run.critic is not None:
                    stats |= update_critic(run.critic, exp, cfg, critic_orders, step=step)
                check_weights({"policy": run.policy, "critic": run.critic and run.critic.model}, step)
            timings["timing/step"] = time.perf_counter() - step_start
            if dist.initialized():
                timings["timing/collectives"] = dist.collective_seconds() - collectives_start
            # 7. Adapt beta to this step's KL (algo.kl.target); log, evaluate, checkpoint.
            if exp.ref_logp is not None:
                run.kl_controller.observe(float(sequence_mean_kl(exp.old_logp, exp.ref_logp, exp.response_mask,
                                                                 algo.kl.estimator, clamp=algo.kl.clamp)))
                stats["kl/coef"] = kl_coef
            if algo.mask_truncated:
                stats["rollout/masked_truncated"] = float((~finished).sum())
            metrics = step_metrics(run, exp, scores.raw, finished, n, stats | filter_metrics, timings,
                                   lengths=response_lengths) | scores.metrics()
            if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or step == cfg.train.num_steps):
                metrics |= evaluate(run)
            log_samples(run, step, prompt_indices, exp, scores.raw, finished, response_lengths)
            run.metrics.log(step, metrics)  # and report.html after an evaluation
            drift.check(cfg, step, metrics)
            if cfg.log.prompt_rewards:
                run.metrics.log_prompt_rewards(step, prompt_indices, scores.raw)
            if cfg.ckpt.every and step % cfg.ckpt.every == 0 and step < cfg.train.num_steps:
                save_state(run, step)
            if on_step_end is not None:
                on_step_end(step, metrics)
        final = save_final(run)
        run.metrics.write_report()
        return final
    finally:
        run.metrics.close()


def roll_out(run: Run, pipeline: RewardPipeline, step: int, round_index: int, source: str,
             timings: dict[str, float]) -> Samples:
    """One round: the next rollout.batch_size prompts (the same on every rank; each rank takes its block of whole
    groups), n responses each, scored; returned with every rank's rows. Each row's randomness comes from (seed,
    step, global prompt position + round * rollout.batch_size, sample), so any number of ranks samples the same."""
    cfg, n = run.cfg, run.cfg.rollout.n_samples_per_prompt
    prompt_indices, prompts = run.next_prompts()
    mine = dist.shard_range(len(prompts))
    local = [prompts[i] for i in mine]
    with timed(timings, "rollout"):
        refresh_sampler(run)
        streams = RowStreams.for_prompts(cfg.seed, step, torch.tensor(list(mine)) + round_index * len(prompts), n)
        rollout = run.engine.generate([p.token_ids for p in local], run.sampling, n, streams)
    with timed(timings, "reward"):
        greedy = greedy_rollout(run, local) if cfg.algo.advantage.estimator == "remax" else None
        rewards = pipeline.score_round(local, rollout, n, greedy=greedy)
    with timed(timings, "experience"):
        exp = Experience.from_rollout(rollout)
        if source == "rollout":
            exp.old_logp = rollout.logprobs.float() * exp.response_mask
        if cfg.algo.loss.tis_cap is not None:  # the sampler's log-probs, for the rollout correction
            exp.rollout_logp = rollout.logprobs.float() * exp.response_mask
        exp = gather_experience(exp)
        finished = dist.gather_rows(rollout.finished)
    return Samples(prompt_indices, exp, rewards, finished)


def check_all_truncated(response_mask: torch.Tensor, step: int) -> None:
    """algo.mask_truncated on a step whose responses were all cut: nothing is left to learn from (the loss is
    0, its normalizer clamped to 1, as TRL); said once per such step rather than passed over."""
    if not bool(response_mask.any()):
        log.warning("step %d: every response hit rollout.max_new_tokens without EOS; algo.mask_truncated leaves "
                    "no token in the loss", step)


def old_logp_source(run: Run, kl_in_reward: bool, num_sequences: int) -> str:
    """Where log pi_old comes from: "rollout" (the sampler's log-probs), "forward" (a no-grad pass here) or
    "update" (the update's own forward: one epoch of one mini-batch, and no KL in the reward to compute first).
    "forward" and "update" run the update's numerics (train.autocast), so the first mini-batch's ratio is 1."""
    source = run.cfg.train.old_logprobs
    if source == "auto":
        source = "rollout" if sampler_matches_update(run) else "recompute"
    if source == "rollout":
        return "rollout"
    return "forward" if kl_in_reward or not single_pass(run.cfg, num_sequences) else "update"


def sampler_matches_update(run: Run) -> bool:
    """The sampler's log-probs are the update's (to float rounding): the in-process engine runs the policy
    itself, in float32, and the update does not autocast (the sampler never does)."""
    weight = next(run.policy.parameters())
    same_model = isinstance(run.engine, TorchEngine) and run.engine.model is run.policy
    no_autocast = autocast_dtype(run.cfg.train.autocast, weight.device) is None
    return same_model and weight.dtype == torch.float32 and no_autocast


@torch.no_grad()
def make_experience(run: Run, exp: Experience, old_logp: str = "forward", *, policy_order: torch.Tensor | None = None,
                    critic_order: torch.Tensor | None = None) -> Experience:
    """Forward passes without gradients over the global batch: log pi_old when ``old_logp`` is "forward" (see
    :func:`old_logp_source`; "rollout" set it already, "update" leaves it to the update), log pi_ref, values.

    Each pass computes as the update's first epoch does: the same autocast, and the same micro-batches (rows in
    ``policy_order`` / ``critic_order``, the update's first shuffle, else in row order; under torchrun each rank
    its share of them), since a row's numbers depend on its batch's padded shape. So, with deterministic kernels,
    the first mini-batch's PPO ratio is exactly 1, and a reference in the policy's dtype
    (model.reference_dtype=auto), or the LoRA policy with its adapters off, gives log pi_ref = log pi_old at step 0.
    """
    temperature, autocast = run.cfg.rollout.temperature, run.cfg.train.autocast

    def logprobs(model: torch.nn.Module) -> Callable[[Experience], torch.Tensor]:
        return lambda mb: policy_logprobs(model, mb, temperature, autocast=autocast,
                                          shared_prefix=run.cfg.train.shared_prefix)[0]

    if old_logp == "forward":
        exp.old_logp = _in_micro_batches(logprobs(run.policy), exp, policy_order, run.cfg)
    if run.reference is not None:
        with run.reference.computing():  # LoRA: the policy with its adapters off
            exp.ref_logp = _in_micro_batches(logprobs(run.reference.model), exp, policy_order, run.cfg)
    if run.critic is not None:
        exp.values = _in_micro_batches(lambda mb: critic_values(run.critic.model, mb, autocast=autocast), exp,
                                       critic_order, run.cfg)
    for model in (run.policy, run.reference and run.reference.own_model, run.critic and run.critic.model):
        sharding.reshard(model)
    return exp


def _in_micro_batches(fn: Callable[[Experience], torch.Tensor], exp: Experience, order: torch.Tensor | None,
                      cfg: Config) -> torch.Tensor:
    """Apply a [b, t] -> [b, t] forward to this rank's micro-batches of the update's mini-batches in ``order``
    (trimmed of padding) and reassemble [B, T] on CPU, every rank's rows on every rank."""
    B, T = exp.response_ids.shape
    order = torch.arange(B) if order is None else order
    out = torch.zeros(B, T, dtype=torch.float32)
    for mini_batch in order.split(cfg.train.batch_size):
        for rows in rank_micro_batches(mini_batch, cfg.train.micro_batch_size):
            part = fn(exp.rows(rows)).float().cpu()
            out[rows, : part.shape[1]] = part
    return dist.global_sum(out * exp.response_mask)  # each row was computed by one rank, zeros elsewhere: exact


def greedy_rollout(run: Run, prompts) -> Rollout:
    """ReMax's baseline responses: one greedy response to each prompt (the reward pipeline scores them)."""
    params = SamplingParams(
        max_new_tokens=run.sampling.max_new_tokens, greedy=True, stop_strings=run.sampling.stop_strings
    )
    return run.engine.generate([p.token_ids for p in prompts], params, 1)


def refresh_sampler(run: Run) -> None:
    """Under torchrun, give the sampler's replica the policy's current weights: once per optimizer step
    count, so an evaluation and the next step's rollout share one gather (every rank takes the same branch)."""
    version = run.actor.scheduler.last_epoch
    if run.sharded and run.replica_version != version:
        sharding.sync_replica(run.engine.model, run.policy)
        run.replica_version = version


def evaluate(run: Run) -> dict[str, float]:
    """The configured evaluation (greedy; sampled pass@k) on the held-out prompts, and on the first
    ``eval.train_prompts`` training prompts (prefix eval_train/: the gap shows overfitting).
    Under torchrun rank 0 evaluates alone, on the sampler's replica synced here; the others return {}."""
    cfg = run.cfg
    refresh_sampler(run)
    if not dist.is_main():
        return {}
    metrics = eval_metrics(cfg, run_eval_suite(cfg, run.engine, run.scorer, run.eval_prompts), run.eval_prompts)
    if cfg.eval.train_prompts:
        seen = run.prompts[: cfg.eval.train_prompts]
        metrics |= eval_metrics(cfg, run_eval_suite(cfg, run.engine, run.scorer, seen), seen, prefix="eval_train")
    return metrics
