r"""Native CPU kernels: the per-pair work of the wide flows in one pass of C.

A one-hidden-layer flow of width m does a few dozen floating-point operations per (row, unit)
pair. Written as PyTorch operations those are dozens of passes over (rows x m) temporaries, so
the cost is memory traffic, not arithmetic. The kernels of ``kernels.c`` (next to this file) do
each pair's work in registers, in one pass over the rows, in double precision whatever the
storage type:

* the exact integral of :math:`\phi(N(t))` from 0 to x for a ReLU network N with
  :math:`\phi` = ELU + 1 (the unconstrained family's default), with the gradients' moments
  (:mod:`~pyro_overparam_flows.numerics.piecewise` explains the mathematics);
* the ReLU network's output N(x) (the unconstrained log-derivative :math:`\log \phi(N(x))`);
* the constrained family's saturating part :math:`c \sum_r a_r \sigma(w_r x + b_r)` and its
  log-slope, for :math:`\sigma` = tanh or sigmoid.

Weights shared by a batch (a flow's hidden weights, one row per dimension) are read in place,
never expanded to the batch. Rows are split over ``torch.get_num_threads()`` threads.

The source is compiled once per machine with the system's C compiler (``$CC``, else ``cc``,
``gcc`` or ``clang``), in under a second, into a cache directory
(``$PYRO_OVERPARAM_FLOWS_CACHE``, else ``$XDG_CACHE_HOME/pyro_overparam_flows``, else
``~/.cache/pyro_overparam_flows``), keyed by a hash of the source and the flags. Where there is
no compiler, or compiling fails, a :class:`NativeKernelWarning` says so once and the flows run
their PyTorch code (same results to rounding, slower). Tensors on other devices, other dtypes,
and calls inside ``torch.compile`` always take the PyTorch code. ``use_native(False)`` or the
environment variable ``PYRO_OVERPARAM_FLOWS_NATIVE=never`` turns the kernels off.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

__all__ = [
    "NativeKernelWarning",
    "SATURATING_KINDS",
    "native_available",
    "native_enabled",
    "relu_integral_and_network",
    "relu_integral_rows",
    "relu_network",
    "saturating",
    "usable",
    "use_native",
]

_SOURCE = Path(__file__).with_name("kernels.c")
# Reassociation lets sums over units vectorize; no -ffast-math, which would drop inf and NaN.
_FLAGS = [
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fno-signed-zeros",
    "-fassociative-math",
    "-fPIC",
    "-shared",
    "-D_DEFAULT_SOURCE",
]
#: The constrained activations with a native kernel, and their codes in ``kernels.c``.
SATURATING_KINDS = {"tanh": 0, "sigmoid": 1}
# Rows x width per thread below which a call runs on one thread.
_PAIRS_PER_THREAD = 1 << 16

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_enabled = os.environ.get("PYRO_OVERPARAM_FLOWS_NATIVE", "auto").strip().lower() != "never"
_library: ctypes.CDLL | None = None
_load_failed = False
_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}


class NativeKernelWarning(RuntimeWarning):
    """Issued once when the native kernels cannot be built or loaded; the flows then run their
    PyTorch code.

    >>> issubclass(NativeKernelWarning, RuntimeWarning)
    True
    """


def use_native(enabled: bool) -> bool:
    """Turn the native kernels on or off for this process; returns the previous setting.

    >>> previous = use_native(False)
    >>> native_enabled()
    False
    >>> _ = use_native(previous)
    """
    global _enabled
    if not isinstance(enabled, bool):
        raise ValueError(f"use_native takes True or False, got {enabled!r}")
    previous, _enabled = _enabled, enabled
    return previous


def native_enabled() -> bool:
    """Whether the native kernels are turned on (:func:`use_native`, or the environment
    variable ``PYRO_OVERPARAM_FLOWS_NATIVE=never`` at import).

    >>> isinstance(native_enabled(), bool)
    True
    """
    return _enabled


def _cache_directory() -> Path:
    if "PYRO_OVERPARAM_FLOWS_CACHE" in os.environ:
        return Path(os.environ["PYRO_OVERPARAM_FLOWS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pyro_overparam_flows"


def _compiler() -> str | None:
    if os.environ.get("CC"):
        return os.environ["CC"]
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return name
    return None


def _build() -> Path:
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("no C compiler found (set CC, or install cc, gcc or clang)")
    source = _SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, *_FLAGS]).encode()).hexdigest()[:16]
    try:
        directory = _cache_directory()
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        directory = Path(tempfile.gettempdir()) / "pyro_overparam_flows"
        directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"kernels-{key}.so"
    if target.exists():
        return target
    # Compiled under a private name, then renamed: processes building at once never load a
    # half-written library.
    handle, partial = tempfile.mkstemp(suffix=".so", dir=directory)
    os.close(handle)
    try:
        command = [compiler, *_FLAGS, "-o", partial, str(_SOURCE), "-lm"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise RuntimeError(f"{' '.join(command)} failed: {lines[0] if lines else ''}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return target


class _Weight(ctypes.Structure):
    """One weight array and its gradient's destination (``Weight`` in ``kernels.c``)."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("period", ctypes.c_int64),
        ("stride", ctypes.c_int64),
        ("accumulate", ctypes.c_void_p),
        ("write", ctypes.c_void_p),
    ]


_P = ctypes.c_void_p
_I = ctypes.c_int64
_D = ctypes.c_double
_K = ctypes.c_int
_W = ctypes.POINTER(_Weight)
_SIGNATURES = {
    "relu_integral": (_I, [_I, _I, _I, _P, _W, _D, _P, _P, _P, _P, _P, _P]),
    "relu_integral_backward": (None, [_I, _I, _I, _P, _P, _P, _P, _P, _W, _D, _P]),
    "relu_network": (None, [_I, _I, _I, _P, _W, _D, _P, _P, _P]),
    "saturating_forward": (None, [_I, _I, _I, _K, _P, _W, _D, _P, _P, _P, _P]),
    "saturating_backward": (None, [_I, _I, _I, _K, _P, _W, _D, _P, _P, _P, _P, _P, _P]),
}


def _load() -> ctypes.CDLL | None:
    global _library, _load_failed
    if _library is not None or _load_failed:
        return _library
    with _lock:
        if _library is not None or _load_failed:
            return _library
        try:
            library = ctypes.CDLL(str(_build()))
            for name, (restype, argtypes) in _SIGNATURES.items():
                for suffix in _SUFFIX.values():
                    function = getattr(library, f"{name}_{suffix}")
                    function.restype, function.argtypes = restype, argtypes
            _library = library
        except (OSError, RuntimeError, AttributeError) as error:
            _load_failed = True
            warnings.warn(
                f"pyro_overparam_flows: the native CPU kernels are not available ({error}); "
                "the flows run their PyTorch code instead (same results, slower). "
                "PYRO_OVERPARAM_FLOWS_NATIVE=never skips the attempt.",
                NativeKernelWarning,
                stacklevel=3,
            )
    return _library


def native_available() -> bool:
    """Whether the native kernels are built and loaded (building them on the first call).

    >>> isinstance(native_available(), bool)
    True
    """
    return _load() is not None


def usable(x: torch.Tensor, *tensors: torch.Tensor) -> bool:
    """Whether a call with these tensors runs natively: kernels on and built, every tensor on
    the CPU in float32 or float64 (one dtype), outside ``torch.compile`` and ``torch.func``
    transforms.

    >>> usable(torch.zeros(2, dtype=torch.float16))
    False
    """
    if not _enabled or x.device.type != "cpu" or x.dtype not in _SUFFIX:
        return False
    if any(t.device.type != "cpu" or t.dtype != x.dtype for t in tensors):
        return False
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active():
        return False
    return _load() is not None


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def _function(name: str, dtype: torch.dtype) -> Callable:
    library = _load()
    if library is None:
        raise RuntimeError("the native kernels are not available; check usable() first")
    return getattr(library, f"{name}_{_SUFFIX[dtype]}")


def _chunks(rows: int, width: int) -> list[tuple[int, int]]:
    if rows == 0:
        return [(0, 0)]
    threads = max(1, min(torch.get_num_threads(), rows * width // _PAIRS_PER_THREAD))
    step = -(-rows // threads)
    return [(start, min(rows, start + step)) for start in range(0, rows, step)]


def _parallel(call: Callable[[int, int, int], object], rows: int, width: int) -> list:
    """``call(index, row0, row1)`` over chunks of the rows, on as many threads as torch uses
    (ctypes releases the interpreter lock during each call)."""
    chunks = _chunks(rows, width)
    if len(chunks) == 1:
        return [call(0, *chunks[0])]
    pool = _pools.get(len(chunks))
    if pool is None:
        pool = _pools.setdefault(len(chunks), ThreadPoolExecutor(len(chunks)))
    futures = [pool.submit(call, index, *chunk) for index, chunk in enumerate(chunks)]
    return [future.result() for future in futures]


def _weights(arrays: list[torch.Tensor], rows: int) -> ctypes.Array:
    """The kernels' view of (period, m) weight arrays, for a forward call."""
    weights = (_Weight * len(arrays))()
    for weight, array in zip(weights, arrays, strict=True):
        if rows and (array.shape[0] == 0 or rows % array.shape[0]):
            raise ValueError(f"a weight of {array.shape[0]} rows cannot be read by {rows} rows")
        weight.data, weight.period, weight.stride = (
            array.data_ptr(),
            array.shape[0],
            array.stride(0),
        )
    return weights


def _gradient_sinks(arrays: list[torch.Tensor], rows: int, chunks: int):
    """Per chunk of rows, the weights with their gradients' destinations: a weight with a row
    per batch row gets its gradient written into one array of its dtype (chunks write disjoint
    rows); a weight read by several rows gets float64 zeros per chunk, added to. Returns the
    per-chunk weight views and, per weight, its gradient arrays."""
    targets = []
    for array in arrays:
        if array.shape[0] == rows:
            targets.append([array.new_empty(array.shape)] * chunks)
        else:
            targets.append(
                [array.new_zeros(array.shape, dtype=torch.float64) for _ in range(chunks)]
            )
    views = []
    for chunk in range(chunks):
        weights = _weights(arrays, rows)
        for weight, array, target in zip(weights, arrays, targets, strict=True):
            if array.shape[0] == rows:
                weight.write = target[chunk].data_ptr()
            else:
                weight.accumulate = target[chunk].data_ptr()
        views.append(weights)
    return views, targets


def _gradients(targets: list[list[torch.Tensor]], dtype: torch.dtype) -> list[torch.Tensor]:
    """Each weight's gradient from its per-chunk arrays."""
    gradients = []
    for parts in targets:
        if all(part is parts[0] for part in parts):  # one array: written, or one chunk
            gradients.append(parts[0].to(dtype))
        else:
            gradients.append(torch.stack(parts).sum(0).to(dtype))
    return gradients


def _weight_gradients(
    name: str, x: torch.Tensor, weights: list[torch.Tensor], arguments: Callable
) -> list[torch.Tensor]:
    """Run the backward kernel ``name`` over the rows of x in chunks, ``arguments(view)`` giving
    its arguments after ``(row0, row1, m)`` (``view``: the weights with that chunk's gradient
    destinations); return the weights' gradients."""
    rows, width = x.shape[0], weights[0].shape[-1]
    kernel = _function(name, x.dtype)
    views, targets = _gradient_sinks(weights, rows, len(_chunks(rows, width)))

    def call(index: int, row0: int, row1: int) -> None:
        kernel(row0, row1, width, *arguments(views[index]))

    _parallel(call, rows, width)
    return _gradients(targets, x.dtype)


class _ReluIntegral(torch.autograd.Function):
    """The integral and N(x), both differentiable."""

    @staticmethod
    def forward(ctx, x, w, b, a, c):
        rows, width = x.shape[0], w.shape[-1]
        weights = _weights([w, b, a], rows)
        out, network = torch.empty_like(x), torch.empty_like(x)
        gradients = any(ctx.needs_input_grad[:4])
        dx = torch.empty_like(x) if gradients else None
        slope = x.new_empty(rows, width) if gradients else None
        intercept = x.new_empty(rows, width) if gradients else None
        kernel = _function("relu_integral", x.dtype)
        chunks = _chunks(rows, width)
        works = [x.new_empty(80 * (width + 1), dtype=torch.uint8) for _ in chunks]

        def call(index: int, row0: int, row1: int) -> int:
            return kernel(
                row0, row1, width, x.data_ptr(), weights, c, out.data_ptr(),
                network.data_ptr(), _pointer(dx), _pointer(slope), _pointer(intercept),
                works[index].data_ptr(),
            )  # fmt: skip

        if sum(_parallel(call, rows, width)):
            raise ValueError("the native integral needs finite limits")
        ctx.c = c
        ctx.save_for_backward(x, dx, slope, intercept, w, b, a)
        return out, network

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad, grad_network):
        x, dx, slope, intercept, w, b, a = ctx.saved_tensors
        grad = torch.zeros_like(x) if grad is None else grad.contiguous()
        gn = None if grad_network is None else grad_network.contiguous()
        gx = torch.empty_like(x)
        gradients = _weight_gradients(
            "relu_integral_backward", x, [w, b, a],
            lambda view: (x.data_ptr(), grad.data_ptr(), _pointer(gn), slope.data_ptr(),
                          intercept.data_ptr(), view, ctx.c, gx.data_ptr()),
        )  # fmt: skip
        return torch.addcmul(gx, grad, dx), *gradients, None


class _ReluNetwork(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, a, c):
        rows, width = x.shape[0], w.shape[-1]
        weights = _weights([w, b, a], rows)
        out = torch.empty_like(x)
        kernel = _function("relu_network", x.dtype)

        def call(index: int, row0: int, row1: int) -> None:
            kernel(row0, row1, width, x.data_ptr(), weights, c, out.data_ptr(), None, None)

        _parallel(call, rows, width)
        ctx.c = c
        ctx.save_for_backward(x, w, b, a)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, w, b, a = ctx.saved_tensors
        grad = grad.contiguous()
        gx = torch.empty_like(x)
        gradients = _weight_gradients(
            "relu_network", x, [w, b, a],
            lambda view: (x.data_ptr(), view, ctx.c, None, grad.data_ptr(), gx.data_ptr()),
        )  # fmt: skip
        return gx, *gradients, None


class _Saturating(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, a, log_w, log_a, c, kind):
        rows, width = x.shape[0], w.shape[-1]
        if log_w.shape != w.shape or log_a.shape != a.shape:
            raise ValueError("log w and log a must have the shapes of w and a")
        weights = _weights([w, b, a, log_w, log_a], rows)
        y, log_slope = torch.empty_like(x), torch.empty_like(x)
        gradients = any(ctx.needs_input_grad[:6])
        # sigma(u) and sigma'(u) of every pair, kept for the backward pass
        values = x.new_empty(rows, width) if gradients else None
        slopes = x.new_empty(rows, width) if gradients else None
        kernel = _function("saturating_forward", x.dtype)

        def call(index: int, row0: int, row1: int) -> None:
            kernel(
                row0, row1, width, kind, x.data_ptr(), weights, c, y.data_ptr(),
                log_slope.data_ptr(), _pointer(values), _pointer(slopes),
            )  # fmt: skip

        _parallel(call, rows, width)
        ctx.c, ctx.kind = c, kind
        ctx.save_for_backward(x, w, b, a, log_w, log_a, log_slope, values, slopes)
        return y, log_slope

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_log_slope):
        x, w, b, a, log_w, log_a, log_slope, values, slopes = ctx.saved_tensors
        gy = None if grad_y is None else grad_y.contiguous()
        gl = None if grad_log_slope is None else grad_log_slope.contiguous()
        gx = torch.empty_like(x)
        gradients = _weight_gradients(
            "saturating_backward", x, [w, b, a, log_w, log_a],
            lambda view: (ctx.kind, x.data_ptr(), view, ctx.c, log_slope.data_ptr(),
                          values.data_ptr(), slopes.data_ptr(), _pointer(gy), _pointer(gl),
                          gx.data_ptr()),
        )  # fmt: skip
        return gx, *gradients, None, None


def _layout(x: torch.Tensor, weights: tuple[torch.Tensor, ...]):
    """x as (L,) rows against weights of shape (..., m), each as a (period, m) array with
    contiguous rows that row i reads at row i % period: the weights' own storage where they
    broadcast over leading dimensions only, an expanded copy otherwise. Differentiable;
    returns the rows, the arrays and the output shape."""
    shape = torch.broadcast_shapes(x.shape + (1,), *(t.shape for t in weights))
    width, batch = shape[-1], shape[:-1]
    rows = x.expand(batch).reshape(-1)
    arrays = []
    for t in weights:
        own = (1,) * (len(shape) - t.dim()) + tuple(t.shape)
        leading = next((k for k, size in enumerate(own[:-1]) if size != 1), len(own) - 1)
        if own[leading:] != tuple(shape[leading:]):
            arrays.append(t.expand(shape).reshape(-1, width))
            continue
        try:  # rows evenly spaced, each contiguous: read in place (a slice of a conditioner's
            # output is)
            array = t.view(-1, width)
        except RuntimeError:
            array = t.reshape(-1, width)
        arrays.append(array if array.stride(-1) == 1 else array.contiguous())
    return rows.contiguous(), arrays, batch


def relu_integral_rows(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, a: torch.Tensor, c: float
) -> torch.Tensor:
    r"""The exact :math:`\int_0^x \phi(N(t))\,dt`, :math:`\phi` = ELU + 1, for x of shape
    ``(*batch, D)`` and w, b, a broadcasting to ``(*batch, D, m)``; differentiable in all four.
    Call when :func:`usable` says so.

    >>> w = torch.ones(1, 1, dtype=torch.float64)
    >>> x = torch.tensor([[2.0]], dtype=torch.float64)
    >>> if usable(x, w):  # N(t) = relu(t): the integral of t + 1 over [0, 2] is 4
    ...     assert relu_integral_rows(x, w, torch.zeros_like(w), w, 1.0).item() == 4.0
    """
    return relu_integral_and_network(x, w, b, a, c)[0]


def relu_integral_and_network(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, a: torch.Tensor, c: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":func:`relu_integral_rows` and N(x) (:func:`relu_network`) from one pass; both
    differentiable, with one pass back.

    >>> w = torch.ones(1, 1, dtype=torch.float64)
    >>> x = torch.tensor([[2.0]], dtype=torch.float64)
    >>> if usable(x, w):  # N(t) = relu(t): the integral of t + 1 over [0, 2] is 4; N(2) = 2
    ...     integral, network = relu_integral_and_network(x, w, torch.zeros_like(w), w, 1.0)
    ...     assert integral.item() == 4.0 and network.item() == 2.0
    """
    rows, (wr, br, ar), batch = _layout(x, (w, b, a))
    integral, network = _ReluIntegral.apply(rows, wr, br, ar, float(c))
    return integral.reshape(batch), network.reshape(batch)


def relu_network(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, a: torch.Tensor, c: float
) -> torch.Tensor:
    r""":math:`N(x) = c \sum_r a_r\,\mathrm{relu}(w_r x + b_r)` for x of shape ``(*batch, D)``
    and w, b, a broadcasting to ``(*batch, D, m)``; differentiable. Call when :func:`usable`
    says so.

    >>> w = torch.ones(1, 2, dtype=torch.float64)
    >>> x = torch.tensor([[3.0]], dtype=torch.float64)
    >>> if usable(x, w):  # 2 units of relu(3)
    ...     assert relu_network(x, w, torch.zeros_like(w), w, 0.5).item() == 3.0
    """
    rows, (wr, br, ar), batch = _layout(x, (w, b, a))
    return _ReluNetwork.apply(rows, wr, br, ar, float(c)).reshape(batch)


def saturating(
    x: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor,
    a: torch.Tensor,
    log_w: torch.Tensor,
    log_a: torch.Tensor,
    c: float,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    r""":math:`c \sum_r a_r \sigma(w_r x + b_r)` and :math:`\log\big(c \sum_r a_r w_r
    \sigma'(w_r x + b_r)\big)`, sigma one of :data:`SATURATING_KINDS`, for x of shape
    ``(*batch, D)`` and positive w, a (with their logs) and b broadcasting to ``(*batch, D,
    m)``; differentiable. Call when :func:`usable` says so.

    >>> one = torch.ones(1, 1, dtype=torch.float64)
    >>> x = torch.zeros(1, 1, dtype=torch.float64)
    >>> if usable(x, one):  # tanh(0) = 0, tanh'(0) = 1
    ...     y, log_slope = saturating(x, one, 0 * one, one, 0 * one, 0 * one, 1.0, "tanh")
    ...     assert y.item() == 0.0 and log_slope.item() == 0.0
    """
    if activation not in SATURATING_KINDS:
        allowed = ", ".join(repr(name) for name in SATURATING_KINDS)
        raise ValueError(f"no native kernel for activation={activation!r}; allowed: {allowed}")
    rows, arrays, batch = _layout(x, (w, b, a, log_w, log_a))
    y, log_slope = _Saturating.apply(rows, *arrays, float(c), SATURATING_KINDS[activation])
    return y.reshape(batch), log_slope.reshape(batch)
