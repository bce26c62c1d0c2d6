"""The project's config loader: a runtime parameter replaces a base value of another kind.

Kedro merges runtime parameters (``--params``, ``--config``) over ``conf/`` with
``OmegaConf.unsafe_merge``, which merges a mapping into a mapping, replaces scalars, and raises
"Cannot merge incompatible container types" when a list meets a mapping. So replacing the range
``sweep.space.sparsity.strength: {low, high}`` by a list of values (or a list by a mapping)
ended in a traceback. Here such a base value is cleared before Kedro's merge, so the runtime
value wins there as it does everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader
from omegaconf import DictConfig, OmegaConf


class SparsetrainConfigLoader(OmegaConfigLoader):
    """OmegaConfigLoader whose runtime params replace, rather than merge into, a base value of
    another container kind (mapping vs list)."""

    def _merge_and_resolve(self, key: str, config_per_file: dict[Path, DictConfig]) -> dict[str, Any]:
        """Kedro's merge (omegaconf_config.py, ``unsafe_merge(*aggregate_config, self.runtime_params)``)
        after clearing the base values that runtime params replace by another container kind."""
        if key == "parameters" and self.runtime_params:
            runtime = self.runtime_params
            config_per_file = {path: _clear_conflicts(cfg, runtime) for path, cfg in config_per_file.items()}
        return super()._merge_and_resolve(key, config_per_file)


def _clear_conflicts(config: DictConfig, runtime: Mapping[str, Any]) -> DictConfig:
    """``config``, or a copy with null where ``runtime`` puts a list over a mapping or back."""
    raw = OmegaConf.to_container(config, resolve=False)  # interpolations stay as text
    return OmegaConf.create(raw) if _clear(raw, runtime) else config


def _clear(base: dict, runtime: Mapping[str, Any]) -> bool:
    changed = False
    for key, new in runtime.items():
        if key not in base:
            continue
        old = base[key]
        if isinstance(old, dict) and isinstance(new, Mapping):
            changed |= _clear(old, new)
        elif _container(old) and _container(new) and isinstance(old, dict) != isinstance(new, Mapping):
            base[key] = None  # null merges with anything: the runtime value replaces it
            changed = True
    return changed


def _container(value: Any) -> bool:
    return isinstance(value, (Mapping, list, tuple))
