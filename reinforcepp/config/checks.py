"""Cross-field rules of the config tree; each problem is a `dotted.path: why` line.

Each check's docstring states its rules in words, one paragraph per rule: docs/config.md lists them
(`python -m reinforcepp.config.reference > docs/config.md`). A new check goes into CHECKS or WARNINGS."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reinforcepp.algos import GROUP_ESTIMATORS

if TYPE_CHECKING:
    from reinforcepp.config.schema import Config


def cross_field_problems(cfg: Config) -> list[str]:
    """Every rule the config breaks, all at once."""
    return [problem for check in CHECKS for problem in check(cfg)]


def cross_field_warnings(cfg: Config) -> list[str]:
    return [message for check in WARNINGS for message in check(cfg)]


def _kl_estimator_in_reward(cfg: Config) -> list[str]:
    """`algo.kl.estimator` other than k1 with `algo.kl.placement=reward` (and `algo.kl.coef` > 0): a detached
    KL penalty in the reward is an unbiased gradient of KL(pi||ref) only for k1."""
    kl = cfg.algo.kl
    if kl.applied_to == "reward" and kl.estimator != "k1":
        return [
            f"algo.kl.estimator: {kl.estimator!r} with algo.kl.placement='reward': a detached KL "
            "penalty in the reward is an unbiased gradient of KL(pi||ref) only for k1; "
            "use k1 in the reward, or move k2/k3 to the loss"
        ]
    return []


def _group_sampling(cfg: Config) -> list[str]:
    """`rollout.n_samples_per_prompt` must be at least 2 with a group estimator (`algo.advantage.estimator`
    grpo, dr_grpo, rloo or reinforce_pp_baseline): it compares the samples of one prompt."""
    estimator, n = cfg.algo.advantage.estimator, cfg.rollout.n_samples_per_prompt
    if estimator in GROUP_ESTIMATORS and n < 2:
        return [
            f"rollout.n_samples_per_prompt: algo.advantage.estimator={estimator!r} needs at least 2 "
            f"samples per prompt (got {n}): it compares samples of one prompt; "
            "with 1 sample every advantage is 0"
        ]
    return []


def _batch_divisibility(cfg: Config) -> list[str]:
    """`train.batch_size` (samples) must divide `rollout.batch_size` (prompts) x `rollout.n_samples_per_prompt`,
    the samples of one RL step.

    `train.micro_batch_size` must divide `train.batch_size`; `sft.micro_batch_size` must divide
    `sft.batch_size`, and `rm.micro_batch_size` must divide `rm.batch_size`."""
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
    """`algo.kl.estimator=k1` with `algo.kl.placement=loss` (and `algo.kl.coef` > 0) is refused unless
    `algo.kl.unbiased_gradient` is set: its expected gradient is 0, so the KL term would do nothing; use k2 or
    k3 in the loss, the unbiased gradient, or k1 in the reward.

    `algo.kl.unbiased_gradient` needs the KL in the loss (`algo.kl.placement=loss`, `algo.kl.coef` > 0): it
    changes only the gradient of the KL loss term."""
    kl = cfg.algo.kl
    if kl.unbiased_gradient and kl.applied_to != "loss":
        return [
            "algo.kl.unbiased_gradient: only changes the gradient of the KL as a loss (algo.kl.placement='loss' "
            f"with algo.kl.coef > 0; got placement={kl.placement!r}, coef={kl.coef}); the KL in the reward is "
            "already detached"
        ]
    if kl.applied_to == "loss" and kl.estimator == "k1" and not kl.unbiased_gradient:
        return [
            "algo.kl.estimator: 'k1' with algo.kl.placement='loss' has zero expected gradient "
            "(E_pi[grad log pi] = 0), so the KL term silently does nothing; use k2 (an unbiased "
            "gradient of KL(pi||ref)) or k3 as a loss, set algo.kl.unbiased_gradient=true, or put k1 in the "
            "reward (algo.kl.placement=reward)"
        ]
    return []


def _rollout_correction(cfg: Config) -> list[str]:
    """`algo.loss.tis_cap` needs `train.old_logprobs` recompute or auto: with rollout, log pi_old is the
    sampler's own log-prob and the correction pi_old / pi_rollout is always 1."""
    if cfg.algo.loss.tis_cap is not None and cfg.train.old_logprobs == "rollout":
        return [
            "algo.loss.tis_cap: with train.old_logprobs='rollout' log pi_old is the sampler's own log-prob, so "
            "the correction pi_old / pi_rollout is always 1; use train.old_logprobs=recompute (or auto)"
        ]
    return []


def _adaptive_kl(cfg: Config) -> list[str]:
    """`algo.kl.target` (the adaptive coefficient) needs `algo.kl.coef` > 0, its starting value;
    `algo.kl.horizon` is only used with `algo.kl.target`."""
    kl = cfg.algo.kl
    if kl.target is not None and kl.coef == 0:
        return ["algo.kl.target: an adaptive KL coefficient multiplies algo.kl.coef, which is 0 (no KL term, no "
                "reference); set algo.kl.coef > 0 as the starting value, or remove algo.kl.target"]
    if kl.target is None and kl.horizon != type(kl).model_fields["horizon"].default:
        return ["algo.kl.horizon: only used by the adaptive KL coefficient; set algo.kl.target, or remove it"]
    return []


def _filter_groups(cfg: Config) -> list[str]:
    """`algo.filter_groups` needs a group-baseline estimator and `rollout.n_samples_per_prompt` >= 2;
    `algo.filter_max_rounds` is only used with it."""
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
    """`critic.enabled` must be true exactly when `algo.advantage.estimator=gae`: only GAE reads a value model."""
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
    """`model.reference_dtype` other than auto needs a reference, so `algo.kl.coef` > 0.

    `model.reference_dtype=float32` with `model.dtype=bfloat16` is refused: twice the policy's memory, and still
    not the policy's numerics."""
    m = cfg.model
    if m.reference_dtype == "auto":
        return []
    if cfg.algo.kl.applied_to is None:
        return [f"model.reference_dtype: {m.reference_dtype!r}, but algo.kl.coef = 0 loads no reference; remove it"]
    if m.reference_dtype == "float32" and m.dtype == "bfloat16":
        return [
            "model.reference_dtype: 'float32' with model.dtype='bfloat16' takes twice the policy's memory and still "
            "does not compute as the bfloat16 policy (the KL is not 0 at step 0); use 'auto' (the policy's dtype)"
        ]
    return []


def _lora(cfg: Config) -> list[str]:
    """`model.lora.dropout` must be 0: RL runs the policy in eval mode, where dropout never applies.

    With `model.lora` and no `model.reference`, `model.reference_dtype` must stay auto (when `algo.kl.coef` > 0):
    the reference is the policy's own base weights with the adapters off, in the policy's dtype."""
    m = cfg.model
    if m.lora is None:
        return []
    problems = []
    if m.lora.dropout > 0:
        problems.append(
            f"model.lora.dropout: {m.lora.dropout}, but RL runs the policy in eval mode (the model that is updated "
            "is the one that sampled), where dropout never applies; leave it at 0"
        )
    if m.reference is None and m.reference_dtype != "auto" and cfg.algo.kl.applied_to is not None:
        problems.append(
            f"model.reference_dtype: {m.reference_dtype!r}, but with model.lora and no model.reference the "
            "reference is the policy's own base weights with the adapters off (no second copy), in the policy's "
            "dtype; remove it, or set model.reference to load a separate reference"
        )
    return problems


def _unused_settings(cfg: Config) -> list[str]:
    """`algo.advantage.lam` other than 1.0 needs `algo.advantage.estimator=gae`.

    `reward.mean` / `reward.std` other than 0 / 1 need `reward.normalize=fixed`.

    `reward.overlong_buffer` and `rollout.min_new_tokens` may not exceed `rollout.max_new_tokens`.

    `reward.normalize=model` needs `model.reward_model`.

    The largest of `eval.ks` may not exceed `eval.samples_per_prompt` (when that is > 0); `eval.greedy=false`
    needs `eval.samples_per_prompt` > 0.

    `train.eval_every` > 0 needs `data.eval_prompts`.

    `algo.loss.token_norm` needs `algo.loss.agg=seq-mean-token-sum-norm`."""
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


# The order of the problems in an error; the reference lists the rules in this order too.
CHECKS = (_group_sampling, _batch_divisibility, _kl_placement, _adaptive_kl, _filter_groups, _rollout_correction,
          _critic_usage, _reference_dtype, _lora, _unused_settings)
WARNINGS = (_kl_estimator_in_reward,)
