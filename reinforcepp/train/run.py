"""Everything a run holds: models, optimizers, data, reward, rollout engine, metrics; built from a Config."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from reinforcepp.config import Config, ConfigError, save_config
from reinforcepp.data import Prompt, PromptSampler, read_rows, tokenize_prompts
from reinforcepp.models import ValueModel, load_causal_lm, load_reference, load_tokenizer, resolve_device
from reinforcepp.rewards import RewardTransform, load_reward_function
from reinforcepp.rollout import RolloutEngine, SamplingParams, TorchEngine

from .metrics import MetricsLog
from .optim import build_optimizer
from .scoring import Scorer
from .update import Optimization

log = logging.getLogger(__name__)


@dataclass
class Run:
    cfg: Config
    run_dir: Path
    device: torch.device
    tokenizer: object
    policy: torch.nn.Module
    reference: torch.nn.Module | None
    actor: Optimization
    critic: Optimization | None
    engine: RolloutEngine
    sampling: SamplingParams
    prompts: list[Prompt]
    eval_prompts: list[Prompt]
    sampler: PromptSampler
    scorer: Scorer
    reward_transform: RewardTransform
    skipped_prompts: int
    metrics: MetricsLog | None = None

    def next_prompts(self) -> tuple[list[int], list[Prompt]]:
        """The next rollout batch: (indices into the training prompts, the prompts)."""
        indices = self.sampler.next_indices(self.cfg.rollout.batch_size)
        return indices, [self.prompts[i] for i in indices]


def check_sources(cfg: Config, *, need_prompts: bool = True) -> None:
    """The settings a run cannot start without, all reported at once."""
    problems = []
    if not cfg.model.policy:
        problems.append("model.policy: set the policy model (a Hugging Face hub id or a local directory)")
    if need_prompts and not cfg.data.prompts:
        problems.append("data.prompts: set the prompts (JSONL, Parquet, or a saved datasets directory)")
    if (cfg.reward.function is None) == (cfg.model.reward_model is None):
        problems.append("reward.function / model.reward_model: set exactly one reward source")
    if problems:
        raise ConfigError(*problems)


def load_prompts(path: str | None, cfg: Config, tokenizer, limit: int | None = None) -> tuple[list[Prompt], int]:
    """Tokenized prompts of a file (the first ``limit`` rows when set) and the number skipped as too long."""
    if path is None:
        return [], 0
    rows = read_rows(path, cfg.data.prompt_key)[:limit]
    return tokenize_prompts(
        rows, tokenizer, prompt_key=cfg.data.prompt_key, max_len=cfg.data.max_prompt_len,
        chat_template=cfg.data.apply_chat_template,
    )


def build_scorer(cfg: Config, tokenizer, device: torch.device) -> Scorer:
    """The reward source: the user's function, or a Bradley-Terry reward model (frozen)."""
    reward_model = None
    if cfg.model.reward_model is not None:
        reward_model = ValueModel.from_pretrained(cfg.model.reward_model, dtype=cfg.model.dtype, device=device)
        reward_model.requires_grad_(False)
    function = load_reward_function(cfg.reward.function) if cfg.reward.function else None
    return Scorer(tokenizer, function=function, reward_model=reward_model, prompt_key=cfg.data.prompt_key,
                  timeout=cfg.reward.timeout, normalize_with_model=cfg.reward.normalize == "model")


def optimizer_steps_per_run(cfg: Config) -> int:
    samples = cfg.rollout.batch_size * cfg.rollout.n_samples_per_prompt
    return cfg.train.num_steps * cfg.train.epochs * (samples // cfg.train.batch_size)


def build_run(cfg: Config) -> Run:
    """Load and build everything ``train`` needs. Models: the policy in fp32 (bf16 autocast on GPU);
    the frozen reference only when a KL term is used; the critic only for PPO."""
    check_sources(cfg)
    transformers.utils.logging.disable_progress_bar()  # our bar is the one to watch
    device = resolve_device(cfg.device)
    m = cfg.model
    tokenizer = load_tokenizer(m.policy, gguf_file=m.gguf_file, trust_remote_code=m.trust_remote_code)
    policy_dtype = "float32" if m.dtype == "auto" else m.dtype
    policy = load_causal_lm(m.policy, dtype=policy_dtype, device=device, gguf_file=m.gguf_file,
                            trust_remote_code=m.trust_remote_code)
    reference = None
    if cfg.algo.kl.coef > 0:
        ref_path = m.reference or m.policy
        reference = load_reference(ref_path, dtype=m.dtype, device=device,
                                   gguf_file=m.gguf_file if ref_path == m.policy else None,
                                   trust_remote_code=m.trust_remote_code)
    total_updates = optimizer_steps_per_run(cfg)
    actor = Optimization(policy, *build_optimizer(policy, cfg.actor.optim, total_updates),
                         cfg.actor.optim.max_grad_norm)
    critic = None
    if cfg.critic.enabled:
        # The paper initializes PPO's critic from the reward model; from the policy when the reward is a rule.
        critic_path = m.critic or m.reward_model or m.policy
        critic_model = ValueModel.from_pretrained(critic_path, dtype=policy_dtype, device=device)
        critic = Optimization(critic_model, *build_optimizer(critic_model, cfg.critic.optim, total_updates),
                              cfg.critic.optim.max_grad_norm)

    prompts, skipped = load_prompts(cfg.data.prompts, cfg, tokenizer, limit=cfg.data.max_prompts)
    eval_prompts, _ = load_prompts(cfg.data.eval_prompts, cfg, tokenizer)
    r = cfg.rollout
    sampling = SamplingParams(
        max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        stop_strings=tuple(r.stop_strings), min_new_tokens=r.min_new_tokens,
    )
    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    return Run(
        cfg=cfg, run_dir=run_dir, device=device, tokenizer=tokenizer, policy=policy, reference=reference,
        actor=actor, critic=critic, engine=_build_engine(cfg, policy, tokenizer), sampling=sampling,
        prompts=prompts, eval_prompts=eval_prompts, sampler=PromptSampler(len(prompts), cfg.seed, cfg.data.shuffle),
        scorer=build_scorer(cfg, tokenizer, device),
        reward_transform=RewardTransform(cfg.reward.normalize, cfg.reward.mean, cfg.reward.std,
                                         cfg.reward.clip, cfg.reward.scale),
        skipped_prompts=skipped,
    )


def _build_engine(cfg: Config, policy: torch.nn.Module, tokenizer) -> RolloutEngine:
    if cfg.rollout.engine == "vllm":
        raise ConfigError("rollout.engine: 'vllm' is not available yet; use 'torch'")
    return TorchEngine(policy, tokenizer, max_batch_tokens=cfg.rollout.max_batch_tokens)
