"""Cross-field rules of the config tree; each problem is a `dotted.path: why` line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reinforcepp.algos import GROUP_ESTIMATORS

if TYPE_CHECKING:
    from reinforcepp.config.schema import Config


def cross_field_problems(cfg: Config) -> list[str]:
    """Every rule the config breaks, all at once."""
    return [
        *_group_sampling(cfg),
        *_batch_divisibility(cfg),
        *_kl_placement(cfg),
        *_adaptive_kl(cfg),
        *_filter_groups(cfg),
        *_critic_usage(cfg),
        *_reference_dtype(cfg),
        *_lora(cfg),
        *_unused_settings(cfg),
    ]


def cross_field_warnings(cfg: Config) -> list[str]:
    kl = cfg.algo.kl
    if kl.coef > 0 and kl.placement == "reward" and kl.estimator != "k1":
        return [
            f"algo.kl.estimator: {kl.estimator!r} with algo.kl.placement='reward': a detached KL "
            "penalty in the reward is an unbiased gradient of KL(pi||ref) only for k1; "
            "use k1 in the reward, or move k2/k3 to the loss"
        ]
    return []


def _group_sampling(cfg: Config) -> list[str]:
    estimator, n = cfg.algo.advantage.estimator, cfg.rollout.n_samples_per_prompt
    if estimator in GROUP_ESTIMATORS and n < 2:
        return [
            f"rollout.n_samples_per_prompt: algo.advantage.estimator={estimator!r} needs at least 2 "
            f"samples per prompt (got {n}): it compares samples of one prompt; "
            "with 1 sample every advantage is 0"
        ]
    return []


def _batch_divisibility(cfg: Config) -> list[str]:
    problems = []
    prompts, n = cfg.rollout.batch_size, cfg.rollout.n_samples_per_prompt
    train, micro = cfg.train.batch_size, cfg.train.micro_batch_size
    if (prompts * n) % train:
        problems.append(
            f"train.batch_size: rollout.batch_size * rollout.n_samples_per_prompt = {prompts} * {n} "
            f"= {prompts * n} samples per RL step is not divisible by train.batch_size = {train}"
        )
    for stage in ("sft", "rm"):
        section = getattr(cfg, stage)
        if section.batch_size % section.micro_batch_size:
            problems.append(
                f"{stage}.micro_batch_size: {stage}.batch_size = {section.batch_size} is not divisible by "
                f"{stage}.micro_batch_size = {section.micro_batch_size}"
            )
    if train % micro:
        problems.append(
            f"train.micro_batch_size: train.batch_size = {train} is not divisible by "
            f"train.micro_batch_size = {micro}"
        )
    return problems


def _kl_placement(cfg: Config) -> list[str]:
    kl = cfg.algo.kl
    if kl.coef > 0 and kl.placement == "loss" and kl.estimator == "k1":
        return [
            "algo.kl.estimator: 'k1' with algo.kl.placement='loss' has zero expected gradient "
            "(E_pi[grad log pi] = 0), so the KL term silently does nothing; use k2 (an unbiased "
            "gradient of KL(pi||ref)) or k3 as a loss, or put k1 in the reward (algo.kl.placement=reward)"
        ]
    return []


def _adaptive_kl(cfg: Config) -> list[str]:
    kl = cfg.algo.kl
    if kl.target is not None and kl.coef == 0:
        return ["algo.kl.target: an adaptive KL coefficient multiplies algo.kl.coef, which is 0 (no KL term, no "
                "reference); set algo.kl.coef > 0 as the starting value, or remove algo.kl.target"]
    if kl.target is None and kl.horizon != type(kl).model_fields["horizon"].default:
        return ["algo.kl.horizon: only used by the adaptive KL coefficient; set algo.kl.target, or remove it"]
    return []


def _filter_groups(cfg: Config) -> list[str]:
    algo, n = cfg.algo, cfg.rollout.n_samples_per_prompt
    if not algo.filter_groups:
        if algo.filter_max_rounds != type(algo).model_fields["filter_max_rounds"].default:
            return ["algo.filter_max_rounds: only used by algo.filter_groups=true; set it, or remove this"]
        return []
    estimator = algo.advantage.estimator
    if estimator not in GROUP_ESTIMATORS:
        return [f"algo.filter_groups: only a group baseline gives an all-equal group zero advantage; "
                f"algo.advantage.estimator={estimator!r} is not one (use one of {sorted(GROUP_ESTIMATORS)})"]
    if n < 2:
        return [f"algo.filter_groups: needs rollout.n_samples_per_prompt >= 2 (got {n}): a group of one sample "
                "always has equal rewards"]
    return []


def _critic_usage(cfg: Config) -> list[str]:
    estimator, enabled = cfg.algo.advantage.estimator, cfg.critic.enabled
    if estimator == "gae" and not enabled:
        return ["critic.enabled: algo.advantage.estimator='gae' needs a value model; set critic.enabled=true"]
    if enabled and estimator != "gae":
        return [
            f"critic.enabled: true, but algo.advantage.estimator={estimator!r} never reads a critic "
            "(only 'gae' does); set critic.enabled=false or use gae"
        ]
    return []


def _reference_dtype(cfg: Config) -> list[str]:
    m = cfg.model
    if m.reference_dtype == "auto":
        return []
    if cfg.algo.kl.coef == 0:
        return [f"model.reference_dtype: {m.reference_dtype!r}, but algo.kl.coef = 0 loads no reference; remove it"]
    if m.reference_dtype == "float32" and m.dtype == "bfloat16":
        return [
            "model.reference_dtype: 'float32' with model.dtype='bfloat16' takes twice the policy's memory and still "
            "does not compute as the bfloat16 policy (the KL is not 0 at step 0); use 'auto' (the policy's dtype)"
        ]
    return []


def _lora(cfg: Config) -> list[str]:
    m = cfg.model
    if m.lora is None:
        return []
    problems = []
    if m.lora.dropout > 0:
        problems.append(
            f"model.lora.dropout: {m.lora.dropout}, but RL runs the policy in eval mode (the model that is updated "
            "is the one that sampled), where dropout never applies; leave it at 0"
        )
    if m.reference is None and m.reference_dtype != "auto" and cfg.algo.kl.coef > 0:
        problems.append(
            f"model.reference_dtype: {m.reference_dtype!r}, but with model.lora and no model.reference the "
            "reference is the policy's own base weights with the adapters off (no second copy), in the policy's "
            "dtype; remove it, or set model.reference to load a separate reference"
        )
    return problems


def _unused_settings(cfg: Config) -> list[str]:
    # A setting that nothing reads is a mistake the user should hear about.
    problems = []
    advantage, loss = cfg.algo.advantage, cfg.algo.loss
    if advantage.lam != 1.0 and advantage.estimator != "gae":
        problems.append(
            f"algo.advantage.lam: {advantage.lam} only applies to algo.advantage.estimator='gae' "
            f"(got {advantage.estimator!r}); leave it at 1.0"
        )
    reward = cfg.reward
    if reward.normalize != "fixed" and (reward.mean != 0.0 or reward.std != 1.0):
        problems.append(
            f"reward.mean/reward.std: only used by reward.normalize='fixed' (got {reward.normalize!r})"
        )
    if reward.overlong_buffer is not None and reward.overlong_buffer > cfg.rollout.max_new_tokens:
        problems.append(
            f"reward.overlong_buffer: {reward.overlong_buffer} is longer than rollout.max_new_tokens = "
            f"{cfg.rollout.max_new_tokens}"
        )
    if cfg.rollout.min_new_tokens > cfg.rollout.max_new_tokens:
        problems.append(
            f"rollout.min_new_tokens: {cfg.rollout.min_new_tokens} is more than rollout.max_new_tokens = "
            f"{cfg.rollout.max_new_tokens}"
        )
    if reward.normalize == "model" and cfg.model.reward_model is None:
        problems.append("reward.normalize: 'model' uses a reward model's stored mean/std; set model.reward_model")
    ev = cfg.eval
    if ev.samples_per_prompt and max(ev.ks) > ev.samples_per_prompt:
        problems.append(
            f"eval.ks: pass@{max(ev.ks)} needs at least that many samples; "
            f"eval.samples_per_prompt = {ev.samples_per_prompt}"
        )
    if not ev.greedy and not ev.samples_per_prompt:
        problems.append("eval.greedy: false with eval.samples_per_prompt = 0 leaves nothing to evaluate")
    if cfg.train.eval_every and cfg.data.eval_prompts is None:
        problems.append("train.eval_every: evaluation needs held-out prompts; set data.eval_prompts")
    if loss.token_norm is not None and loss.agg != "seq-mean-token-sum-norm":
        problems.append(
            f"algo.loss.token_norm: {loss.token_norm} is only used by "
            f"algo.loss.agg='seq-mean-token-sum-norm' (got {loss.agg!r}); remove it or change the agg"
        )
    return problems
