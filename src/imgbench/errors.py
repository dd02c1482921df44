"""Errors that mean "the user asked for something wrong": the CLI prints them plainly and exits 2."""


class UsageError(Exception):
    """Bad input (a name, a parameter, a path). The message names the problem and the fix."""
