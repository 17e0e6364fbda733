"""Our flows side by side with their peers: log_prob forward+backward time, sampling time, peak
memory of the backward pass and round-trip error, in one run.

Each flow maps data x to noise z (the normalizing direction); ``log_prob(x)`` is
``base.log_prob(T(x)) + log|det J_T(x)|`` and sampling is ``T^-1(z)`` for B standard normal z.
Pyro's transforms enter as ``TransformedDistribution(base, [t.inv])`` (the density-estimation
idiom), zuko's flows and UMNN's ``UMNNMAFFlow`` as their libraries give them. Every model is at
its initialization and has a conditioner with two hidden layers of 64 (zuko's default); the
per-dimension parts are sized so the models have comparable parameter counts, printed in the table.

Each (model, d, B) runs in a fresh process with ``--threads`` intra-op threads. log_prob is timed
as the median of repeats of ``(-flow.log_prob(x).mean()).backward()`` after a warm-up call. Peak
memory is the rise of the process's peak resident set (VmHWM, reset through
``/proc/self/clear_refs``, with glibc's mmap threshold fixed so freed tensors leave the resident
set) over one forward+backward, or ``torch.cuda.max_memory_allocated`` on a GPU. Sampling is
timed once, and as a median of three when one call takes under a second; a call still running
after ``--sample-budget`` seconds is stopped and shown as ``>budget``, so its ratio is a bound.
The round-trip error is ``max |T(T^-1(z)) - z|``.

Our flows run their per-pair work in the native CPU kernels (``numerics.native``), as they do
by default. "(exact, PyTorch)" and "(PyTorch)" are the same flows with the kernels off, the code
that runs on a GPU or where no C compiler is found, with the exact integral's kernel compiled by
``torch.compile`` at the warm-up call, outside the timings (compile mode ``"always"``: the
steady state of a long run under the default ``"auto"``). "(linear conditioner)" is the flow
with ``hidden_dims=()``: each dimension's numbers affine in the coordinates before it, the
paper's model and the cheapest conditioner at large widths.

The floor: the time of one ``torch.tanh`` over a tensor of B * d * K * m elements, the size of
the quadrature path's integrand, and our quadrature flow's forward+backward as a multiple of it.

    python benchmarks/run.py                      # d in {2, 8, 32}, B in {512, 4096}
    python benchmarks/run.py --quick              # d = 8, B = 512
    python benchmarks/run.py --device cuda --batches 4096 65536
    python benchmarks/run.py --dims 2 8 --batches 4096 --widths 16 64 256 1024 --plot widths.png

With ``--widths`` our flows are measured at each hidden width m (the peers once, at their own
sizes, and zuko's NSF also at each width with a conditioner as wide as gives it our
unconstrained flow's parameter count there) and the report is the width axis: time, ns per
(row, unit) pair (the log_prob time over B * d * m), peak memory and sampling time against m,
plotted with ``--plot``. ``--grid`` runs the grid first and reports both, in one run (the width
axis at ``--width-dims`` and ``--width-batches``, of ``--width-models``)::

    python benchmarks/run.py --grid --threads 1 --widths 16 64 256 1024 4096 --plot widths.png
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

HIDDEN = [64, 64]  # every conditioner: two hidden layers of 64 (zuko's default)
WIDTH = 16  # m of our per-dimension networks: 14k parameters at d = 8, like UMNN's
_width = WIDTH  # the m a worker builds our flows with (--width)
_match_width = False  # whether a matched peer sizes itself to our flow at _width (--matched)
SIGNAL = 16  # zuko's and UMNN's embedding size
ZUKO_INTEGRAND = [16, 16]  # the per-dimension networks of zuko's UNAF and NAF
UMNN_INTEGRAND = [32, 32]  # UMNN's integrand network, shared by the dimensions
PEER_NODES = 32  # zuko's Gauss-Legendre default; UMNN's Clenshaw-Curtis steps set to match
PYRO_NAF_WIDTH = 8
SPLINE_BINS = 8  # Pyro's default


@dataclass
class Subject:
    """A flow under test: log p(x), the inverse T^-1(z) (None if it has none) and T(x)."""

    module: object
    log_prob: Callable
    inverse: Callable | None
    forward: Callable


def _pyro_subject(transform, d: int, device, dtype) -> Subject:
    import pyro.distributions as dist
    import torch

    transform = transform.to(device=device, dtype=dtype)
    base = dist.Normal(torch.zeros(d, device=device, dtype=dtype), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, [transform.inv])
    has_inverse = not type(transform).__name__.startswith("NeuralAutoregressive")
    return Subject(
        transform,
        lambda x: flow.log_prob(x.clone()),
        # A fresh tensor each call, so no transform answers from its cache.
        (lambda z: transform.inv(z.clone())) if has_inverse else None,
        lambda x: transform(x.clone()),
    )


def _zuko_subject(flow, device, dtype) -> Subject:
    flow = flow.to(device=device, dtype=dtype)
    return Subject(
        flow,
        lambda x: flow().log_prob(x),
        lambda z: flow().transform.inv(z),
        lambda x: flow().transform(x),
    )


def _umnn_subject(d: int, device, dtype) -> Subject:
    import torch
    from UMNN import UMNNMAFFlow

    flow = UMNNMAFFlow(
        nb_flow=1,
        nb_in=d,
        hidden_derivative=UMNN_INTEGRAND,
        hidden_embedding=HIDDEN,
        embedding_s=SIGNAL,
        nb_steps=PEER_NODES,
        solver="CC",
        device=str(device),
    )
    # UMNNMAFFlow.to(device) also stores its argument as the device its inverse allocates on:
    # cast through the plain module method.
    flow = torch.nn.Module.to(flow, dtype=dtype)
    return Subject(flow, lambda x: flow.compute_ll(x)[0], flow.invert, flow.forward)


def _ours(kind: str, autoregressive: bool, d: int, device, dtype, **extra) -> Subject:
    import pyro_overparam_flows as pof
    from pyro_overparam_flows.numerics import native
    from pyro_overparam_flows.numerics.compilation import set_compile_mode

    set_compile_mode("always")
    if kind.endswith("-pytorch"):  # the PyTorch code, compiled: no native kernels
        kind = kind.removesuffix("-pytorch")
        native.use_native(False)
    hidden = HIDDEN
    if kind.endswith("-linear"):  # the linear conditioner, hidden_dims=()
        kind, hidden = kind.removesuffix("-linear"), []

    options = {
        "unconstrained-relu": ("unconstrained", {}),
        "unconstrained-tanh": ("unconstrained", {"activation": "tanh", "phi": "softplus"}),
        "constrained": ("constrained", {}),
    }
    family, kwargs = options[kind]
    kwargs = {**kwargs, **extra}
    if autoregressive:
        maker = getattr(pof, f"{family}_monotone_autoregressive")
        transform = maker(d, _width, hidden_dims=hidden, **kwargs)
    else:
        transform = getattr(pof, f"{family}_monotone")(d, _width, **kwargs)
    return _pyro_subject(transform, d, device, dtype)


def _zuko(name: str, d: int, device, dtype) -> Subject:
    import zuko

    flow = getattr(zuko.flows, name)(
        d,
        transforms=1,
        signal=SIGNAL,
        network={"hidden_features": ZUKO_INTEGRAND},
        hidden_features=HIDDEN,
    )
    return _zuko_subject(flow, device, dtype)


def _zuko_nsf(d: int, device, dtype) -> Subject:
    """zuko's NSF with a conditioner of two hidden layers: of 64 on the grid, and on the width
    axis as wide as makes its parameter count that of our unconstrained flow at the width
    measured (the peer at matched parameter counts)."""
    import zuko

    def build(features: int):
        return zuko.flows.NSF(d, transforms=1, hidden_features=[features, features])

    features = HIDDEN[0]
    if _match_width:
        target = _ours("unconstrained-relu", True, d, device, dtype).module
        wanted = sum(p.numel() for p in target.parameters() if p.requires_grad)
        low, high = 1, 8192
        while low < high:  # the smallest width with at least the parameters wanted
            middle = (low + high) // 2
            if sum(p.numel() for p in build(middle).parameters()) < wanted:
                low = middle + 1
            else:
                high = middle
        features = low
    return _zuko_subject(build(features), device, dtype)


def _pyro_peer(name: str, d: int, device, dtype) -> Subject:
    from pyro.distributions import transforms

    if name == "neural":
        transform = transforms.neural_autoregressive(d, hidden_dims=HIDDEN, width=PYRO_NAF_WIDTH)
    else:
        transform = transforms.spline_autoregressive(d, hidden_dims=HIDDEN, count_bins=SPLINE_BINS)
    return _pyro_subject(transform, d, device, dtype)


#: name -> (group, builder(d, device, dtype)). Groups: which of ours each peer is compared with.
MODELS: dict[str, tuple[str, Callable]] = {
    "ours U-ReLU AR (exact)": ("ours", lambda *a: _ours("unconstrained-relu", True, *a)),
    "ours U-ReLU AR (exact, PyTorch)": (
        "ours",
        lambda *a: _ours("unconstrained-relu-pytorch", True, *a),
    ),
    "ours U-ReLU AR (linear conditioner)": (
        "ours",
        lambda *a: _ours("unconstrained-relu-linear", True, *a),
    ),
    "ours U-tanh AR (quadrature)": ("ours", lambda *a: _ours("unconstrained-tanh", True, *a)),
    "ours C-tanh AR": ("ours", lambda *a: _ours("constrained", True, *a)),
    "ours C-tanh AR (PyTorch)": ("ours", lambda *a: _ours("constrained-pytorch", True, *a)),
    "ours C-tanh AR (linear conditioner)": (
        "ours",
        lambda *a: _ours("constrained-linear", True, *a),
    ),
    "ours U-ReLU elementwise": ("ours", lambda *a: _ours("unconstrained-relu", False, *a)),
    "ours U-tanh elementwise": ("ours", lambda *a: _ours("unconstrained-tanh", False, *a)),
    "ours C-tanh elementwise": ("ours", lambda *a: _ours("constrained", False, *a)),
    "zuko UNAF": ("integral", lambda *a: _zuko("UNAF", *a)),
    "UMNN MAF (CC)": ("integral", _umnn_subject),
    "zuko NAF": ("constrained", lambda *a: _zuko("NAF", *a)),
    "Pyro neural_autoregressive": ("constrained", lambda *a: _pyro_peer("neural", *a)),
    "Pyro spline_autoregressive": ("other", lambda *a: _pyro_peer("spline", *a)),
    "zuko NSF": ("other", _zuko_nsf),
}
#: Our flows on the width axis, by default.
WIDTH_MODELS = [
    "ours U-ReLU AR (exact)",
    "ours U-ReLU AR (linear conditioner)",
    "ours C-tanh AR",
    "ours C-tanh AR (linear conditioner)",
    "zuko NSF",
    "Pyro spline_autoregressive",
]
#: Peers measured at every width with parameter counts matched to our flow's there.
MATCHED_PEERS = ["zuko NSF"]
QUADRATURE_MODEL = "ours U-tanh AR (quadrature)"
#: The numbers of quadrature nodes K at which the quadrature flow's peak memory is also measured.
NODE_COUNTS = (8, 96, 384)
DEFAULT_NODES = 24  # DEFAULT_QUADRATURE_NODES["softplus"], the quadrature flow's K
#: Our autoregressive flows, each set against every peer in the ratios.
COMPARED = [
    "ours U-ReLU AR (exact)",
    "ours U-ReLU AR (exact, PyTorch)",
    QUADRATURE_MODEL,
    "ours C-tanh AR",
]


# ----------------------------------------------------------------------------- the worker


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) * 1024


class PeakMemory:
    """Peak bytes allocated above the level at entry, on the CPU (resident set) or a GPU."""

    def __init__(self, device):
        self.device = device

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.start = _status("VmRSS")
        return self

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.peak = _status("VmHWM") - self.start


def _timer(device) -> Callable[[Callable], float]:
    import torch

    def run(fn: Callable) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    return run


def _emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def worker(name: str, d: int, batch: int, args: argparse.Namespace) -> None:
    """Measure one model at one (d, B); print one JSON line per measurement."""
    import pyro
    import torch

    global _width, _match_width
    _width, _match_width = args.width, args.matched
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    subject = MODELS[name][1](d, device, dtype)
    params = [p for p in subject.module.parameters() if p.requires_grad]
    _emit(params=sum(p.numel() for p in params))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, d, generator=generator, dtype=dtype).to(device)
    z = torch.randn(batch, d, generator=generator, dtype=dtype).to(device)
    timed = _timer(device)

    def step() -> None:
        for p in params:
            p.grad = None
        (-subject.log_prob(x).mean()).backward()

    step()  # warm-up
    if args.memory:
        for p in params:
            p.grad = None
        with PeakMemory(device) as memory:
            step()
        _emit(memory=memory.peak)
        if name == QUADRATURE_MODEL:  # the same flow with other numbers of nodes
            peaks = {}
            for count in NODE_COUNTS:
                torch.manual_seed(0)
                other = _ours("unconstrained-tanh", True, d, device, dtype, quadrature_nodes=count)
                other_params = [p for p in other.module.parameters() if p.requires_grad]
                (-other.log_prob(x).mean()).backward()
                for p in other_params:
                    p.grad = None
                with PeakMemory(device) as memory:
                    (-other.log_prob(x).mean()).backward()
                peaks[count] = memory.peak
            _emit(memory_by_nodes=peaks)
        return
    times = [timed(step)]
    while len(times) < args.repeats or (sum(times) < 1.0 and len(times) < 50):
        times.append(timed(step))
    _emit(log_prob=statistics.median(times))

    if name == QUADRATURE_MODEL:
        transform = subject.module
        size = batch * d * transform.quadrature_nodes.numel() * transform.width
        u = torch.randn(size, device=device, dtype=dtype)
        torch.tanh(u)
        floor = [timed(lambda: torch.tanh(u)) for _ in range(max(args.repeats, 10))]
        _emit(floor=statistics.median(floor), floor_elements=size)

    if subject.inverse is None:
        return
    with torch.no_grad():
        if "PyTorch" in name:  # compile the kernel's gradient-free variant outside the timing
            subject.inverse(z[:64])
        first = time.perf_counter()
        sample = subject.inverse(z)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times = [time.perf_counter() - first]
        if times[0] < 1.0:
            times += [timed(lambda: subject.inverse(z)) for _ in range(2)]
        error = (subject.forward(sample) - z).abs().max()
    _emit(sample=statistics.median(times), round_trip=float(error))


# ----------------------------------------------------------------------------- the driver


def measure(name: str, d: int, batch: int, args: argparse.Namespace) -> dict:
    """Measure one configuration: its peak memory in one fresh process, its times in another."""
    # A fixed mmap threshold returns freed tensors to the system at once, so the resident set
    # follows the memory in use; it also slows allocation, so the timed process runs without.
    memory = _run_worker(name, d, batch, args, ["--memory"], {"MALLOC_MMAP_THRESHOLD_": "65536"})
    result = _run_worker(name, d, batch, args, [], {})
    return {**memory, **result} if "error" not in memory else memory


def _run_worker(
    name: str, d: int, batch: int, args: argparse.Namespace, flags: list[str], env: dict
) -> dict:
    """Run the worker and collect what it printed; stop it once sampling has run
    ``args.sample_budget`` seconds (or log_prob twice that)."""
    command = [sys.executable, __file__, "--worker", name, str(d), str(batch), *flags]
    command += ["--threads", str(args.threads), "--device", args.device, "--dtype", args.dtype]
    command += ["--repeats", str(args.repeats), "--width", str(args.width)]
    command += ["--matched"] if args.matched else []
    environment = dict(os.environ, **env)
    lines: queue.Queue = queue.Queue()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, text=True
    )
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    result: dict = {}
    phase_start, budget = time.monotonic(), 2 * args.sample_budget
    while process.poll() is None or not lines.empty():
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if process.poll() is None and time.monotonic() - phase_start > budget:
                process.kill()
                result["timed_out"] = "sample" if "log_prob" in result else "log_prob"
            continue
        if not line.startswith("{"):
            continue  # a peer's own printing
        result.update(json.loads(line))
        if "log_prob" in line or "floor" in line:
            phase_start, budget = time.monotonic(), args.sample_budget
    process.wait()
    if process.returncode != 0 and "timed_out" not in result:
        result["error"] = (process.stderr.read().strip().splitlines() or ["no output"])[-1]
    return result


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{1e3 * seconds:.4g}"


def _cell(result: dict, key: str, budget: float) -> str:
    if key in result:
        return _ms(result[key])
    if result.get("timed_out") == key:
        return f">{_ms(budget)}"
    return "n/a" if key == "sample" and "log_prob" in result else "-"


def _ratio(ours: dict, peer: dict, key: str, budget: float) -> str:
    """ours / peer (below 1: ours is smaller); an upper bound when the peer ran out of time."""
    if key not in ours:
        return "-"
    if key in peer and peer[key] > 0:
        return f"{ours[key] / peer[key]:.3g}"
    if peer.get("timed_out") == key:
        return f"<{ours[key] / budget:.3g}"
    return "-"


def format_report(results: dict, args: argparse.Namespace) -> str:
    """The absolute table, the ratios ours/peer and the floor, as Markdown."""
    budget = args.sample_budget
    rows = [
        "| d | B | model | params | log_prob fwd+bwd (ms) | peak memory (MB) | sampling (ms) "
        "| round-trip error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (d, batch), models in results.items():
        for name, r in models.items():
            memory = f"{r['memory'] / 2**20:.4g}" if "memory" in r else "-"
            error = f"{r['round_trip']:.2g}" if "round_trip" in r else "-"
            cells = [
                str(d),
                str(batch),
                name,
                str(r.get("params", "-")),
                _cell(r, "log_prob", 2 * budget),
            ]
            cells += [memory, _cell(r, "sample", budget), error]
            if "error" in r:
                cells[-1] += f" (failed: {r['error'][:60]})"
            rows.append("| " + " | ".join(cells) + " |")
    ours = COMPARED
    rows += ["", "Ratios ours / peer (below 1: ours is faster or smaller).", ""]
    header = "| d | B | peer |" + "".join(
        f" {o.removeprefix('ours ')}: time | memory | sampling |" for o in ours
    )
    rows += [header, "|---|---|---|" + "---|---|---|" * len(ours)]
    for (d, batch), models in results.items():
        for name, peer in models.items():
            if MODELS[name][0] == "ours":
                continue
            cells = [str(d), str(batch), name]
            for o in ours:
                mine = models.get(o, {})
                cells += [
                    _ratio(mine, peer, "log_prob", 2 * budget),
                    _ratio(mine, peer, "memory", float("inf")),
                    _ratio(mine, peer, "sample", budget),
                ]
            rows.append("| " + " | ".join(cells) + " |")
    rows += ["", "Floor: one torch.tanh over B * d * K * m elements; peak memory of the", ""]
    rows[-2] += f" quadrature flow's forward+backward at other K (default {DEFAULT_NODES})."
    counts = " | ".join(f"memory K={k} (MB)" for k in NODE_COUNTS)
    rows += [
        f"| d | B | elements | tanh (ms) | quadrature fwd+bwd / floor | {counts} |",
        "|---|---|---|---|---|" + "---|" * len(NODE_COUNTS),
    ]
    for (d, batch), models in results.items():
        r = models.get(QUADRATURE_MODEL, {})
        if "floor" in r and "log_prob" in r:
            peaks = r.get("memory_by_nodes", {})
            cells = [
                f"{peaks[str(k)] / 2**20:.4g}" if str(k) in peaks else "-" for k in NODE_COUNTS
            ]
            rows.append(
                f"| {d} | {batch} | {r['floor_elements']} | {_ms(r['floor'])} "
                f"| {r['log_prob'] / r['floor']:.3g} | " + " | ".join(cells) + " |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="d = 8, B = 512 only")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--sample-budget", type=float, default=120.0, help="seconds per sampling call"
    )
    parser.add_argument("--output", help="also write the report (Markdown) to this file")
    parser.add_argument(
        "--widths", type=int, nargs="+", help="the width axis: our flows at each hidden width m"
    )
    parser.add_argument("--plot", help="with --widths: save time against width to this file")
    parser.add_argument(
        "--grid", action="store_true", help="with --widths: run the grid of --dims too, first"
    )
    parser.add_argument(
        "--width-dims", type=int, nargs="+", default=[2, 8], help="d of the width axis"
    )
    parser.add_argument(
        "--width-batches", type=int, nargs="+", default=[4096], help="B of the width axis"
    )
    parser.add_argument(
        "--width-models", nargs="+", default=WIDTH_MODELS, choices=list(MODELS),
        help="the models of the width axis (peers among them are measured once, at their own "
        "size, and zuko NSF also at each width with matched parameter counts)",
    )  # fmt: skip
    parser.add_argument("--width", type=int, default=WIDTH, help=argparse.SUPPRESS)
    parser.add_argument("--matched", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("MODEL", "D", "B"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        name, d, batch = args.worker
        worker(name, int(d), int(batch), args)
        return
    if args.quick:
        args.dims, args.batches = [8], [512]
    if args.widths and not args.grid:
        _write(width_axis(args), args, argv)
        return
    configurations = [(d, b) for d in args.dims for b in args.batches]
    results: dict = {c: {} for c in configurations}
    progress = tqdm(
        total=len(configurations) * len(args.models), desc="benchmark", unit="run", disable=None
    )
    for d, batch in configurations:
        for name in args.models:
            progress.set_postfix_str(f"d={d} B={batch} {name}")
            results[d, batch][name] = measure(name, d, batch, args)
            progress.update()
    progress.close()
    report = format_report(results, args)
    if args.widths:
        report += "\n\n## The width axis\n\n" + width_axis(args)
    _write(report, args, argv)


def _write(report: str, args: argparse.Namespace, argv: list[str] | None) -> None:
    """Print the report under a header naming the command and the machine; save it with
    ``--output``."""
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    import torch

    from pyro_overparam_flows.numerics.compilation import compile_mode

    header = (
        f"`{command.strip()}` on {args.device} ({_device_name(args.device)}), {args.dtype}, "
        f"{args.threads} threads, torch {torch.__version__}, compile mode {compile_mode()!r}\n\n"
    )
    print(header + report)
    if args.output:
        with open(args.output, "w") as f:
            f.write(header + report + "\n")


def width_axis(args: argparse.Namespace) -> str:
    """Measure our flows at every width of ``--widths`` and the peers once, per (d, B); return
    the Markdown table (and save the figure with ``--plot``)."""
    dims = args.width_dims if args.grid else args.dims
    batches = args.width_batches if args.grid else args.batches
    models = args.width_models if args.grid else args.models
    configurations = [(d, b) for d in dims for b in batches]
    ours = [name for name in models if MODELS[name][0] == "ours"]
    peers = [name for name in models if MODELS[name][0] != "ours"]
    matched = [name for name in peers if name in MATCHED_PEERS]
    per_width = len(ours) + len(matched)
    total = len(configurations) * (per_width * len(args.widths) + len(peers))
    progress = tqdm(total=total, desc="width axis", unit="run", disable=None)
    rows: list[dict] = []
    for d, batch in configurations:
        for name in ours:
            for width in args.widths:
                progress.set_postfix_str(f"d={d} B={batch} {name} m={width}")
                args.width = width
                rows.append({"d": d, "B": batch, "model": name, "m": width,
                             **measure(name, d, batch, args)})  # fmt: skip
                progress.update()
        for name in matched:
            for width in args.widths:
                progress.set_postfix_str(f"d={d} B={batch} {name} matched to m={width}")
                args.width, args.matched = width, True
                rows.append({"d": d, "B": batch, "model": f"{name} (params of m = {width})",
                             "m": width, "matched": True,
                             **measure(name, d, batch, args)})  # fmt: skip
                progress.update()
            args.matched = False
        for name in peers:
            progress.set_postfix_str(f"d={d} B={batch} {name}")
            args.width = WIDTH
            rows.append(
                {"d": d, "B": batch, "model": name, "m": None, **measure(name, d, batch, args)}
            )
            progress.update()
    progress.close()
    if args.plot:
        plot_width_axis(rows, args.plot)
    lines = [
        "| d | B | model | m | params | log_prob fwd+bwd (ms) | ns per (row, unit) "
        "| peak memory (MB) | sampling (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pair = "-"
        if r["m"] is not None and "log_prob" in r and not r.get("matched"):
            pair = f"{1e9 * r['log_prob'] / (r['B'] * r['d'] * r['m']):.3g}"
        memory = f"{r['memory'] / 2**20:.4g}" if "memory" in r else "-"
        cells = [str(r["d"]), str(r["B"]), r["model"], "-" if r["m"] is None else str(r["m"])]
        cells += [str(r.get("params", "-")), _cell(r, "log_prob", 2 * args.sample_budget), pair]
        cells += [memory, _cell(r, "sample", args.sample_budget)]
        if "error" in r:
            cells[-1] += f" (failed: {r['error'][:60]})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_width_axis(rows: list[dict], path: str) -> None:
    """log_prob time against width, one panel per (d, B): our flows as lines, the peers as
    horizontal references."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["d"], r["B"]) for r in rows})
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (d, batch) in zip(axes[0], panels, strict=True):
        here = [r for r in rows if (r["d"], r["B"]) == (d, batch) and "log_prob" in r]
        for name in dict.fromkeys(
            r["model"] for r in here if r["m"] is not None and not r.get("matched")
        ):
            own = sorted((r["m"], r["log_prob"]) for r in here if r["model"] == name)
            axis.plot(*zip(*own, strict=True), "-o", label=name.removeprefix("ours "))
        matched = sorted((r["m"], r["log_prob"], r["model"]) for r in here if r.get("matched"))
        for name in dict.fromkeys(model.split(" (")[0] for _, _, model in matched):
            points = [(m, t) for m, t, model in matched if model.startswith(name)]
            axis.plot(*zip(*points, strict=True), ":s", color="0.4",
                      label=f"{name} (parameters matched)")  # fmt: skip
        for r in (r for r in here if r["m"] is None):
            axis.axhline(r["log_prob"], ls="--", lw=1, color="0.5")
            axis.text(0.01, r["log_prob"], r["model"], transform=axis.get_yaxis_transform(),
                      fontsize=7, color="0.3", va="bottom")  # fmt: skip
        axis.set_xscale("log", base=2)
        axis.set(yscale="log", xlabel="hidden width m", ylabel="seconds",
                 title=f"log_prob fwd+bwd, d = {d}, B = {batch}")  # fmt: skip
        axis.legend(frameon=False, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
