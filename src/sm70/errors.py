"""The one exception type a user sees.

Every expected failure (bad recipe, malformed data row, missing file, offline hub access)
raises `Sm70Error` with a message that names the file, line and field; the CLI prints it
without a traceback and exits with status 2.
"""


class Sm70Error(Exception):
    """A failure the user can fix: the message says what and where."""


class ConfigError(Sm70Error):
    """A recipe or a command-line override that does not fit its config."""
