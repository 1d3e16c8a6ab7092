"""The one exception type for mistakes a user can fix (bad flag, missing data, wrong workdir).

The runner turns a `UserError` into one line on stderr and exit status 2, and a
`TrainingDiverged` into one line and exit status 1; anything else is a bug and keeps its
traceback.
"""


class UserError(ValueError):
    """A problem with what the user asked for, stated in one line with the remedy."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; the message says which checkpoint was kept."""
