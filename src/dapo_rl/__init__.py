"""dapo-rl: DAPO and GRPO reinforcement learning from verifiable rewards for language models.

The Python API (``dapo_rl.api``): ``make_config``, ``run_training`` -> ``RunResult``, ``evaluate``.
"""

__version__ = "0.1.0"

from dapo_rl.api import RunResult, evaluate, make_config, run_training
from dapo_rl.errors import DapoError

__all__ = ["DapoError", "RunResult", "evaluate", "make_config", "run_training"]
