"""Checks of values a user gives (config values, constructor arguments): a bad value becomes one clear
error line, never a traceback.

:func:`as_float`, :func:`positive_int`, :func:`integer`, :func:`boolean` and :func:`choice` are used by every
constructor that takes a user's value (balancers, data sets) and by :func:`gradnorm.config.check_config`;
:class:`ConfigError` is what the command line prints as ``error: ...`` (exit 2). Part of the library core:
it imports nothing (not even torch), so every module may import it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is not allowed. The message names the key, the value and what is allowed."""


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of an error's message, for a one-line report; ``default`` (the error's type
    name unless given) when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else (type(err).__name__ if default is None else default)


def as_float(value, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """Convert a config value to a finite float (``> minimum`` when ``strict``, else ``>=``), or raise
    a :class:`ConfigError` that names the key, the value and what is allowed."""
    allowed = "a number" if minimum is None else f"a number {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and (out < minimum or (strict and out == minimum)):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return out


def positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    allowed = "a non-negative integer" if allow_zero else "a positive integer"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be {allowed}, got {value!r}") from None
    if not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


def integer(value, name: str) -> int:
    """An integer config value (a seed), or a ConfigError naming the key and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return value


def boolean(value, name: str) -> bool:
    """A true/false config value, or a ConfigError naming the key and the value."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def choice(value, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value
