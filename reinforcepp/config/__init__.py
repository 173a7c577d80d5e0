"""The typed config tree, its loader, and its errors."""

from reinforcepp.config.errors import ConfigError, ConfigWarning
from reinforcepp.config.loader import config_to_yaml, load_config, save_config
from reinforcepp.config.schema import (
    ActorConfig,
    ActorOptimConfig,
    AdvantageConfig,
    AlgoConfig,
    Config,
    CriticConfig,
    CriticOptimConfig,
    DataConfig,
    KLConfig,
    LoRAConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    TrainConfig,
    validate_config,
)

__all__ = [
    "ActorConfig",
    "ActorOptimConfig",
    "AdvantageConfig",
    "AlgoConfig",
    "Config",
    "ConfigError",
    "ConfigWarning",
    "CriticConfig",
    "CriticOptimConfig",
    "DataConfig",
    "KLConfig",
    "LoRAConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RolloutConfig",
    "TrainConfig",
    "config_to_yaml",
    "load_config",
    "save_config",
    "validate_config",
]
