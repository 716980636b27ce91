"""The options of the command line: their value types (each parses one kind of value and says what it expected)."""

from __future__ import annotations

import argparse

__all__ = ["channels", "layers", "number", "positive_int", "positive_float", "at_least_zero", "probability"]


def channels(value: str):
    """--channels: 'mix', 'all' or a channel index."""
    if value in ("mix", "all"):
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mix', 'all' or a channel index, got {value!r}") from None


def layers(value: str):
    """--layers: a layer index, a comma list of them (a list), 'last' or 'all'."""
    if value in ("all", "last"):
        return value
    try:
        items = [int(v) for v in value.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer index, a comma list (e.g. 6,-1) or 'all', "
                                         f"got {value!r}") from None
    return items[0] if len(items) == 1 else items


def number(kind, holds, rule: str):
    """An argparse type: ``kind`` (int or float) for which ``holds(value)``, else an error saying ``rule``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if not holds(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {rule}"  # argparse names the type in some messages
    parse.__doc__ = f"An argparse type: {'a whole number' if kind is int else 'a number'} that must be {rule}."
    return parse


positive_int, positive_float = number(int, lambda v: v > 0, "> 0"), number(float, lambda v: v > 0, "> 0")
at_least_zero = number(int, lambda v: v >= 0, ">= 0")
probability = number(float, lambda v: 0.0 < v < 1.0, "between 0 and 1 (exclusive)")
