"""Typed, validated parameters: the config contract of ``conf/base/parameters_*.yml``.

- :mod:`.sections`: the run sections (``data``, ``model``, ...), frozen pydantic models parsed once
  at start-up into a :class:`SparsetrainConfig`;
- :mod:`.sweep`: the sweep grammar (``sweep.space`` of dotted keys, ranges and lists);
- :mod:`.retrain`: champion / challenger promotion (``kedro run --pipelines retrain``);
- :mod:`.experiments`: the regularization path and the study of the claims;
- :mod:`.space`: the plain search-space specs and the Pareto rule, free of pydantic and Optuna.
"""

from sparsetrain.config.experiments import (
    PathConfig,
    StudyConfig,
    check_path,
    parse_path_section,
    parse_study_section,
)
from sparsetrain.config.retrain import RetrainConfig, check_retrain, is_minimized, parse_retrain_section
from sparsetrain.config.sections import (
    SECTIONS,
    CompressionConfig,
    DataConfig,
    DistributedConfig,
    EvaluationConfig,
    ExportConfig,
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
    "SECTIONS", "CompressionConfig", "DataConfig", "DistributedConfig", "EvaluationConfig", "ExportConfig", "ModelConfig",
    "PathConfig",
    "RegistryConfig", "RetrainConfig", "SparsetrainConfig", "SparsityConfig", "StudyConfig", "SweepConfig",
    "TrainingConfig", "check_path", "check_retrain", "check_sweep", "flatten", "is_minimized", "parse_config",
    "parse_path_section", "parse_retrain_section", "parse_section", "parse_space", "parse_study_section",
    "parse_sweep", "parse_sweep_section", "unflatten",
]
