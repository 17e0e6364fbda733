"""Maximum-likelihood training of a monotone flow with PyTorch's DistributedDataParallel (DDP),
inside Pyro's SVI loop: every process holds a replica of the flow and scores its shard of each
global mini-batch; DDP averages the gradients, so every replica takes the same step.

The data are the paper's 2-D checkerboard, z-scored; the flow is one autoregressive layer
(``unconstrained_monotone_autoregressive`` or ``constrained_monotone_autoregressive``), which can
represent it: x1 is uniform, x2 given x1 uniform on two squares. Every process makes the whole
(small) data set and uses only its shard; data that do not fit would be loaded by shard.

Why the loss must pass through the DDP wrapper: DDP all-reduces gradients in hooks that its own
``forward`` arms for the coming backward pass. Scoring data with the transform directly
(``TransformedDistribution.log_prob``, ``pyro.sample(..., obs=x)``) never calls
``DDP.forward``, and each process would silently step on its own gradient. So the per-sample
log-density is a small module, :class:`LogDensity`, which DDP wraps; the model calls the wrapper
and hands its output to Pyro with ``pyro.factor``, while ``pyro.module`` registers the wrapped
module's parameters (the very tensors DDP reduces into) for Pyro's optimizer.

How the loss is scaled: the model observes its shard inside ``pyro.plate("data", N,
subsample=shard)``, so Pyro scales the ELBO by N / len(shard): every process's loss estimates
the negative log-likelihood of the whole data set, N times the mean over its shard. DDP
averages the gradients of these estimates over the processes; with equal shards that is the
gradient of N times the mean over the global batch, the loss of one process that observes the
whole global batch in the same plate (:func:`reference`). Hence the global batch size must be a
multiple of the number of processes.

Run:  python examples/ddp_training.py --world-size 2         (2 processes, gloo on CPU; 35 s)
      torchrun --nproc-per-node 2 examples/ddp_training.py   (torchrun starts the processes and
                                                              sets RANK, WORLD_SIZE, MASTER_*)
      python examples/ddp_training.py --device cuda          (nccl, one GPU per process)
      python examples/ddp_training.py --quick                (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pyro
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.infer import SVI, Trace_ELBO
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from pyro_overparam_flows import (
    constrained_monotone_autoregressive,
    unconstrained_monotone_autoregressive,
)
from pyro_overparam_flows.datasets import Preprocessed, Split, checkerboard, zscore
from pyro_overparam_flows.training import density, negative_log_likelihood

FLOWS = {
    "unconstrained": unconstrained_monotone_autoregressive,
    "constrained": constrained_monotone_autoregressive,
}


@dataclass(frozen=True)
class Config:
    """Everything a process needs to train: the same on every rank."""

    flow: str = "unconstrained"
    width: int = 32
    hidden_dims: tuple[int, ...] = (64, 64)
    steps: int = 1000
    batch_size: int = 256  # global: split evenly over the processes
    learning_rate: float = 5e-3
    optimizer: str = "adam"
    train_size: int = 9_000
    test_size: int = 1_000
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    seed: int = 0


class LogDensity(torch.nn.Module):
    """The flow's per-sample log-density as a module, so that DDP can wrap the computation the
    loss goes through."""

    def __init__(self, transform: torch.nn.Module):
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return density(self.transform, x).log_prob(x)


def build_flow(config: Config) -> torch.nn.Module:
    torch.manual_seed(config.seed)  # the same initial parameters on every rank
    transform = FLOWS[config.flow](2, config.width, list(config.hidden_dims))
    return transform.to(dtype=config.dtype)


def load_data(config: Config) -> tuple[Split, Preprocessed]:
    """The raw checkerboard split and its z-scored version (every rank makes the same)."""
    split = checkerboard(config.train_size, config.test_size, seed=config.seed, dtype=config.dtype)
    return split, zscore(split)


def global_batches(config: Config, size: int) -> Iterator[torch.Tensor]:
    """The indices of each step's global mini-batch, drawn identically on every rank."""
    generator = torch.Generator().manual_seed(config.seed)
    for _ in range(config.steps):
        yield torch.randperm(size, generator=generator)[: config.batch_size]


def _optimizer(config: Config):
    optimizers = {"adam": pyro.optim.Adam, "sgd": pyro.optim.SGD}
    return optimizers[config.optimizer]({"lr": config.learning_rate})


def train(rank: int, world_size: int, config: Config, progress: bool = False) -> dict:
    """Train on rank ``rank`` of ``world_size`` processes: with DDP when ``torch.distributed``
    is initialized, as a single process otherwise (``world_size`` 1).

    :returns: ``{"state": the flow's final state_dict, "losses": the global mini-batch's
        negative log-likelihood per datum at each step, "rank_difference": the largest
        difference between this rank's final parameters and rank 0's}``.
    """
    if config.batch_size % world_size:
        raise ValueError(
            f"the global batch size {config.batch_size} must be a multiple of the "
            f"{world_size} processes, for DDP's average to be the global batch's mean"
        )
    device = _device(config, rank)
    distributed = dist.is_available() and dist.is_initialized()
    # A stale parameter of the same name would shadow the module's in pyro.module.
    pyro.clear_param_store()
    pyro.set_rng_seed(config.seed)
    _, data = load_data(config)
    train_data = data.train.to(device)
    local = LogDensity(build_flow(config)).to(device)
    log_density = local
    if distributed:
        # DDP broadcasts rank 0's parameters here, and all-reduces gradients in backward.
        log_density = DistributedDataParallel(
            local, device_ids=[device.index] if device.type == "cuda" else None
        )

    def model(shard: torch.Tensor) -> None:
        pyro.module("flow", local)
        with pyro.plate("data", len(train_data), subsample=shard):
            pyro.factor("x", log_density(train_data[shard]))

    svi = SVI(model, lambda shard: None, _optimizer(config), Trace_ELBO())
    losses = []
    bar = tqdm(
        global_batches(config, len(train_data)),
        total=config.steps,
        desc=f"{config.flow} flow, {world_size} process(es)",
        disable=None if progress and rank == 0 else True,
        leave=False,
    )
    for batch in bar:
        shard = batch.tensor_split(world_size)[rank].to(device)
        loss = torch.tensor(svi.step(shard), dtype=torch.float64, device=device)
        if hasattr(local.transform, "project_"):  # projected SGD: the same on every rank
            local.transform.project_()
        if distributed:
            dist.all_reduce(loss)  # the processes' estimates, averaged below
        losses.append(float(loss) / world_size / len(train_data))
        bar.set_postfix(nll=f"{losses[-1]:.4f}", refresh=False)
    state = {
        name: value.detach().cpu().clone() for name, value in local.transform.state_dict().items()
    }
    return {
        "state": state,
        "losses": losses,
        "rank_difference": _rank_difference(local, device) if distributed else 0.0,
    }


def _rank_difference(module: torch.nn.Module, device: torch.device) -> float:
    """The largest difference between any rank's parameters and rank 0's."""
    mine = torch.cat([p.detach().flatten() for p in module.parameters()]).to(device)
    first = mine.clone()
    dist.broadcast(first, 0)
    difference = (mine - first).abs().max()
    dist.all_reduce(difference, op=dist.ReduceOp.MAX)
    return float(difference)


def reference(config: Config) -> dict:
    """The single-process run on the same global batches: what DDP must reproduce."""
    return train(0, 1, config)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _device(config: Config, rank: int) -> torch.device:
    if config.device == "cpu":
        return torch.device("cpu")
    # One GPU per process: the local rank under torchrun, the rank when spawned here.
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))


def _backend(config: Config) -> str:
    return "nccl" if config.device == "cuda" else "gloo"


def _spawned(rank: int, world_size: int, configs: list[Config], port: int, directory: str) -> None:
    """The body of each spawned process: join the group over loopback, train, save."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)  # the processes share the machine's cores
    dist.init_process_group(_backend(configs[0]), rank=rank, world_size=world_size)
    try:
        for index, config in enumerate(configs):
            result = train(rank, world_size, config, progress=True)
            torch.save(result, Path(directory) / f"config{index}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def launch(world_size: int, configs: list[Config], directory: str | Path) -> list[list[dict]]:
    """Train each of ``configs`` (on one device type) in turn in ``world_size`` spawned
    processes; returns each config's list of each rank's :func:`train` result, saved under
    ``directory``. One start-up serves every config: starting processes is the slow part."""
    port = free_port()
    mp.spawn(_spawned, args=(world_size, configs, port, str(directory)), nprocs=world_size)
    return [
        [torch.load(Path(directory) / f"config{i}_rank{rank}.pt") for rank in range(world_size)]
        for i in range(len(configs))
    ]


def report(config: Config, result: dict, world_size: int, output: Path | None) -> None:
    split, data = load_data(config)
    flow = build_flow(config)
    flow.load_state_dict(result["state"])
    # NLL of the raw data: the z-scored data's NLL less the log-determinant of the z-scoring.
    log_det = float(data.transform.log_abs_det_jacobian(split.test[:1], data.test[:1]))
    test = negative_log_likelihood(flow, data.test) - log_det
    train_nll = negative_log_likelihood(flow, data.train) - log_det
    exact = float(-split.distribution.log_prob(split.test).mean())
    print(
        f"DDP, {world_size} processes ({_backend(config)}), {config.flow} flow: "
        f"{config.steps} steps of global batches of {config.batch_size}; parameters identical "
        f"on every rank: {result['rank_difference'] == 0.0}"
    )
    if output is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        output.mkdir(parents=True, exist_ok=True)
        figure, axis = plt.subplots(figsize=(6, 4))
        axis.plot(result["losses"], linewidth=0.8)
        axis.set_xlabel("step")
        axis.set_ylabel("global mini-batch NLL per datum (z-scored)")
        axis.set_title(f"{config.flow} flow, DDP over {world_size} processes")
        figure.tight_layout()
        figure.savefig(output / "ddp_loss.png", dpi=120)
        plt.close(figure)
        print(f"loss curve: {output / 'ddp_loss.png'}")
    print(f"final NLL: train {train_nll:.4f}, test {test:.4f} nats (true density {exact:.4f})")


def parse_config() -> tuple[Config, int, Path | None]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2, help="processes to spawn")
    parser.add_argument("--flow", choices=sorted(FLOWS), default="unconstrained")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256, help="global mini-batch size")
    parser.add_argument("--learning-rate", type=float, default=5e-3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--output", type=Path, default=None, help="save the loss curve here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    config = Config(
        flow=args.flow,
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        device=args.device,
        seed=args.seed,
    )
    if args.quick:
        config = replace(config, width=8, hidden_dims=(16,), steps=20, train_size=1024)
    return config, args.world_size, args.output


def main() -> None:
    config, world_size, output = parse_config()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # torchrun made the processes
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        torch.set_num_threads(1)
        dist.init_process_group(_backend(config))
        try:
            result = train(rank, world_size, config, progress=True)
        finally:
            dist.destroy_process_group()
        if rank == 0:
            report(config, result, world_size, output)
        return
    with tempfile.TemporaryDirectory() as directory:
        (ranks,) = launch(world_size, [config], directory)
    report(config, ranks[0], world_size, output)


if __name__ == "__main__":
    main()
