"""Pyro's one-pair transform cache, made safe for training."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

__all__ = ["PairCache"]

_optimizer_steps = 0


def _count_optimizer_step(optimizer, args, kwargs) -> None:
    global _optimizer_steps
    _optimizer_steps += 1


# Every torch optimizer step (Pyro's optimizers included) invalidates every cached pair: some
# optimizers write p.data, which leaves the parameters' version counters as they were.
register_optimizer_step_post_hook(_count_optimizer_step)


class PairCache:
    """The last ``(x, y)`` pair a transform computed, and the conditioner's output for that x,
    answered only when it cannot be stale. Pyro keys its cache on tensor identity; four rules
    keep this one from answering with an old pair:

    1. A pair answers only the opposite direction: the inverse of an output just computed (a
       sample scored), never the same input again (data passed every step).
    2. It is dropped when a parameter or buffer of the module was changed in place, replaced
       (``pyro.module`` loading the param store, ``torch.func.functional_call``) or switched
       ``requires_grad``, and when gradients are on now but were off when it was made.
    3. It is dropped after any optimizer step in the process, since optimizers that write
       ``p.data`` (Pyro's ``ClippedAdam``) leave the version counters alone, also for the
       transforms of other ``.condition()`` calls sharing the parameters.
    4. It is dropped once a backward pass has gone through the output, for hand-written updates
       of ``p.data``.

    >>> layer = torch.nn.Linear(1, 1)
    >>> cache = PairCache()
    >>> x = torch.zeros(1)
    >>> cache.refresh(layer)
    >>> cache.remember(x, x + 1, "forward")
    >>> cache.answer(x + 1, "inverse") is None  # another tensor: not the cached output
    True
    >>> with torch.no_grad():
    ...     _ = layer.weight.mul_(2.0)  # a parameter changed in place
    >>> cache.refresh(layer)
    >>> cache.pair
    (None, None)
    """

    def __init__(self):
        self.pair: tuple[Any, Any] = (None, None)
        self.direction: str | None = None
        self.conditioning: tuple | None = None  # (x, what the conditioner gave for x)
        self.log_slope: tuple | None = None  # (x, its version, log f'(x) from a forward pass)
        self._state: tuple = ()
        self._token: object | None = None

    def forget(self) -> None:
        """Drop the pair and the conditioning."""
        self.pair = (None, None)
        self.direction = None
        self.conditioning = None
        self.log_slope = None

    def refresh(self, module: torch.nn.Module) -> None:
        """Apply rules 2 and 3: forget if ``module`` or the optimizers moved on since."""
        tensors = itertools.chain(module.parameters(), module.buffers())
        versions = tuple((id(t), t._version, t.requires_grad) for t in tensors)
        key = (torch.is_grad_enabled(), _optimizer_steps, versions)
        if key != self._state:
            self.forget()
            self._state = key

    def remember(self, x: torch.Tensor, y: torch.Tensor, direction: str) -> None:
        """Keep the pair computed in ``direction`` (``"forward"``: y = f(x), ``"inverse"``);
        rule 4 forgets it after a backward pass through its output."""
        self.pair = (x, y)
        self.direction = direction
        output = y if direction == "forward" else x
        if output.requires_grad:
            token = object()
            self._token = token

            def forget_after_backward(grad: torch.Tensor) -> None:
                if self._token is token:
                    self.forget()

            output.register_hook(forget_after_backward)

    def answer(self, value: torch.Tensor, direction: str) -> torch.Tensor | None:
        """The cached result for a call in ``direction`` on ``value``, or None (rule 1)."""
        x, y = self.pair
        if direction == "forward" and value is x and self.direction == "inverse":
            return y
        if direction == "inverse" and value is y and self.direction == "forward":
            return x
        return None

    def conditioning_for(self, x: torch.Tensor) -> Any | None:
        """What the conditioner gave for this very x in the last call, or None."""
        if self.conditioning is not None and self.conditioning[0] is x:
            return self.conditioning[1]
        return None

    def keep_log_slope(self, x: torch.Tensor, log_slope: torch.Tensor | None) -> None:
        """Keep the log-derivatives a forward pass on x computed (None: forget them)."""
        self.log_slope = None if log_slope is None else (x, x._version, log_slope)

    def log_slope_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """The log-derivatives the forward pass on this very x kept (x unchanged since), or
        None."""
        if self.log_slope is not None and self.log_slope[0] is x:
            if self.log_slope[1] == x._version:
                return self.log_slope[2]
        return None

    def __getstate__(self) -> dict:
        # The pair may hold non-leaf tensors of a finished graph: copies and pickles start empty.
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
