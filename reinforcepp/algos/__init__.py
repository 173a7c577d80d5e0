"""The mathematical core: pure functions on tensors. Imports torch only, nothing else of the package.

Each function's docstring holds its equation and tensor shapes; tests/algos checks each against
values computed by hand or in closed form.
"""

from .advantages import (
    ESTIMATORS,
    GROUP_ESTIMATORS,
    WHITENED_ESTIMATORS,
    compute_advantages,
    discounted_returns,
    gae,
    shape_rewards,
    token_rewards,
)
from .control import adaptive_kl_coef, informative_groups, sequence_mean_kl, truncation_mask
from .dtypes import compute_dtype
from .kl import KL_ESTIMATORS, kl_estimate
from .lm_head import head_logprobs
from .logprobs import token_logprobs
from .losses import (
    AGGREGATIONS,
    RATIO_LEVELS,
    aggregate,
    bradley_terry_loss,
    entropy_from_logits,
    importance_ratio,
    kl_loss,
    policy_loss,
    sft_loss,
    value_loss,
)
from .masked import masked_mean, masked_sum, masked_var, masked_whiten
from .objective import ObjectiveSettings, actor_objective, tis_weights

__all__ = [
    "AGGREGATIONS",
    "ESTIMATORS",
    "GROUP_ESTIMATORS",
    "KL_ESTIMATORS",
    "ObjectiveSettings",
    "RATIO_LEVELS",
    "WHITENED_ESTIMATORS",
    "actor_objective",
    "adaptive_kl_coef",
    "aggregate",
    "bradley_terry_loss",
    "compute_advantages",
    "compute_dtype",
    "discounted_returns",
    "entropy_from_logits",
    "gae",
    "head_logprobs",
    "importance_ratio",
    "informative_groups",
    "kl_estimate",
    "kl_loss",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "sequence_mean_kl",
    "sft_loss",
    "shape_rewards",
    "token_logprobs",
    "token_rewards",
    "tis_weights",
    "truncation_mask",
    "value_loss",
]
