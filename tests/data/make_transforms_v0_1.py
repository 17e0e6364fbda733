"""Writes transforms_v0_1.pt: transforms pickled by version 0.1 of the package (its families
were mixins of the transform classes), with their outputs then, for
``tests/test_family_contract.py``. Run it with that version (commit 0852112) on the path::

    git worktree add /tmp/v0_1 0852112
    PYTHONPATH=/tmp/v0_1 python tests/data/make_transforms_v0_1.py
"""

import io
from pathlib import Path

import torch

import pyro_overparam_flows as pof


def main() -> None:
    torch.manual_seed(0)
    made = {
        "constrained_monotone": pof.constrained_monotone(2, 4),
        "constrained_monotone_no_tail": pof.constrained_monotone(
            2, 4, tail=False, positivity="projected"
        ),
        "unconstrained_monotone_tanh": pof.unconstrained_monotone(
            2, 4, activation="tanh", quadrature_nodes=8
        ),
        "unconstrained_monotone_preset": pof.unconstrained_monotone(
            2, 4, parametrization="gaussian-sqrt(m)"
        ),
        "constrained_monotone_autoregressive": pof.constrained_monotone_autoregressive(
            3, 4, hidden_dims=[6]
        ),
        "unconstrained_monotone_coupling": pof.unconstrained_monotone_coupling(
            3, 4, hidden_dims=[6]
        ),
        "conditional_unconstrained_monotone_autoregressive": (
            pof.conditional_unconstrained_monotone_autoregressive(3, 2, 4, hidden_dims=[6])
        ),
    }
    with torch.no_grad():
        for module in made.values():
            for parameter in module.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    x = 0.5 * torch.randn(4, 3)
    context = torch.randn(2)
    outputs = {}
    for name, module in made.items():
        transform = module.condition(context) if name.startswith("conditional") else module
        with torch.no_grad():
            outputs[name] = transform(x[:, : module.input_dim])
    buffer = io.BytesIO()
    torch.save({"modules": made, "x": x, "context": context, "outputs": outputs}, buffer)
    (Path(__file__).parent / "transforms_v0_1.pt").open("wb").write(buffer.getvalue())


if __name__ == "__main__":
    main()
