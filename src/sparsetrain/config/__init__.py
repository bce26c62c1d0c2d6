"""Typed, validated parameters: the config contract of ``conf/base/parameters_*.yml``.

- :mod:`.sections`: the run sections (``data``, ``model``, ...), frozen pydantic models parsed once
  at start-up into a :class:`SparsetrainConfig`;
- :mod:`.sweep`: the sweep grammar (``sweep.space`` of dotted keys, ranges and lists);
- :mod:`.space`: the plain search-space specs and the Pareto rule, free of pydantic and Optuna.
"""

from sparsetrain.config.sections import (
    SECTIONS,
    CompressionConfig,
    DataConfig,
    ModelConfig,
    RegistryConfig,
    SparsetrainConfig,
    SparsityConfig,
    TrainingConfig,
    flatten,
    parse_config,
    parse_section,
    unflatten,
)
from sparsetrain.config.sweep import SweepConfig, check_sweep, parse_space, parse_sweep, parse_sweep_section

__all__ = [
    "SECTIONS", "CompressionConfig", "DataConfig", "ModelConfig", "RegistryConfig", "SparsetrainConfig",
    "SparsityConfig", "SweepConfig", "TrainingConfig", "check_sweep", "flatten", "parse_config", "parse_section",
    "parse_space", "parse_sweep", "parse_sweep_section", "unflatten",
]
