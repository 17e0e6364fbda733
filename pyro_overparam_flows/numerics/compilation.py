r"""Fused kernels: elementwise-heavy numerics compiled by ``torch.compile`` where that pays.

The exact per-row ReLU integral (:mod:`~pyro_overparam_flows.numerics.piecewise`) is about a
hundred small elementwise operations per block of rows. Eager PyTorch runs each of them as a
pass over memory; compiled by Inductor they become a few loops, two to five times faster on the
CPU. Compiling costs time once per process (15 to 30 seconds on two cores, a few seconds when
Inductor's on-disk cache already holds the kernel), so by default (``"auto"``) nothing is
compiled until it has paid for itself: a kernel is compiled once its eager calls of at least
:data:`AUTO_MIN_ELEMENTS` elements (the training-sized ones) have taken
:data:`AUTO_PAYBACK_SECONDS` in the process, about what compiling costs. A short run, a test or
a one-off evaluation never waits for the compiler; a long training run compiles after half a
minute and runs faster from then on. ``"always"`` compiles at the first CPU call. When a kernel
starts compiling a :class:`CompilationNotice` (a warning) says so, once.

If compilation fails (no C++ compiler, a Python that Dynamo does not support, too many
recompilations) the kernel warns once and runs eagerly from then on; results are the same either
way to rounding (the last bits of a row can differ between a compiled and an eager call). Tensors
on other devices (CUDA) always run eagerly: their blocks are large enough that launch overheads
are already amortized.

The mode is set by :func:`set_compile_mode` or, at import, by the environment variable
``PYRO_OVERPARAM_FLOWS_COMPILE`` (``auto``, ``always`` or ``never``).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ..validation import check_choice

__all__ = [
    "AUTO_MIN_ELEMENTS",
    "AUTO_PAYBACK_SECONDS",
    "COMPILE_MODES",
    "CompilationNotice",
    "FusedKernel",
    "compile_mode",
    "set_compile_mode",
]

#: ``"auto"``: compile large CPU calls; ``"always"``: every CPU call; ``"never"``: eager only.
COMPILE_MODES = ("auto", "always", "never")
#: Elements (rows x width) of a call that ``"auto"`` counts and compiles: a batch of 4096 rows
#: of 8 dimensions at width 16 is 2^19.
AUTO_MIN_ELEMENTS = 1 << 18
#: Seconds of eager calls of at least :data:`AUTO_MIN_ELEMENTS` elements after which ``"auto"``
#: compiles a kernel: about what compiling costs, so no run spends more than twice the time it
#: would with the better choice made in advance.
AUTO_PAYBACK_SECONDS = 30.0


class CompilationNotice(UserWarning):
    """Issued once when a kernel starts compiling (``warnings.simplefilter("ignore",
    CompilationNotice)`` silences it).

    >>> import warnings
    >>> issubclass(CompilationNotice, UserWarning)
    True
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", CompilationNotice)
    ...     warnings.warn("compiling", CompilationNotice)  # silenced
    """


def _check_mode(mode: object) -> str:
    return check_choice(mode, COMPILE_MODES, "compile mode")  # type: ignore[return-value]


def _mode_from_environment() -> str:
    value = os.environ.get("PYRO_OVERPARAM_FLOWS_COMPILE", "auto").strip().lower()
    if value not in COMPILE_MODES:
        warnings.warn(
            f"PYRO_OVERPARAM_FLOWS_COMPILE={value!r} is not one of {', '.join(COMPILE_MODES)}; "
            "using 'auto'",
            stacklevel=2,
        )
        return "auto"
    return value


_mode = _mode_from_environment()


def compile_mode() -> str:
    """The current mode: ``"auto"``, ``"always"`` or ``"never"`` (:data:`COMPILE_MODES`), set
    by :func:`set_compile_mode` or the environment variable ``PYRO_OVERPARAM_FLOWS_COMPILE``.

    >>> compile_mode() in COMPILE_MODES
    True
    """
    return _mode


def set_compile_mode(mode: str) -> str:
    """Set when fused kernels are compiled; returns the previous mode.

    >>> previous = set_compile_mode("never")
    >>> compile_mode()
    'never'
    >>> _ = set_compile_mode(previous)

    :param str mode: ``"auto"`` (CPU calls of at least :data:`AUTO_MIN_ELEMENTS` elements, once
        such calls have run :data:`AUTO_PAYBACK_SECONDS` eagerly), ``"always"`` (every CPU call)
        or ``"never"`` (eager only).
    """
    global _mode
    previous, _mode = _mode, _check_mode(mode)
    return previous


class FusedKernel:
    """``fn`` (a function of tensors and static Python options, without side effects), run
    through ``torch.compile`` or eagerly according to :func:`compile_mode`.

    :param fn: the kernel.
    :param str name: what warnings call it.

    >>> kernel = FusedKernel(lambda x, y: x * y + 1.0, "demo")
    >>> x = torch.ones(3)
    >>> previous = set_compile_mode("auto")
    >>> compiled = kernel.uses_compiled(x, x.numel())  # a small call: eager under "auto"
    >>> compiled, kernel(x, x, compiled=compiled).tolist()
    (False, [2.0, 2.0, 2.0])
    >>> _ = set_compile_mode(previous)
    """

    def __init__(self, fn: Callable[..., Any], name: str):
        self.fn = fn
        self.name = name
        self.failed = False
        #: Seconds spent in eager calls that ``"auto"`` would compile.
        self.eager_seconds = 0.0
        self._compiled: Callable[..., Any] | None = None
        self._counting = False

    def uses_compiled(self, first: torch.Tensor, elements: int) -> bool:
        """Whether a call whose first argument is ``first``, of ``elements`` elements, is
        compiled (the calls that follow with ``compiled=False`` are timed for ``"auto"`` when
        they would have been)."""
        self._counting = False
        if self.failed or _mode == "never" or first.device.type != "cpu" or elements == 0:
            return False
        if torch.compiler.is_compiling():  # inside a caller's compiled graph: it traces fn
            return False
        if _mode == "always":
            return True
        if elements < AUTO_MIN_ELEMENTS:
            return False
        self._counting = self.eager_seconds < AUTO_PAYBACK_SECONDS
        return not self._counting

    def __call__(self, *args: Any, compiled: bool) -> Any:
        """``fn(*args)``, compiled if ``compiled`` (as :meth:`uses_compiled` decided for the
        call this is part of) and compiling has not failed."""
        if not compiled or self.failed:
            if not self._counting:
                return self.fn(*args)
            start = time.perf_counter()
            result = self.fn(*args)
            self.eager_seconds += time.perf_counter() - start
            return result
        # Detached, so that guards on requires_grad and on views' bases do not recompile fn.
        tensors = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        try:
            if self._compiled is None:
                self._announce()
                self._compiled = torch.compile(self.fn, dynamic=True, fullgraph=True)
            return self._compiled(*tensors)
        except Exception as error:  # whatever stopped the compiled call, eager decides
            result = self.fn(*args)  # a genuine error in fn is raised here, as it would be
            self.failed = True
            message = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
            warnings.warn(
                f"torch.compile could not run the {self.name} kernel ({type(error).__name__}: "
                f"{message}); running it eagerly from now on (same results, slower). Set "
                "PYRO_OVERPARAM_FLOWS_COMPILE=never to skip the attempt.",
                RuntimeWarning,
                stacklevel=2,
            )
            return result

    def _announce(self) -> None:
        why = (
            "PYRO_OVERPARAM_FLOWS_COMPILE=always"
            if _mode == "always"
            else f"its eager calls have taken {self.eager_seconds:.0f} s in this process"
        )
        warnings.warn(
            f"pyro_overparam_flows: compiling the {self.name} kernel with torch.compile ({why}); "
            "this takes 15-30 s once per process (less with Inductor's disk cache), then the "
            "kernel runs 2-5x faster. PYRO_OVERPARAM_FLOWS_COMPILE=never keeps it eager.",
            CompilationNotice,
            stacklevel=3,
        )
