"""REINFORCE++ and its peers (GRPO, RLOO, ReMax, Dr.GRPO, PPO) for language models."""
