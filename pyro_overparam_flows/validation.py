"""Argument checks shared by the whole package, so that every bad argument gets the same kind of
message: what was wrong, what was given, and what is allowed.

>>> check_positive_int(3, "width")
3
>>> check_choice("tanh", ("tanh", "sigmoid"), "activation")
'tanh'
>>> check_bool(None, "scale")
Traceback (most recent call last):
    ...
ValueError: scale must be True or False, got None
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch

__all__ = [
    "SUPPORTED_DTYPES",
    "check_bool",
    "check_choice",
    "check_dtype",
    "check_floating_tensor",
    "check_positive_int",
    "check_positive_number",
]

T = TypeVar("T")

#: The dtypes the flows compute in. Half precision is refused rather than computed badly: the
#: inverse's Newton solve stalls at about 6% relative error in bfloat16.
SUPPORTED_DTYPES = (torch.float32, torch.float64)


def check_choice(value: T, allowed: Iterable, name: str) -> T:
    """``value`` if it is one of ``allowed``, else a ValueError listing them.

    >>> check_choice("planar", ("constrained", "unconstrained"), "family")
    Traceback (most recent call last):
        ...
    ValueError: unknown family 'planar'; allowed values are 'constrained', 'unconstrained'
    """
    allowed = tuple(allowed)
    if not isinstance(value, str | int | float | bool | None) or value not in allowed:
        listed = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"unknown {name} {value!r}; allowed values are {listed}")
    return value


def check_positive_int(value: object, name: str) -> int:
    """``value`` if it is an integer >= 1 (a bool is not), else a ValueError.

    >>> check_positive_int(0, "layers")
    Traceback (most recent call last):
        ...
    ValueError: layers must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_positive_number(value: object, name: str) -> float:
    """``value`` as a float if it is a finite number > 0 (a bool is not), else a ValueError.

    >>> check_positive_number(0.5, "init_scale")
    0.5
    >>> check_positive_number(-1, "radius")
    Traceback (most recent call last):
        ...
    ValueError: radius must be a positive number, got -1
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def check_bool(value: object, name: str) -> bool:
    """``value`` if it is True or False, else a ValueError.

    >>> check_bool(True, "scale")
    True
    >>> check_bool(1, "init_conditioner")
    Traceback (most recent call last):
        ...
    ValueError: init_conditioner must be True or False, got 1
    """
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_dtype(dtype: torch.dtype, what: str) -> None:
    """A ValueError unless ``dtype`` is float32 or float64; ``what`` starts the message.

    >>> check_dtype(torch.float16, "x of dtype")
    Traceback (most recent call last):
        ...
    ValueError: x of dtype torch.float16 is not supported: the flows compute in torch.float32 or torch.float64 (in half precision their inverse and log-Jacobians lose most of their digits); keep the flow in float32 and cast its inputs with .float(), also under torch.autocast
    """  # noqa: E501
    if dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"{what} {dtype} is not supported: the flows compute in torch.float32 or "
            "torch.float64 (in half precision their inverse and log-Jacobians lose most of "
            "their digits); keep the flow in float32 and cast its inputs with .float(), also "
            "under torch.autocast"
        )


def check_floating_tensor(value: object, name: str) -> torch.Tensor:
    """``value`` if it is a float32 or float64 tensor, else a ValueError naming what it is.

    >>> check_floating_tensor(torch.arange(3), "x")
    Traceback (most recent call last):
        ...
    ValueError: x must be a floating-point tensor, got dtype torch.int64
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {value.dtype}")
    check_dtype(value.dtype, f"{name} of dtype")
    return value
