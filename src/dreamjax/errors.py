"""The errors a user can cause and fix. The experiment CLIs (`dreamjax.experiments.cli`) print
their one-line message (the file, flag or stage, and what to do) and exit with code 2 for a
`ConfigError`, 1 for the others; `--debug` or DREAMJAX_DEBUG=1 shows the traceback instead. Any
other exception is a bug and keeps its traceback."""

from __future__ import annotations


class DreamjaxError(Exception):
    """Base class: a problem with the user's input, files or environment, not a bug."""


class ConfigError(DreamjaxError, ValueError):
    """A bad flag, or a run folder that is incompatible or in use; raised before any work."""


class ArtifactError(DreamjaxError, ValueError):
    """A missing, truncated or corrupt file; the message starts with the file's path."""


class NonFiniteLossError(DreamjaxError, FloatingPointError):
    """A NaN/inf loss or gradient; the state that produced it was not saved."""


class WorkerError(DreamjaxError, RuntimeError):
    """A real-env worker that keeps failing (crashes or hangs on every retry)."""
