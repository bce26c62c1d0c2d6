"""The one exception type users see.

Every check on user input raises :class:`SparsetrainError` with a message that names the offending
parameter or column and says how to fix it; the CLI prints that line instead of a traceback.
"""


class SparsetrainError(ValueError):
    """Bad input or configuration, detected before any work starts."""
