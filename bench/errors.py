"""Errors meant for users: each message says what is wrong and how to fix it.

The CLI turns any :class:`BenchError` into one line on stderr and exit status 2.
"""


class BenchError(ValueError):
    """Bad input from the user (unknown name, impossible forget size, missing data...)."""


class UnknownNameError(BenchError, KeyError):
    """A name that no registry knows; the message lists the nearest registered names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class DataNotFoundError(BenchError, FileNotFoundError):
    """Dataset files are missing; the message names the path and how to obtain the data."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DiskFullError(BenchError):
    """A record or cache file could not be written because its disk is full, over quota or
    read-only. The message names the file and the free space; the suite stops launching runs
    (finished records are kept) and the CLI exits with status 2."""
