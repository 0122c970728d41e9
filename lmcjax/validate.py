"""One error type for bad input, and small checks that raise it before compute.

Every message is one line that names the bad value, so a user sees what to fix
without reading a traceback (launch/main.py prints only the message).
"""
from typing import Any, Iterable


class InputError(ValueError):
  """Bad user input: a config value, a file, a shape."""


def require(condition: bool, message: str) -> None:
  if not condition:
    raise InputError(message)


def positive(name: str, value: Any) -> None:
  require(value is not None and value > 0, f"{name} must be > 0, got {value!r}")


def non_negative(name: str, value: Any) -> None:
  require(value is not None and value >= 0, f"{name} must be >= 0, got {value!r}")


def choice(name: str, value: Any, choices: Iterable[Any]) -> None:
  choices = tuple(choices)
  require(value in choices, f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def fraction_open(name: str, value: Any) -> None:
  require(value is not None and 0.0 < value < 1.0, f"{name} must be in (0, 1), got {value!r}")
