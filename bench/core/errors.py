"""Errors meant for users: each message says what is wrong and how to fix it.

The CLI turns any :class:`BenchError` into one line on stderr and exit status 2.
"""

import argparse
import sys
from typing import NoReturn


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


class DataDamagedError(BenchError):
    """Dataset files are present but damaged or unsafe (a pickle that imports code, a file
    that is not what its name says): refused even by ``--dry-run``, which only warns about
    data it cannot find (it may live where the jobs run)."""


class DiskFullError(BenchError):
    """A record or cache file could not be written because its disk is full, over quota or
    read-only. The message names the file and the free space; the suite stops launching runs
    (finished records are kept) and the CLI exits with status 2."""


def require(module: str, feature: str):
    """Import and return the optional dependency ``module`` that ``feature`` needs, or raise a
    :class:`BenchError` that says how to install it. submitit (SLURM) and optuna (tuning) are
    optional at run time: a node without them (an offline GPU node) still runs suites locally."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BenchError(
            f"{feature} needs {module}, which is not installed here: pip install {module} "
            f"(offline: pip install --no-index --find-links <wheel folder> {module}; see "
            "scripts/gpu-prepare.sh)"
        ) from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line on stderr and exit status 2, like every
    other bad input (argparse prints its whole usage first: 23 lines for ``bench.run``)."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)
