"""The typed config tree. Defaults are the REINFORCE++ paper's (arXiv 2501.03262) and live only here."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from reinforcepp.algos import AGGREGATIONS, ESTIMATORS, KL_ESTIMATORS, RATIO_LEVELS
from reinforcepp.config.checks import cross_field_problems, cross_field_warnings
from reinforcepp.config.errors import ConfigError, ConfigWarning, config_error_from
from reinforcepp.rewards.function import function_name

Fraction = Annotated[float, Field(ge=0, le=1)]
AdamBeta = Annotated[float, Field(ge=0, lt=1)]


class _Section(BaseModel):
    # Unknown keys are typos, and assignments must pass the same checks as loading.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoRAConfig(_Section):
    """LoRA adapters on the policy (peft): only the adapters train; the frozen base weights are the KL reference."""

    rank: PositiveInt = Field(16, description="Rank r of each adapter (B @ A, A: r x in, B: out x r).")
    alpha: PositiveFloat = Field(32.0, description="Scale numerator: the adapter adds (alpha / rank) * B @ A x.")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout on the adapters' input. Must stay 0: RL runs the policy in eval mode "
        "(the model that is updated is the one that sampled), where dropout never applies.",
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="Modules that get adapters: 'all-linear' = every linear layer but the LM head (the default of "
        "TRL, verl and OpenRLHF; for Llama/Qwen: q/k/v/o_proj and gate/up/down_proj), or a list of module names "
        "(peft matches a name against the end of each module's path), e.g. [q_proj, v_proj].",
    )

    @field_validator("target_modules", mode="plain")
    @classmethod
    def _all_linear_or_names(cls, value: Any) -> str | list[str]:
        # One plain check: a union would report a bad value once per member type.
        if value == "all-linear":
            return value
        if isinstance(value, list) and value and all(isinstance(name, str) and name for name in value):
            return value
        raise ValueError("expected 'all-linear' or a non-empty list of module names, e.g. [q_proj, v_proj]")


class ModelConfig(_Section):
    policy: str = Field("", description="Policy model: HF hub id or local directory.")
    reference: str | None = Field(None, description="Reference model for the KL term; None = the policy.")
    critic: str | None = Field(None, description="Critic initialisation; None = the policy.")
    reward_model: str | None = Field(None, description="Reward model: HF hub id or local directory.")
    gguf_file: str | None = Field(None, description="GGUF file inside the policy repo/dir to load from.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights dtype of the policy and critic (auto = float32: master weights, see train.autocast) "
        "and of the reward model (auto = float32 on CPU, bfloat16 on GPU).",
    )
    reference_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights dtype of the KL reference. auto = the policy's, run under the same train.autocast: "
        "it computes exactly as the policy, so the KL is 0 at step 0. 'bfloat16' with a float32 policy halves "
        "the reference's memory, but its forward (norms and residuals in bf16) is not the policy's: the KL is "
        "then not exactly 0 at step 0.",
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the hub.")
    lora: LoRAConfig | None = Field(
        None,
        description="Train LoRA adapters instead of every policy weight (needs peft: pip install "
        "'reinforcepp[lora]'); None = full fine-tuning. Without model.reference the KL reference is the policy "
        "with its adapters off (no second copy); PPO's critic is a separate model, trained in full. The final "
        "export writes the merged model to final/ and the adapter to final/adapter/.",
    )


class DataConfig(_Section):
    prompts: str | None = Field(
        None, description="Prompt dataset: a JSONL or Parquet file, a directory saved with save_to_disk (DIR:SPLIT), "
        "or what datasets.load_dataset takes: a hub id or local dataset directory as NAME, NAME:SPLIT or "
        "NAME/CONFIG:SPLIT (a hub id's config is its third part: openai/gsm8k/main:train); the split may be left "
        "out when there is one.",
    )
    prompt_key: str = Field(
        "prompt", description="Column holding the prompt: a string, or TRL's conversational format (a list of "
        "{role, content} messages, rendered with the tokenizer's chat template; completions then reach the reward "
        "function as [{role: assistant, content}]).",
    )
    label_key: str = Field("label", description="Column holding the reference answer for rule rewards.")
    max_prompt_len: PositiveInt = Field(
        1024, description="Prompts longer than this many tokens are skipped (and counted), never cut."
    )
    apply_chat_template: bool = Field(
        True, description="Wrap plain prompts in the tokenizer's chat template (as one user turn) when it has one; "
        "conversational prompts always need it.",
    )
    eval_prompts: str | None = Field(None, description="Held-out prompts for evaluation; None = no eval.")
    max_prompts: PositiveInt | None = Field(
        None, description="Train on only the first N prompts (small-prompt-set studies); None = all."
    )
    shuffle: bool = Field(
        True, description="Serve prompts in a fresh seeded order each epoch; false = file order (benchmarks)."
    )


class RolloutConfig(_Section):
    batch_size: PositiveInt = Field(
        256, description="Prompts (not samples) per RL step; the step samples rollout.batch_size x "
        "rollout.n_samples_per_prompt completions.",
    )
    n_samples_per_prompt: PositiveInt = Field(1, description="Completions sampled per prompt.")
    max_new_tokens: PositiveInt = Field(1024, description="Generation length limit, in tokens per completion.")
    min_new_tokens: NonNegativeInt = Field(
        0, description="EOS cannot be sampled before this many response tokens (vLLM's min_tokens, HF's "
        "min_new_tokens); the trainer still scores tokens with the unmasked policy, as TRL and OpenRLHF do."
    )
    temperature: PositiveFloat = Field(1.0, description="Sampling temperature.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass; 1 = off.")
    top_k: int = Field(0, ge=0, description="Top-k sampling; 0 = off.")
    engine: Literal["torch", "vllm"] = Field("torch", description="Generation backend.")
    stop_strings: list[str] = Field(default_factory=list, description="A response stops at any of these.")
    max_batch_tokens: PositiveInt | None = Field(
        None, description="Bound on the torch engine's KV cache, in token slots (one slot: one position of one "
        "sequence): the prompts are sampled in consecutive chunks whose sequences x (longest prompt + "
        "max_new_tokens) fit it; a prompt's samples are never split, so a chunk holds at least one prompt. "
        "The run stays reproducible, but its samples differ from an unchunked run's (the chunks draw from the "
        "step's generator in turn). None = all prompts at once.",
    )
    compile: bool = Field(
        False, description="torch.compile the torch engine's decode step (Llama-family fast path; one whole graph "
        "with symbolic sizes: one compilation per model shape and process serves every batch size and length), "
        "with the QKV and gate-up projections fused (weights concatenated at each rollout from the current "
        "ones: during a rollout, a copy of those weights, ~2/3 of a Llama's layer weights). Same samples, "
        "log-probs equal to float rounding. On this project's 2-core CPU (DECODE_RESULTS in "
        "docs/performance.md): decode step 0.93x of eager on the 4M tiny model at 128 rows, 0.99x at the "
        "SmolLM2-135M shape at 16 rows, after a compilation at the process's first rollout of 15-40 s (tiny; "
        "warm / cold inductor cache) and ~70-80 s (SmolLM2, warm cache): pays only on small models with "
        "large batches over hundreds of rollouts. Off = eager.",
    )


class RewardConfig(_Section):
    function: str | Callable[..., Any] | None = Field(
        None,
        description="Reward function 'file.py:name', 'package.module:name' or a reward server URL; from "
        "Python also the function itself (saved as 'module:qualname'). Called as TRL calls reward "
        "functions, with keywords: prompts, completions, completion_ids and every other prompt column "
        "by name -> list[float | None].",
    )
    timeout: PositiveFloat | None = Field(
        None, description="Seconds a reward-function call may take; a late one is an error naming the sample."
    )
    normalize: Literal["none", "running", "fixed", "model"] = Field(
        "none",
        description="Standardize R: running batch moments, the fixed mean/std below, or the reward "
        "model's stored mean/std (model).",
    )
    mean: float = Field(0.0, allow_inf_nan=False, description="Mean for normalize=fixed.")
    std: PositiveFloat = Field(1.0, description="Std for normalize=fixed.")
    clip: PositiveFloat | None = Field(None, description="Clip R to [-clip, clip] after normalizing.")
    overlong_buffer: PositiveInt | None = Field(
        None, description="DAPO's soft overlong penalty over the last N tokens of rollout.max_new_tokens; None = off."
    )
    overlong_factor: float = Field(1.0, ge=0, description="The overlong penalty at rollout.max_new_tokens.")
    scale: float = Field(1.0, allow_inf_nan=False, description="Multiply R by this after clipping.")
    max_skipped_fraction: Fraction = Field(
        1.0, description="Stop the run (error naming the reward function) when the reward function skips "
        "(returns None for) more than this fraction of a step's samples; a step whose samples are all skipped "
        "always stops it (nothing to learn from). 1.0 = only that.",
    )

    @field_validator("function", mode="plain")
    @classmethod
    def _spec_or_callable(cls, function: Any) -> str | Callable[..., Any] | None:
        # One plain check: a union would report a bad value twice, once per member type.
        if function is None or isinstance(function, str) or callable(function):
            return function
        raise ValueError("expected 'file.py:name', 'package.module:name', a reward server URL or a callable")

    @field_serializer("function", when_used="json")
    def _function_spec(self, function: str | Callable[..., Any] | None) -> str | None:
        # A callable (notebooks) cannot go to YAML or JSON: its name stands in, loadable when importable.
        return function_name(function) if callable(function) else function


class AdvantageConfig(_Section):
    estimator: Literal[ESTIMATORS] = Field("reinforce_pp", description="How returns become advantages.")
    gamma: Fraction = Field(1.0, description="Discount factor.")
    lam: Fraction = Field(1.0, description="GAE lambda; only used by the gae estimator.")


class KLConfig(_Section):
    coef: float = Field(0.01, ge=0, description="KL weight; 0 = no KL term and no reference model.")
    estimator: Literal[KL_ESTIMATORS] = Field("k1", description="Per-token KL(pi||ref) estimator.")
    placement: Literal["reward", "loss"] = Field(
        "reward", description="Subtract KL from the reward, or add it to the loss."
    )
    clamp: PositiveFloat | None = Field(
        10.0, description="Clamp the per-token estimate to [-clamp, clamp] (as OpenRLHF); None = off."
    )
    unbiased_gradient: bool = Field(
        False, description="KL as a loss only: keep the estimator's value but take the gradient "
        "w * (log pi - log pi_ref) * grad log pi, w = min(pi / pi_old, 10) detached (OpenRLHF unbiased_gradient, "
        "verl 'k3+'): in expectation exactly grad KL(pi||ref) for k1, k2 and k3, also off-policy.",
    )
    target: PositiveFloat | None = Field(
        None, description="Adaptive KL (Ziegler et al. 2019; OpenRLHF/verl AdaptiveKLController): after each step "
        "coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * samples / horizon, KL = the mean over sequences of each "
        "sequence's token-mean estimate between pi_old and pi_ref; coef is the starting value, saved in "
        "checkpoints, logged as kl/coef. None = a fixed coef.",
    )
    horizon: PositiveInt = Field(
        10000, description="Adaptive KL horizon H, in samples (OpenRLHF's and verl's default 10000); only with "
        "algo.kl.target.",
    )

    @property
    def applied_to(self) -> Literal["reward", "loss"] | None:
        """Where the KL term goes: the reward, the loss, or nowhere (coef = 0: no reference is loaded).
        The one place that decides it, for the loop, the update and the reference."""
        return self.placement if self.coef > 0 else None


class LossConfig(_Section):
    clip_low: PositiveFloat = Field(0.2, description="PPO ratio clip below: 1 - clip_low.")
    clip_high: PositiveFloat = Field(0.2, description="PPO ratio clip above: 1 + clip_high.")
    dual_clip: Annotated[float, Field(gt=1)] | None = Field(
        None, description="Dual-clip bound for negative advantages; None = off."
    )
    agg: Literal[AGGREGATIONS] = Field(
        "token-mean", description="How per-token losses reduce to one number."
    )
    token_norm: PositiveInt | None = Field(
        None,
        description="Divisor of seq-mean-token-sum-norm; None = rollout.max_new_tokens.",
    )
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus weight.")
    ratio_level: Literal[RATIO_LEVELS] = Field(
        "token", description="The PPO ratio per token, or per sequence (GSPO, Zheng et al. 2025: the "
        "length-normalized geometric mean of the token ratios, clipped per sequence; set clip_low/clip_high to "
        "GSPO's 3e-4/4e-4 and agg to seq-mean-token-mean, as the gspo preset does).",
    )
    tis_cap: Annotated[float, Field(ge=1)] | None = Field(
        None, description="Truncated importance sampling (Yao et al. 2025): weight each token's policy loss by "
        "min(pi_old / pi_rollout, tis_cap), detached, where pi_old is the trainer's recomputed log-prob and "
        "pi_rollout the sampler's (they differ under bf16 or a separate inference engine; 2 is the usual cap); "
        "logs actor/rollout_abs_log_ratio and actor/tis_capped_frac. None = off.",
    )


class AlgoConfig(_Section):
    advantage: AdvantageConfig = Field(default_factory=AdvantageConfig, description="Advantage estimation.")
    kl: KLConfig = Field(default_factory=KLConfig, description="KL regularisation toward the reference.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Policy loss.")
    filter_groups: bool = Field(
        False, description="DAPO dynamic sampling: drop prompts whose samples all got the same reward (no signal "
        "under a group baseline) and roll out further rollout.batch_size prompts until rollout.batch_size "
        "informative groups are found (surplus discarded), for at most algo.filter_max_rounds rounds; group "
        "estimators with n_samples_per_prompt >= 2 only.",
    )
    filter_max_rounds: PositiveInt = Field(
        4, description="Rollout rounds per step with algo.filter_groups, the first included (verl's "
        "max_num_gen_batches). When the last round leaves the batch short, the first dropped groups fill it "
        "(logged as filter/filled_groups): every step keeps its size, and under a group baseline they add no "
        "policy-gradient signal.",
    )
    mask_truncated: bool = Field(
        False, description="DAPO overlong filtering (TRL mask_truncated_completions): a response cut at "
        "rollout.max_new_tokens without EOS leaves the loss (its tokens masked; the loss normalizer and the "
        "batch whitening count only the rest); its reward still enters its group's baseline.",
    )


class OptimConfig(_Section):
    lr: PositiveFloat = Field(description="Peak learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    betas: tuple[AdamBeta, AdamBeta] = Field((0.9, 0.95), description="AdamW betas.")
    eps: float = Field(1e-8, ge=0, description="AdamW epsilon.")
    max_grad_norm: PositiveFloat | None = Field(1.0, description="Gradient clipping norm; None = off.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Fraction of steps spent warming up.")
    scheduler: Literal["constant", "linear", "cosine"] = Field(
        "cosine", description="LR schedule after warmup."
    )
    min_lr_ratio: Fraction = Field(0.1, description="Final LR as a fraction of lr.")


# The role-specific lr defaults live on subclasses so a partial `optim:` section keeps them.
class ActorOptimConfig(OptimConfig):
    lr: PositiveFloat = Field(5e-7, description="Peak actor learning rate.")


class CriticOptimConfig(OptimConfig):
    lr: PositiveFloat = Field(9e-6, description="Peak critic learning rate.")


class SFTOptimConfig(OptimConfig):
    lr: PositiveFloat = Field(1e-5, description="Peak SFT learning rate.")


class RMOptimConfig(OptimConfig):
    lr: PositiveFloat = Field(9e-6, description="Peak reward-model learning rate.")


class ActorConfig(_Section):
    optim: ActorOptimConfig = Field(default_factory=ActorOptimConfig, description="Actor optimizer.")


class CriticConfig(_Section):
    enabled: bool = Field(False, description="Train a value model; required by, and only used by, gae.")
    optim: CriticOptimConfig = Field(default_factory=CriticOptimConfig, description="Critic optimizer.")
    value_clip: PositiveFloat | None = Field(0.5, description="Value-loss clip range; None = off.")


class TrainConfig(_Section):
    batch_size: PositiveInt = Field(
        128, description="Samples (completions, not prompts) per optimizer step; must divide the RL step's "
        "rollout.batch_size x rollout.n_samples_per_prompt samples.",
    )
    micro_batch_size: PositiveInt = Field(
        8, description="Samples per forward/backward pass; must divide train.batch_size."
    )
    epochs: PositiveInt = Field(1, description="Passes over each RL step's samples.")
    num_steps: PositiveInt = Field(100, description="RL steps to run.")
    eval_every: NonNegativeInt = Field(0, description="Evaluate on data.eval_prompts every N steps; 0 = off.")
    autocast: Literal["auto", "bfloat16", "none"] = Field(
        "auto",
        description="Autocast of the trainer's forward passes (update, log pi_old, reference, critic): "
        "'bfloat16' = bf16 matmuls over the weights' dtype, 'none' = the weights' dtype alone, 'auto' = bfloat16 "
        "on CUDA, none on CPU (where bf16 matmuls are slow). The sampler never autocasts.",
    )
    old_logprobs: Literal["auto", "recompute", "rollout"] = Field(
        "auto",
        description="log pi_old: 'rollout' = the sampler's own log-probs (no forward pass; exact only when the "
        "sampler computes as the update does: float32 weights, no train.autocast; otherwise the PPO ratio is "
        "not 1 on the first mini-batch), 'recompute' = a forward pass with the update's numerics (or the "
        "update's own forward when it is one epoch of one mini-batch and the reward has no KL term), 'auto' = "
        "'rollout' for the in-process torch engine on a float32 policy without autocast, else 'recompute'.",
    )
    chunked_logprobs: bool = Field(
        False,
        description="In the update, compute log-probs and entropy in row chunks fused with the LM head (Llama "
        "family): no [B, T, V] logits kept for the backward, which makes them again (one more LM-head matmul). "
        "For long responses and large vocabularies when memory is the limit. Passes without gradient always "
        "run chunked.",
    )
    shared_prefix: bool = Field(
        True, description="Run each distinct prompt of a micro-batch once in the trainer's policy and reference "
        "forwards (Llama family), its KV cache shared by the rows that carry it and its gradient summed over "
        "them: the same numbers to float rounding, n - 1 prompt computations fewer per group of n in a "
        "micro-batch (rollout.n_samples_per_prompt > 1). A micro-batch shares when a prompt repeats in it on any "
        "rank (one all-reduce under torchrun: every rank runs its layers as often). Off, any other model, or "
        "gradient_checkpointing: every row computes its prompt.",
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer of the trainer's models (policy, reference, critic) "
        "once at start-up, per block with dynamic shapes (a new batch or sequence size does not recompile); "
        "embeddings, LM head and the sampler's decoding stay eager, and so does a layer called with a KV cache "
        "(the shared-prefix forwards of train.shared_prefix). Costs compilation time in the first step (the "
        "4-layer bench model on CPU: ~5 s with a warm inductor cache, 20-30 s cold; $TORCHINDUCTOR_CACHE_DIR). "
        "On CPU the update measured ~0.9x of eager at best, the whole step within noise: off by default. "
        "See docs/performance.md for when it pays.",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute each decoder layer's activations in the backward (non-reentrant): the same "
        "gradients, less activation memory, about one more forward pass of time.",
    )
    max_skipped_steps: PositiveInt = Field(
        3, description="An optimizer step whose loss or gradient norm is NaN/inf is skipped (weights, optimizer "
        "and LR schedule untouched; counted in actor/skipped_steps, one warning line); this many consecutive "
        "skips stop the run with an error naming the step and the quantity.",
    )
    target_kl: PositiveFloat | None = Field(
        None, description="PPO early stop (the Stable-Baselines3 / Spinning Up convention): when a mini-batch's "
        "approx KL(pi_old || pi) (k3, token mean over the whole mini-batch) exceeds 1.5 x target_kl, its "
        "optimizer step and the rest of the update's mini-batches and epochs are skipped; None = off.",
    )
    warn_kl_above: PositiveFloat | None = Field(
        1.0, description="Warn once when the per-token KL to the reference (metric kl) exceeds this: the policy "
        "drifted far from the reference (divergence); None = never.",
    )
    warn_entropy_below: NonNegativeFloat | None = Field(
        1e-3, description="Warn once when the policy's mean token entropy (actor/entropy) falls below this: "
        "it samples nearly deterministically (collapse), so samples of a prompt stop differing; None = never.",
    )


class EvalConfig(_Section):
    greedy: bool = Field(True, description="Evaluate greedy responses (pass@1).")
    samples_per_prompt: NonNegativeInt = Field(
        0, description="Also sample this many responses per prompt for pass@k; 0 = greedy only."
    )
    temperature: PositiveFloat = Field(0.6, description="Sampling temperature of the sampled evaluation.")
    ks: list[PositiveInt] = Field(default_factory=lambda: [1], description="The k of pass@k (sampled).")
    pass_threshold: float = Field(1.0, description="A response passes when its reward is at least this.")
    before_training: bool = Field(
        True, description="With train.eval_every > 0, also evaluate the starting policy (logged as step 0)."
    )
    train_prompts: NonNegativeInt = Field(
        0, description="Also evaluate on the first N training prompts (metrics eval_train/...); 0 = off."
    )
    group_key: str | None = Field(
        None, description="Also report pass@1 per value of this prompt column, e.g. people for K&K."
    )


class SFTConfig(_Section):
    data: str | None = Field(
        None, description="Rows of prompt + response (strings or message lists), or TRL's `messages` rows (the "
        "trailing assistant turn(s) are the response); read as data.prompts is.",
    )
    response_key: str = Field("response", description="Column holding the target response.")
    max_len: PositiveInt = Field(1024, description="Prompt + response tokens; longer rows are skipped and counted.")
    epochs: PositiveInt = Field(1, description="Passes over the data.")
    batch_size: PositiveInt = Field(32, description="Rows per optimizer step.")
    max_steps: PositiveInt | None = Field(None, description="Stop after this many optimizer steps; None = all epochs.")
    micro_batch_size: PositiveInt = Field(8, description="Rows per forward/backward pass.")
    optim: SFTOptimConfig = Field(default_factory=SFTOptimConfig, description="Optimizer.")


class RMConfig(_Section):
    data: str | None = Field(
        None, description="Preference pairs: rows with prompt, chosen, rejected (strings or message lists; without "
        "a prompt, chosen and rejected conversations share it as their common first turns, as TRL's extract_prompt).",
    )
    eval_data: str | None = Field(None, description="Held-out pairs for pairwise accuracy.")
    chosen_key: str = Field("chosen", description="Column of the preferred response.")
    rejected_key: str = Field("rejected", description="Column of the other response.")
    max_len: PositiveInt = Field(1024, description="Prompt + response tokens; longer pairs are skipped and counted.")
    epochs: PositiveInt = Field(1, description="Passes over the data.")
    batch_size: PositiveInt = Field(32, description="Pairs per optimizer step.")
    micro_batch_size: PositiveInt = Field(8, description="Pairs per forward/backward pass.")
    optim: RMOptimConfig = Field(default_factory=RMOptimConfig, description="Optimizer.")


class CheckpointConfig(_Section):
    every: NonNegativeInt = Field(0, description="Checkpoint every N RL steps; 0 = only the final model.")
    keep: PositiveInt = Field(3, description="Keep the last K checkpoints.")
    resume: bool | str = Field(
        False, description="true = continue from the newest checkpoint in output_dir; or a checkpoint path."
    )
    final_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="Weights dtype of the RL run's exported final policy (final/; LoRA: the merged model): "
        "auto = the trained weights' dtype (float32 unless model.dtype says otherwise); bfloat16 halves the "
        "export's size. Checkpoints and PPO's final_critic/ keep the trained dtype.",
    )


class LogConfig(_Section):
    tensorboard: bool = Field(True, description="Also write TensorBoard events to output_dir/tensorboard.")
    progress: bool = Field(True, description="Show a progress bar and a one-line summary per step.")
    prompt_rewards: bool = Field(
        False, description="Write each step's rewards per training prompt to prompt_rewards.jsonl."
    )
    samples_every: NonNegativeInt = Field(
        10, description="Every N RL steps (and at the last), log the completions of the first log.samples_count prompts of the "
        "step's batch (each with its reward and advantage) to samples.jsonl, TensorBoard's text tab, the trackers "
        "and report.html; 0 = off.",
    )
    samples_count: PositiveInt = Field(
        2, description="Prompts per sample table; each comes with all its rollout.n_samples_per_prompt "
        "completions. The advantage shown is the mean of the completion's token advantages. Under torchrun at "
        "most rank 0's block of the batch (rollout.batch_size / ranks prompts).",
    )
    report: bool = Field(
        True, description="Write output_dir/report.html (one self-contained page: plots embedded, sample "
        "completions) after each evaluation and at the end of training.",
    )
    wandb: bool = Field(
        False, description="Also log the scalars and the sample tables to Weights & Biases (pip install "
        "'reinforcepp[wandb]'); WANDB_MODE=offline writes the run under output_dir/wandb without a network.",
    )
    trackio: bool = Field(
        False, description="Also log the scalars and the sample tables to Trackio, local-first (pip install "
        "'reinforcepp[trackio]'); view with `trackio show`.",
    )
    project: str = Field("reinforcepp", description="Project name of the log.wandb / log.trackio run.")
    run_name: str | None = Field(
        None, description="Run name of the log.wandb / log.trackio run; None = the last part of output_dir."
    )


class DistConfig(_Section):
    """Used only under torchrun (`torchrun --nproc-per-node N -m reinforcepp train ...`)."""

    timeout_s: PositiveFloat = Field(
        1800.0, description="Seconds a collective may wait for the other ranks before the job fails (a rank "
        "that died ends the job at once through torchrun; this bounds a rank that hangs). Must exceed the "
        "longest rank-0-only phase (evaluation, checkpoint export).",
    )
    mixed_precision: Literal["auto", "bfloat16", "none"] = Field(
        "auto", description="FSDP2 compute dtype: bfloat16 parameters in forward/backward with float32 master "
        "weights and float32 gradient reduction; auto = bfloat16 on CUDA, none on CPU.",
    )
    cpu_offload: bool = Field(
        False, description="Keep sharded parameters, gradients and optimizer states in CPU memory (FSDP2 "
        "CPUOffloadPolicy); the optimizer steps on the CPU. For models that do not fit the GPUs.",
    )


class Config(_Section):
    seed: int = Field(42, description="Random seed.")
    output_dir: str = Field("runs/default", description="Where checkpoints and logs go.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Which models to load.")
    data: DataConfig = Field(default_factory=DataConfig, description="Prompt data.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Sampling.")
    algo: AlgoConfig = Field(default_factory=AlgoConfig, description="The RL algorithm.")
    actor: ActorConfig = Field(default_factory=ActorConfig, description="Policy training.")
    critic: CriticConfig = Field(default_factory=CriticConfig, description="Value model training.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Batching and run length.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Where rewards come from.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation on held-out prompts.")
    sft: SFTConfig = Field(default_factory=SFTConfig, description="`reinforcepp sft`: supervised fine-tuning.")
    rm: RMConfig = Field(default_factory=RMConfig, description="`reinforcepp rm`: Bradley-Terry reward model.")
    ckpt: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints and resume.")
    log: LogConfig = Field(default_factory=LogConfig, description="Metrics and progress display.")
    dist: DistConfig = Field(default_factory=DistConfig, description="Multi-process training under torchrun.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available.")
    threads: PositiveInt | None = Field(
        None, description="CPU threads of torch's operations (torch.set_num_threads), set and printed at start-up. "
        "None = $OMP_NUM_THREADS when set, else the cores this process may use (os.sched_getaffinity) divided "
        "among torchrun's local ranks. Beside other busy processes, set it to your share of the cores: more "
        "threads than free cores make every step many times slower.",
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Config:
        problems = cross_field_problems(self)
        if problems:
            raise ConfigError(*problems)
        for message in cross_field_warnings(self):
            warnings.warn(message, ConfigWarning, stacklevel=2)
        return self


def validate_config(data: Mapping[str, Any]) -> Config:
    """Build a Config from plain data; every problem is reported in one ConfigError."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise config_error_from(exc, Config) from None
