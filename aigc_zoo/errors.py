"""The one exception type for mistakes a user can fix (bad flag, missing data, wrong workdir).

The runner turns a `UserError` into one line on stderr and exit status 2, and a
`TrainingDiverged` into one line and exit status 1; anything else is a bug and keeps its
traceback. `warn` is the one line for what goes on but the user should know.
"""

import sys


class UserError(ValueError):
    """A problem with what the user asked for, stated in one line with the remedy."""


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; the message says which checkpoint was kept."""


def warn(message: str) -> None:
    """One `warning:` line on stderr; the run goes on."""
    print(f"warning: {message}", file=sys.stderr, flush=True)
