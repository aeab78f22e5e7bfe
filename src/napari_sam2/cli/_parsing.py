"""Argument types of ``napari-sam2``: each turns one option's text into a value or raises
:class:`argparse.ArgumentTypeError` (argparse then exits with code 2 and the message)."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def parse_window(text: str) -> tuple[float, float] | str | None:
    """``auto`` -> None; ``LOW,HIGH`` -> (low, high); anything else is a CT preset name."""
    if text.strip().lower() == "auto":
        return None
    if "," in text:
        try:
            low, high = (float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"a window is LOW,HIGH (two numbers), got {text!r}") from None
        if low > high:
            raise argparse.ArgumentTypeError(f"window low {low:g} is above high {high:g}")
        return (low, high)
    return text


def parse_fixed(text: str) -> dict[str, int]:
    """``t=3`` -> {"t": 3}."""
    name, sep, value = text.partition("=")
    if not sep or name.strip() not in ("t", "z"):
        raise argparse.ArgumentTypeError(f"--fixed is AXIS=INDEX with AXIS t or z, got {text!r}")
    return {name.strip(): nonnegative_int(value)}


def parse_crop(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    return positive_int(text)


def _frame_list(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"frames are like 0-3,7; got {text!r}") from None
    return out


def parse_frames(text: str) -> list[int]:
    """``0-3,7`` -> [0, 1, 2, 3, 7]."""
    return sorted(set(_frame_list(text)))


def parse_seed_frames(text: str) -> list[int]:
    """``4,0-1,8`` -> [4, 0, 1, 8]: the order given (seed frames are processed in it), once each."""
    return list(dict.fromkeys(_frame_list(text)))


def parse_optional_count(text: str) -> int | None:
    """``none`` -> None; else a positive integer."""
    return None if text.strip().lower() == "none" else positive_int(text)
