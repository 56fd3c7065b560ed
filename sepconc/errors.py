"""The one exception type that user-facing code turns into a one-line error."""


class UserError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible config.

    The message is one line that names what was wrong (with the value) and what
    to do. `launch.py` prints it to stderr and exits with status 2, without a
    traceback.
    """
