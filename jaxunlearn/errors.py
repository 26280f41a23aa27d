"""ConfigError: the one exception type for bad user input, which the command line prints as one line (exit 2)."""

from __future__ import annotations

import contextlib

__all__ = ("ConfigError", "user_input")


class ConfigError(ValueError):
  """A bad flag value, config field or input file, found before (or instead of) any real work.

  The command line prints it as ``jaxunlearn: error: ...`` and exits with status 2; every other
  exception (a bug, a JAX tracer error, ...) keeps its traceback and exits with status 1.
  """


class _ConfigTypeError(ConfigError, TypeError):
  """A ConfigError converted from a validator's TypeError (still a TypeError for API callers)."""


@contextlib.contextmanager
def user_input():
  """Turns a ``ValueError`` / ``TypeError`` raised in the block into a :class:`ConfigError`.

  Wrap only calls that check the user's input (a validator of another unit, a data loader); never
  wrap computation. JAX's own errors (tracer errors subclass ``TypeError``) pass through unchanged.
  """
  try:
    yield
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    if type(e).__module__.split(".")[0] in ("jax", "jaxlib"):
      raise
    cls = _ConfigTypeError if isinstance(e, TypeError) else ConfigError
    raise cls(" ".join(str(e).split())) from e
