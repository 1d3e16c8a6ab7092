"""The one exception type for mistakes a user can fix (bad flag, missing data, wrong workdir).

The runner turns a `UserError` into one line on stderr and exit status 2; everything else is a
bug or a failure during training and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with what the user asked for, stated in one line with the remedy."""
