"""The ``kedro.cli_hooks`` entry point of sparsetrain: Kedro imports it when its CLI starts, before
it loads any plugin's commands, which is the one moment early enough to silence the warnings
those imports raise (:func:`sparsetrain.logs.ignore_library_warnings`). It adds no hook."""

from sparsetrain.logs import ignore_library_warnings

ignore_library_warnings()


class QuietLibraries:
    """A CLI plugin with no hook implementations: importing this module is all it does."""


cli_hooks = QuietLibraries()
