"""Project hooks: validate every parameter before any node runs."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from sparsetrain.config import parse_config


class ValidateParametersHook:
    """Fail at start-up, with one line naming the key, before a run or a version is created."""

    @hook_impl
    def after_context_created(self, context) -> None:
        parse_config(context.config_loader["parameters"])
