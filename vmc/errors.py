"""The errors a user can cause (bad input, files on disk that do not fit): each says what and where in one line.

Library functions raise them; only a command's ``main()`` turns them into one line on stderr and exit code 2
(:func:`vmc.cli.run`).
"""

from __future__ import annotations


class VmcError(Exception):
    """Bad input or a file on disk that does not fit; the message is one line that names it."""


class CheckpointError(VmcError):
    """A checkpoint or model file is missing, corrupt, unsafe or of the wrong kind; the message names the file."""


class ConfigMismatch(VmcError):
    """Work on disk was made with another config than the one given; the message names the file and the fields."""


class ShardError(VmcError):
    """A shard is corrupt, foreign or inconsistent; the message names the file."""
