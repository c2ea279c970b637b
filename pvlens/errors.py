"""Errors a user can act on. The CLI prints them as one line (problem, where, fix) and exits 2;
`pvlens --debug ...` shows the traceback instead."""

from __future__ import annotations


class PvlensError(Exception):
    """Base of pvlens's user-facing errors: the message names the problem and the fix."""


class InputError(PvlensError, ValueError):
    """A bad input file, option or value (also a ValueError, for callers that catch those)."""
