"""Everything a run holds: models, optimizers, data, reward, rollout engine, metrics; built from a Config."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from reinforcepp.config import Config, ConfigError, save_config
from reinforcepp.data import Prompt, PromptSampler, fill_missing_columns, read_rows, tokenize_prompts
from reinforcepp.models import ValueModel, frozen_copy, load_causal_lm, load_reference, load_tokenizer, lora, resolve_device
from reinforcepp.rewards import RewardSignatureError, RewardTransform, load_reward_function
from reinforcepp.rewards.function import (
    PASSED_KEYWORDS,
    RewardFn,
    defaulted_parameters,
    function_name,
    signature_problem,
)
from reinforcepp.rollout import RolloutEngine, SamplingParams, TorchEngine
from reinforcepp.threads import apply_threads

from . import dist, sharding
from .checkpoint import CHECKPOINTS, remove_stale_temp_dirs
from .compiled import compile_layers
from .kl_control import KLController
from .metrics import MetricsLog
from .optim import build_optimizer
from .reference import Reference, build_reference, copies_policy
from .scoring import Scorer, reward_column_names
from .trackers import require_trackers
from .update import Optimization

log = logging.getLogger(__name__)


@dataclass
class Run:
    cfg: Config
    run_dir: Path
    device: torch.device
    tokenizer: object
    policy: torch.nn.Module
    reference: Reference | None
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
    kl_controller: KLController
    metrics: MetricsLog | None = None
    sharded: bool = False  # FSDP2 under torchrun: the engine samples from a replica synced each step
    replica_version: int | None = None  # the policy's optimizer step count the replica holds (sharded runs)

    def next_prompts(self) -> tuple[list[int], list[Prompt]]:
        """The next rollout batch, the same on every rank: (indices into the training prompts, the prompts)."""
        indices = self.sampler.next_indices(self.cfg.rollout.batch_size)
        return indices, [self.prompts[i] for i in indices]


def check_sources(cfg: Config, *, need_prompts: bool = True) -> None:
    """The settings a run cannot start without, all reported at once."""
    problems = []
    if not cfg.model.policy:
        problems.append("model.policy: set the policy model (a Hugging Face hub id or a local directory)")
    if need_prompts and not cfg.data.prompts:
        problems.append("data.prompts: set the prompts (JSONL, Parquet, a saved datasets directory or a "
                        "datasets.load_dataset name)")
    if (cfg.reward.function is None) == (cfg.model.reward_model is None):
        problems.append("reward.function / model.reward_model: set exactly one reward source")
    if problems:
        raise ConfigError(*problems)


def check_output_dir(path: Path) -> None:
    """output_dir can be created and written to: checked before any model loads (and without creating it),
    so a path under a regular file or on a read-only file system fails now, in one line, not at the first
    checkpoint."""
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())  # "/" exists
    if not existing.is_dir():
        raise ConfigError(f"output_dir: {path} cannot be a directory: {existing} is a file")
    try:
        tempfile.TemporaryFile(dir=existing).close()  # a nameless file: nothing is left behind
    except OSError as exc:
        raise ConfigError(f"output_dir: cannot write to {path}: {exc.strerror or exc} ({existing})") from None


def remove_stale_saves(run_dir: Path) -> None:
    """The temp dirs a killed save left behind (a checkpoint's, the final model's): removed, and said."""
    for directory in (run_dir, run_dir / CHECKPOINTS):
        for stale in remove_stale_temp_dirs(directory):
            log.warning("removed %s, left by an interrupted save", stale)


def read_prompt_rows(path: str | None, cfg: Config, limit: int | None = None) -> list[dict]:
    """The rows of a prompt file (the first ``limit`` when set), each with every column of the file."""
    if path is None:
        return []
    return fill_missing_columns(read_rows(path, cfg.data.prompt_key)[:limit])


def tokenize_rows(rows: list[dict], cfg: Config, tokenizer, source: str | None = None) -> tuple[list[Prompt], int]:
    """Tokenized prompts of ``rows`` (read from ``source``) and the number skipped as too long."""
    if not rows:
        return [], 0
    return tokenize_prompts(
        rows, tokenizer, prompt_key=cfg.data.prompt_key, max_len=cfg.data.max_prompt_len,
        chat_template=cfg.data.apply_chat_template, source=str(source),
    )


def log_first_prompt(prompts: list[Prompt]) -> None:
    """The first training prompt as the model sees it (chat template applied), printed once at start-up (as
    the threads line: the run prints no log records below warnings)."""
    if prompts and dist.is_main():
        print(f"first prompt, as the model is given it ({len(prompts[0].token_ids)} tokens):\n{prompts[0].text}",
              flush=True)


def checked_reward_function(cfg: Config, rows_by_source: dict[str, list[dict]]) -> RewardFn | None:
    """``reward.function`` loaded and its signature checked against the columns of each prompt file
    (``{path: rows}``), before any model loads: a parameter no call can fill fails the
    run now, in one line, rather than at the first reward after minutes of loading."""
    if cfg.reward.function is None:
        return None
    fn = load_reward_function(cfg.reward.function)
    for source, rows in rows_by_source.items():
        columns = reward_column_names(rows, cfg.data.prompt_key)
        names = [*PASSED_KEYWORDS, *columns]
        problem = signature_problem(fn, names, source)
        if problem is not None:
            raise RewardSignatureError(f"reward.function: {problem}")
        defaulted = defaulted_parameters(fn, names)
        if defaulted:  # e.g. `answer=None` while the column is `label`: the function would never see it
            log.warning("reward.function: %s gets no value for %s (not a column of %s: %s), so the defaults apply",
                        function_name(fn), ", ".join(defaulted), source, ", ".join(columns) or "(none)")
    return fn


def build_scorer(cfg: Config, tokenizer, device: torch.device, function: RewardFn | None) -> Scorer:
    """The reward source: the user's function (from ``checked_reward_function``), or a Bradley-Terry
    reward model (frozen)."""
    reward_model = None
    if cfg.model.reward_model is not None:
        reward_model = ValueModel.from_pretrained(cfg.model.reward_model, dtype=cfg.model.dtype, device=device)
        reward_model.requires_grad_(False)
    return Scorer(tokenizer, function=function, reward_model=reward_model, prompt_key=cfg.data.prompt_key,
                  timeout=cfg.reward.timeout, normalize_with_model=cfg.reward.normalize == "model")


def check_world_size(cfg: Config, world: int, num_prompts: int | None = None) -> None:
    """Under torchrun each rank rolls out an equal block of whole prompt groups and takes an equal share of
    every mini-batch (equal shares keep the ranks' sharded forwards in step)."""
    if world == 1:
        return
    problems = []
    if cfg.rollout.batch_size % world:
        problems.append(f"rollout.batch_size: {cfg.rollout.batch_size} prompts per step cannot be split over "
                        f"{world} ranks; use a multiple of {world}")
    if cfg.train.batch_size % world:
        problems.append(f"train.batch_size: {cfg.train.batch_size} samples per optimizer step cannot be split "
                        f"over {world} ranks; use a multiple of {world}")
    if num_prompts is not None and num_prompts < world:
        problems.append(f"data.prompts: {num_prompts} prompts for {world} ranks; each rank needs at least one")
    if problems:
        raise ConfigError(*problems)


def optimizer_steps_per_run(cfg: Config) -> int:
    samples = cfg.rollout.batch_size * cfg.rollout.n_samples_per_prompt
    return cfg.train.num_steps * cfg.train.epochs * (samples // cfg.train.batch_size)


def build_run(cfg: Config) -> Run:
    """Load and build everything ``train`` needs. Models: the policy in fp32 (bf16 autocast on GPU), with LoRA
    adapters when model.lora is set (then only they train); the frozen reference, in the policy's dtype, only
    when a KL term is used (:func:`.reference.build_reference`); the critic only for PPO. Under torchrun each
    model is sharded with FSDP2 (:mod:`.sharding`) before its optimizer is built."""
    check_sources(cfg)
    check_output_dir(Path(cfg.output_dir))
    if cfg.model.lora is not None:
        lora.require_peft()  # before anything loads
    if dist.is_main():
        require_trackers(cfg)  # log.wandb / log.trackio: their packages, before anything loads
    check_world_size(cfg, dist.world_size())
    # Python's, NumPy's and torch's global RNGs: training draws from its own seeded streams, but a user's reward
    # function (or its import) may use `random`, and then a rerun of the config must draw the same.
    transformers.set_seed(cfg.seed)
    rows = read_prompt_rows(cfg.data.prompts, cfg, limit=cfg.data.max_prompts)
    check_world_size(cfg, dist.world_size(), len(rows))
    eval_rows = read_prompt_rows(cfg.data.eval_prompts, cfg)
    files = ((cfg.data.prompts, rows), (cfg.data.eval_prompts, eval_rows))
    function = checked_reward_function(cfg, {path: file_rows for path, file_rows in files if path is not None})
    transformers.utils.logging.disable_progress_bar()  # our bar is the one to watch
    apply_threads(cfg.threads, announce=dist.is_main())
    device = run_device(cfg)
    dist.init(device, cfg.dist.timeout_s)
    sharded = dist.initialized()
    m = cfg.model
    tokenizer = load_tokenizer(m.policy, gguf_file=m.gguf_file, trust_remote_code=m.trust_remote_code)
    prompts, skipped = tokenize_rows(rows, cfg, tokenizer, cfg.data.prompts)
    check_world_size(cfg, dist.world_size(), len(prompts))  # some may be skipped as too long
    eval_prompts, _ = tokenize_rows(eval_rows, cfg, tokenizer, cfg.data.eval_prompts)
    log_first_prompt(prompts)
    policy_dtype = "float32" if m.dtype == "auto" else m.dtype
    # sharded: load in CPU memory; fully_shard then moves one layer at a time to the GPU, keeping its shard
    load_device = torch.device("cpu") if sharded else device
    policy = load_causal_lm(m.policy, dtype=policy_dtype, device=load_device, gguf_file=m.gguf_file,
                            trust_remote_code=m.trust_remote_code)
    starting_copy = frozen_copy(policy) if copies_policy(cfg, policy_dtype) else None  # before LoRA wraps the policy
    if m.lora is not None:
        torch.manual_seed(cfg.seed)  # the adapters' random A: the same on every rank and in every run of the config
        policy = lora.add_lora(policy, m.lora)
        log_trainable(policy)
    replica = sharding.rollout_replica(policy, cfg, device) if sharded else None

    def load_separate_reference() -> torch.nn.Module:
        if starting_copy is not None:
            return starting_copy
        ref_path = m.reference or m.policy
        # in the policy's dtype (and autocast) the reference computes as the policy: KL 0 at step 0
        reference_dtype = policy_dtype if m.reference_dtype == "auto" else m.reference_dtype
        return load_reference(ref_path, dtype=reference_dtype, device=load_device,
                              gguf_file=m.gguf_file if ref_path == m.policy else None,
                              trust_remote_code=m.trust_remote_code)

    reference = build_reference(cfg, policy, load_separate_reference)
    critic_model = None
    if cfg.critic.enabled:
        # The paper initializes PPO's critic from the reward model; from the policy when the reward is a rule.
        critic_path = m.critic or m.reward_model or m.policy
        torch.manual_seed(cfg.seed)  # a fresh value head: the same on every rank and in every run of the config
        critic_model = ValueModel.from_pretrained(critic_path, dtype=policy_dtype, device=load_device)
    if cfg.train.gradient_checkpointing:
        for model in (policy, critic_model):
            enable_gradient_checkpointing(model)
    for model in (policy, reference and reference.own_model, critic_model):
        if model is not None and sharded:
            sharding.shard(model, cfg, device)
        if model is not None and cfg.train.compile:  # after sharding: FSDP's hooks stay outside the graphs
            compile_layers(model)
    total_updates = optimizer_steps_per_run(cfg)
    actor = Optimization(policy, *build_optimizer(policy, cfg.actor.optim, total_updates),
                         cfg.actor.optim.max_grad_norm)
    critic = None
    if critic_model is not None:
        critic = Optimization(critic_model, *build_optimizer(critic_model, cfg.critic.optim, total_updates),
                              cfg.critic.optim.max_grad_norm)

    r = cfg.rollout
    sampling = SamplingParams(
        max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
        stop_strings=tuple(r.stop_strings), min_new_tokens=r.min_new_tokens,
    )
    run_dir = Path(cfg.output_dir)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_saves(run_dir)
        save_config(cfg, run_dir / "config.yaml")
    dist.barrier()
    return Run(
        cfg=cfg, run_dir=run_dir, device=device, tokenizer=tokenizer, policy=policy, reference=reference,
        actor=actor, critic=critic, engine=_build_engine(cfg, replica or policy, tokenizer), sampling=sampling,
        prompts=prompts, eval_prompts=eval_prompts, sampler=PromptSampler(len(prompts), cfg.seed, cfg.data.shuffle),
        scorer=build_scorer(cfg, tokenizer, device, function),
        reward_transform=RewardTransform(cfg.reward.normalize, cfg.reward.mean, cfg.reward.std,
                                         cfg.reward.clip, cfg.reward.scale),
        skipped_prompts=skipped, kl_controller=KLController(cfg), sharded=sharded,
    )


def log_trainable(model: torch.nn.Module) -> None:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("model.lora: training %d of %d parameters (%.2f%%)", trainable, total, 100 * trainable / total)


def run_device(cfg: Config) -> torch.device:
    """The run's device; under torchrun on GPUs, each rank's own (LOCAL_RANK)."""
    device = resolve_device(cfg.device)
    if device.type == "cuda" and dist.launched():
        device = torch.device("cuda", dist.local_rank())
        torch.cuda.set_device(device)
    return device


def enable_gradient_checkpointing(model: torch.nn.Module | None) -> None:
    """HF's per-layer activation checkpointing, non-reentrant (works with FSDP2 and frozen inputs); the
    update switches it on around its forward (:func:`.forward.checkpointing`)."""
    if model is None:
        return
    target = getattr(model, "backbone", model)  # a ValueModel checkpoints its transformer
    target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _build_engine(cfg: Config, policy: torch.nn.Module, tokenizer) -> RolloutEngine:
    if cfg.rollout.engine == "vllm":
        raise ConfigError("rollout.engine: 'vllm' is not available yet; use 'torch'")
    return TorchEngine(policy, tokenizer, max_batch_tokens=cfg.rollout.max_batch_tokens,
                       compile=cfg.rollout.compile, fuse_qkv=cfg.rollout.compile, fuse_gate_up=cfg.rollout.compile)
