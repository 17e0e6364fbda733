r"""The infinite-width view of the one-hidden-layer flows (Jacot et al. 2018; Aitchison 2020).

For a scalar input x and the network :math:`N(x) = c_m \sum_{r=1}^m a_r \rho(w_r x + b_r)`:

* the **empirical NTK** :math:`\Theta_m(x, x') = \langle \partial_\theta g(x), \partial_\theta
  g(x')\rangle` of the network (g = N) or of the flow map (g = f), with respect to the trained
  parameters (:func:`empirical_ntk`);
* the **infinite-width kernels** of the network, with :math:`u = w x + b`, :math:`u' = w x' + b`
  and :math:`\sigma_a^2 = \lim_m m\,c_m^2\,\mathbb{E}[a^2]`,

  .. math::

      K(x, x') = \sigma_a^2\,\mathbb{E}[\rho(u)\rho(u')], \qquad
      \Theta(x, x') = \mathbb{E}[\rho(u)\rho(u')]
        + \sigma_a^2\,(x x' + 1)\,\mathbb{E}[\rho'(u)\rho'(u')],

  the first term of :math:`\Theta` present only when the output layer is trained, and
  written for :math:`m c_m^2 \to 1` as under ``"ntk"`` (:func:`infinite_width_kernels`). K is
  the NNGP covariance when a has mean 0; with the positive a of constrained flows the network
  also has a mean, :math:`m c_m \mathbb{E}[a]\,\mathbb{E}[\rho(u)]`, not included in K. The
  expectations are 2-D integrals over (w, b), Gaussian or, for the constrained family, with
  half-normal w. They are computed in polar coordinates
  :math:`(w, b) = r(\sigma_w \cos\vartheta, \sigma_b \sin\vartheta)`: Gauss-Legendre in the
  angle on the arcs between the angles where u or u' is 0 (ReLU's kinks, so that every arc
  is smooth), graded towards the kinks, and Gauss-Legendre in the radius against
  :math:`r e^{-r^2/2}` on [0, 13], graded towards 0 (the tail beyond is below 1e-36). For
  ReLU and erf with Gaussian weights the kernels have closed forms, the arc-cosine kernel
  of Cho & Saul and the arcsine kernel of Williams (:func:`closed_form_kernels`), which
  check the quadrature;
* **laziness** along training: the distance of each parameter from its initialization
  (:func:`parameter_distances`) and the kernel distance
  :math:`\|\Theta_t - \Theta_0\|_F / \|\Theta_0\|_F` (:func:`kernel_distance`).

Under the ``"ntk"`` parametrization the empirical NTK at initialization tends to
:func:`infinite_width_ntk` as :math:`m \to \infty` with error of order :math:`1/\sqrt{m}`, and
for a fixed training budget the kernel moves less the wider the network.

References:

[1] Arthur Jacot, Franck Gabriel, Clement Hongler. Neural Tangent Kernel: Convergence and
Generalization in Neural Networks. NeurIPS 2018.

[2] Youngmin Cho, Lawrence Saul. Kernel Methods for Deep Learning. NeurIPS 2009.

[3] Christopher Williams. Computing with Infinite Networks. NeurIPS 1996.

[4] Laurence Aitchison. Why bigger is not always better: on finite and infinite neural networks.
ICML 2020.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from .activations import HIDDEN, lookup
from .maps import constrained_map, network_output
from .numerics import quadrature_rule
from .transforms import MonotoneTransformModule
from .transforms.constrained import ConstrainedFamily
from .transforms.unconstrained import UnconstrainedFamily
from .validation import check_choice, check_positive_int, check_positive_number

__all__ = [
    "Kernels",
    "KernelLimit",
    "closed_form_kernels",
    "empirical_ntk",
    "infinite_width_kernels",
    "infinite_width_ntk",
    "kernel_distance",
    "kernel_limit",
    "parameter_distances",
]

_OUTPUTS = ("flow", "network")
_WEIGHTS = ("normal", "half-normal")
_RADIUS = 13.0


class Kernels(NamedTuple):
    r"""The NNGP kernel K and the NTK :math:`\Theta`, each of shape ``(n, n2)``: with
    :math:`u = w x + b`, :math:`u' = w x' + b`,

    .. math::

        K(x, x') = \sigma_a^2\,\mathbb{E}[\rho(u)\rho(u')], \qquad
        \Theta(x, x') = \mathbb{E}[\rho(u)\rho(u')]
          + \sigma_a^2\,(x x' + 1)\,\mathbb{E}[\rho'(u)\rho'(u')]

    (the first term of :math:`\Theta` only when the output layer is trained).

    >>> kernels = closed_form_kernels(torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    >>> tuple(kernels.nngp.shape), tuple(kernels.ntk.shape)
    ((3, 3), (3, 3))
    >>> torch.allclose(kernels.ntk, kernels.ntk.T)
    True
    """

    nngp: torch.Tensor
    ntk: torch.Tensor


def _as_points(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2 and x.shape[-1] == 1:
        x = x.squeeze(-1)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.dim() != 1 or len(x) == 0:
        raise ValueError(
            f"{name} must hold scalar inputs, shape (n,) or (n, 1), got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite")
    return x


class _Network(nn.Module):
    """The network part of an element-wise transform: N for unconstrained flows, and
    :math:`c \\sum_r a_r \\sigma(w_r x + b_r)` (no tail, no offset) for constrained ones."""

    def __init__(self, transform: MonotoneTransformModule):
        super().__init__()
        self.transform = transform

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.transform.network()
        if isinstance(self.transform.family, UnconstrainedFamily):
            return network_output(x, net, self.transform.activation)
        net = net._replace(tail=None, log_tail=None, offset=torch.zeros_like(net.offset))
        return constrained_map(x, net, self.transform.activation)


def _elementwise(transform: object) -> bool:
    """Whether ``transform`` is an element-wise flow of one of the two families."""
    return isinstance(transform, MonotoneTransformModule) and isinstance(
        transform.family, ConstrainedFamily | UnconstrainedFamily
    )


def _network_parameter(name: str) -> bool:
    return name.endswith(("hidden_weight", "hidden_bias", "output_weight"))


def empirical_ntk(
    transform: MonotoneTransformModule,
    x: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    output: str = "network",
) -> torch.Tensor:
    r"""The empirical NTK of an element-wise flow, one kernel per dimension.

    :math:`\Theta[d, i, j] = \sum_\theta \partial_\theta g_d(x_i)\,\partial_\theta g_d(x2_j)` over
    the transform's trained parameters, as stored (for constrained flows with
    ``positivity="projected"`` these are the weights themselves; with a reparametrization the
    chain rule through it is included). Dimensions have separate parameters, so kernels across
    dimensions are zero and are not returned. All per-sample gradients come from one backward
    pass through per-row copies of the parameters (no loop over samples).

    :param transform: a :class:`~pyro_overparam_flows.ConstrainedMonotone` or
        :class:`~pyro_overparam_flows.UnconstrainedMonotone`.
    :param torch.Tensor x: inputs, shape ``(n, D)`` (or ``(n,)`` when D = 1).
    :param torch.Tensor x2: second inputs, shape ``(n2, D)``; ``x`` if None.
    :param str output: ``"network"`` (g = the network: N for unconstrained flows, the sum
        :math:`c \sum_r a_r \sigma(w_r x + b_r)` for constrained ones; its parameters w, b, a)
        or ``"flow"`` (g = f, all trained parameters, offset and tail included).
    :returns: shape ``(D, n, n2)``.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> transform = unconstrained_monotone(1, width=32, parametrization="ntk")
    >>> empirical_ntk(transform, torch.linspace(-1, 1, 5)).shape
    torch.Size([1, 5, 5])
    """
    if not _elementwise(transform):
        raise TypeError(
            "empirical_ntk takes an element-wise ConstrainedMonotone or UnconstrainedMonotone, "
            f"got {type(transform).__name__}"
        )
    check_choice(output, _OUTPUTS, "output")
    dim = transform.input_dim
    points = []
    for name, value in (("x", x), ("x2", x2)):
        if value is None:
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 1 and dim == 1:
            value = value.unsqueeze(-1)
        transform._check(value, name)
        if value.dim() != 2 or len(value) == 0:
            raise ValueError(
                f"{name} must have shape (n, {dim}) with n >= 1, got {tuple(value.shape)}"
            )
        points.append(value)
    rows = torch.cat(points)
    module = transform if output == "flow" else _Network(transform)
    trained = {
        name: p
        for name, p in transform.named_parameters()
        if p.requires_grad and (output == "flow" or _network_parameter(name))
    }
    if not trained:
        raise ValueError("the transform has no trained parameters to differentiate")
    prefix = "" if output == "flow" else "transform."
    # One copy of every parameter per row: the gradient of the summed outputs with respect to
    # copy i is the gradient of row i's outputs (rows share nothing), dimension by dimension.
    copies = {
        prefix + name: p.detach().unsqueeze(0).expand(len(rows), *p.shape).clone().requires_grad_()
        for name, p in trained.items()
    }
    with torch.enable_grad():
        values = torch.func.functional_call(module, copies, (rows,))
        grads = torch.autograd.grad(values.sum(), list(copies.values()))
    jacobian = torch.cat([g.reshape(len(rows), dim, -1) for g in grads], -1)
    first, second = jacobian[: len(points[0])], jacobian[len(points[0]) :]
    return torch.einsum("idp,jdp->dij", first, first if x2 is None else second)


_GRADING = 0.25  # each graded sub-interval is this fraction of the next one


def _composite_rule(
    edges: list[float], nodes: int, dtype: torch.dtype, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre with ``nodes`` points on each interval between consecutive ``edges``."""
    unit, unit_weights = quadrature_rule("gauss-legendre", nodes, dtype=dtype, device=device)
    cuts = torch.tensor(edges, dtype=dtype, device=device)
    lengths = (cuts[1:] - cuts[:-1]).unsqueeze(-1)
    return (cuts[:-1].unsqueeze(-1) + lengths * unit).reshape(-1), (lengths * unit_weights).reshape(
        -1
    )


def _levels(smallest: float) -> int:
    """Graded levels so that the smallest sub-interval is at most ``smallest`` of the whole."""
    return max(1, math.ceil(math.log(1.0 / smallest) / math.log(1.0 / _GRADING)))


def _arcs(first: torch.Tensor, second: torch.Tensor, half: bool, hidden_std, bias_std):
    """For each pair of inputs, the arcs of angle between the angles where u or u' is 0:
    shape ``(n, n2, arcs, 2)``."""
    # u = r (hidden_std x cos t + bias_std sin t) vanishes at t = atan2(-hidden_std x, bias_std)
    # (in (-pi/2, pi/2)) and at that angle plus pi.
    kink = lambda x: torch.atan2(-hidden_std * x, torch.full_like(x, bias_std))  # noqa: E731
    a, b = torch.broadcast_tensors(kink(first).unsqueeze(-1), kink(second))
    low, high = torch.minimum(a, b), torch.maximum(a, b)
    if half:  # w > 0: t in (-pi/2, pi/2)
        ends = [torch.full_like(low, -math.pi / 2), low, high, torch.full_like(low, math.pi / 2)]
    else:
        ends = [low, high, low + math.pi, high + math.pi, low + 2 * math.pi]
    ends = torch.stack(ends, -1)
    return torch.stack([ends[..., :-1], ends[..., 1:]], -1)


def infinite_width_kernels(
    x: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    activation: str = "relu",
    weights: str = "normal",
    hidden_std: float = 1.0,
    bias_std: float = 1.0,
    output_variance: float = 1.0,
    train_output: bool = True,
    angular_nodes: int = 16,
    radial_nodes: int = 16,
) -> Kernels:
    r"""The infinite-width NNGP kernel and NTK of the one-hidden-layer network, by quadrature.

    Each entry is a 2-D integral over (w, b) in polar coordinates, computed pair by pair: the
    angle range is cut where u or u' changes sign (so ReLU's kinks fall on the cuts), each arc
    is graded geometrically towards its ends and the radius towards 0 (features of width
    :math:`1/(r\sqrt{\sigma_w^2 x^2 + \sigma_b^2})` there are resolved whatever the inputs'
    size), with ``angular_nodes`` / ``radial_nodes`` Gauss-Legendre points on each piece. The
    cost grows like ``n * n2`` times the square of the log of the largest
    :math:`\sigma_w |x| / \sigma_b`.

    :param torch.Tensor x: scalar inputs, shape ``(n,)`` or ``(n, 1)``, floating point.
    :param torch.Tensor x2: second inputs; ``x`` if None.
    :param str activation: :math:`\rho`: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"softplus"``
        or ``"erf"``.
    :param str weights: the law of w: ``"normal"`` :math:`N(0, \sigma_w^2)` or
        ``"half-normal"`` :math:`|N(0, \sigma_w^2)|` (the constrained family).
    :param float hidden_std: :math:`\sigma_w`.
    :param float bias_std: :math:`\sigma_b` (b is :math:`N(0, \sigma_b^2)`).
    :param float output_variance: :math:`\sigma_a^2 = \lim_m m\,c_m^2\,\mathbb{E}[a^2]`.
    :param bool train_output: whether the output layer is trained (the NTK's first term, which
        assumes :math:`m c_m^2 \to 1` as under ``"ntk"``).
    :param int angular_nodes: Gauss-Legendre points per angular piece.
    :param int radial_nodes: Gauss-Legendre points per radial piece.
    :returns: :class:`Kernels` of shape ``(n, n2)`` in x's dtype (use float64 for accuracy).

    >>> x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)
    >>> quadrature = infinite_width_kernels(x, activation="erf")
    >>> exact = closed_form_kernels(x, activation="erf")
    >>> bool(torch.allclose(quadrature.ntk, exact.ntk, rtol=0, atol=1e-12))
    True
    """
    rho = lookup(HIDDEN, activation, "activation")
    check_choice(weights, _WEIGHTS, "weights")
    _check_scales(hidden_std, bias_std, output_variance)
    check_positive_int(angular_nodes, "angular_nodes")
    check_positive_int(radial_nodes, "radial_nodes")
    first = _as_points(x, "x")
    second = first if x2 is None else _as_points(x2, "x2").to(first)
    dtype, device = first.dtype, first.device
    half = weights == "half-normal"
    # The narrowest feature: width 1 / (R * scale) in angle (near a kink) and 1 / scale in r.
    largest = float(torch.cat([first, second]).abs().max())
    scale = math.sqrt((hidden_std * largest) ** 2 + bias_std**2) / bias_std
    levels = _levels(1.0 / (math.pi * _RADIUS * scale))
    near = [0.5 * _GRADING**j for j in range(levels, 0, -1)]
    unit, unit_weights = _composite_rule(
        [0.0, *near, 0.5, *[1.0 - v for v in reversed(near)], 1.0], angular_nodes, dtype, device
    )
    # Graded towards 0 below r = 1, pieces of length 2 above (the Gaussian's own scale).
    graded = [_GRADING**j for j in range(_levels(1.0 / scale), 0, -1)]
    radii, radial = _composite_rule(
        [0.0, *graded, *range(1, int(_RADIUS) + 1, 2)], radial_nodes, dtype, device
    )
    # Polar density of N(0, I): exp(-r^2/2) r / (2 pi); half-normal w doubles it on w > 0.
    radial = radial * radii * torch.exp(-radii.square() / 2) / (math.pi if half else 2 * math.pi)
    arcs = _arcs(first, second, half, hidden_std, bias_std)  # (n, n2, A, 2)
    lengths = (arcs[..., 1] - arcs[..., 0]).unsqueeze(-1)
    angles = (arcs[..., :1] + lengths * unit).flatten(-2)  # (n, n2, A * T)
    angle_weights = (lengths * unit_weights).flatten(-2)

    def pre_activation(points: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (hidden_std * points * torch.cos(t) + bias_std * torch.sin(t)).unsqueeze(-1) * radii

    left, right = torch.broadcast_tensors(first.unsqueeze(-1), second)
    if x2 is None:  # symmetric: the pairs i <= j only
        upper = torch.triu_indices(len(first), len(first), device=device)
        select = lambda v: v[upper[0], upper[1]]  # noqa: E731
    else:
        select = lambda v: v.flatten(0, 1)  # noqa: E731
    pairs, pair_weights = select(angles), select(angle_weights)
    left, right = select(left).unsqueeze(-1), select(right).unsqueeze(-1)
    activations, derivatives = [], []
    # Pieces of the pairs keep the (pairs, angles, radii) grid near 4M numbers.
    chunk = max(1, 4_000_000 // (pairs.shape[-1] * len(radii)))
    for t, v, p, q in zip(
        pairs.split(chunk),
        pair_weights.split(chunk),
        left.split(chunk),
        right.split(chunk),
        strict=True,
    ):
        u, u2 = pre_activation(p, t), pre_activation(q, t)
        weight = v.unsqueeze(-1) * radial
        activations.append((rho.fn(u) * rho.fn(u2) * weight).sum((-2, -1)))
        derivatives.append((rho.derivative(u) * rho.derivative(u2) * weight).sum((-2, -1)))
    activations, derivatives = torch.cat(activations), torch.cat(derivatives)
    if x2 is None:
        full = first.new_zeros(2, len(first), len(first))
        full[:, upper[0], upper[1]] = torch.stack([activations, derivatives])
        full = full + torch.triu(full, 1).transpose(-2, -1)
        activations, derivatives = full
    else:
        activations = activations.reshape(len(first), len(second))
        derivatives = derivatives.reshape(len(first), len(second))
    inner = first.unsqueeze(-1) * second + 1.0
    ntk = output_variance * inner * derivatives
    if train_output:
        ntk = ntk + activations
    return Kernels(output_variance * activations, ntk)


def _check_scales(hidden_std: float, bias_std: float, output_variance: float) -> None:
    check_positive_number(hidden_std, "hidden_std")
    check_positive_number(bias_std, "bias_std")
    if not (isinstance(output_variance, float | int) and 0 <= output_variance < math.inf):
        raise ValueError(f"output_variance must be a number >= 0, got {output_variance!r}")


def closed_form_kernels(
    x: torch.Tensor,
    x2: torch.Tensor | None = None,
    *,
    activation: str = "relu",
    hidden_std: float = 1.0,
    bias_std: float = 1.0,
    output_variance: float = 1.0,
    train_output: bool = True,
) -> Kernels:
    r"""The same kernels as :func:`infinite_width_kernels` for Gaussian (w, b), in closed form.

    With :math:`\Sigma = \mathrm{Cov}(u, u')`, :math:`\Sigma_{11} = \sigma_w^2 x^2 + \sigma_b^2`,
    :math:`\Sigma_{12} = \sigma_w^2 x x' + \sigma_b^2`:

    * ReLU (arc-cosine kernel, Cho & Saul 2009), :math:`\cos\vartheta = \Sigma_{12} /
      \sqrt{\Sigma_{11}\Sigma_{22}}`: :math:`\mathbb{E}[\rho\rho'] = \sqrt{\Sigma_{11}\Sigma_{22}}
      (\sin\vartheta + (\pi - \vartheta)\cos\vartheta) / (2\pi)` and
      :math:`\mathbb{E}[\rho'\rho'] = (\pi - \vartheta) / (2\pi)`;
    * erf (arcsine kernel, Williams 1996): :math:`\mathbb{E}[\rho\rho'] = \frac{2}{\pi}
      \arcsin\frac{2\Sigma_{12}}{\sqrt{(1 + 2\Sigma_{11})(1 + 2\Sigma_{22})}}` and
      :math:`\mathbb{E}[\rho'\rho'] = \frac{4}{\pi} \det(I + 2\Sigma)^{-1/2}`.

    :param str activation: ``"relu"`` or ``"erf"``.

    >>> x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    >>> closed_form_kernels(x).nngp[0, 0].item()  # E[relu(b)^2] = 1/2 for b ~ N(0, 1)
    0.5
    """
    if activation not in ("relu", "erf"):
        raise ValueError(f"closed forms exist for 'relu' and 'erf' only, got {activation!r}")
    _check_scales(hidden_std, bias_std, output_variance)
    first = _as_points(x, "x")
    second = first if x2 is None else _as_points(x2, "x2").to(first)
    var1 = hidden_std**2 * first.square() + bias_std**2
    var2 = hidden_std**2 * second.square() + bias_std**2
    cov = hidden_std**2 * first.unsqueeze(-1) * second + bias_std**2
    var1, var2 = var1.unsqueeze(-1), var2.unsqueeze(0)
    if activation == "relu":
        norms = torch.sqrt(var1 * var2)
        angle = torch.arccos((cov / norms).clamp(-1.0, 1.0))
        activations = norms * (torch.sin(angle) + (math.pi - angle) * torch.cos(angle))
        activations = activations / (2 * math.pi)
        derivatives = (math.pi - angle) / (2 * math.pi)
    else:
        activations = (2 / math.pi) * torch.arcsin(
            2 * cov / torch.sqrt((1 + 2 * var1) * (1 + 2 * var2))
        )
        determinant = (1 + 2 * var1) * (1 + 2 * var2) - 4 * cov.square()
        derivatives = (4 / math.pi) / torch.sqrt(determinant)
    inner = first.unsqueeze(-1) * second + 1.0
    ntk = output_variance * inner * derivatives
    if train_output:
        ntk = ntk + activations
    return Kernels(output_variance * activations, ntk)


class KernelLimit(NamedTuple):
    r"""The arguments of :func:`infinite_width_kernels` describing a transform's limit (the law
    of w, :math:`\sigma_w`, :math:`\sigma_a^2 = \lim_m m\,c_m^2\,\mathbb{E}[a^2]`, and whether
    a is trained), as :func:`kernel_limit` gives them.

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> limit = kernel_limit(unconstrained_monotone(1, 8, parametrization="gaussian-std"))
    >>> limit.weights, limit.output_variance, limit.train_output  # a ~ N(0, 0.25^2), frozen
    ('normal', 0.0625, False)
    >>> x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    >>> infinite_width_kernels(x, **limit._asdict()).ntk.shape
    torch.Size([2, 2])
    """

    activation: str
    weights: str
    hidden_std: float
    output_variance: float
    train_output: bool


def kernel_limit(transform: MonotoneTransformModule) -> KernelLimit:
    """The infinite-width limit of an element-wise transform's network NTK at initialization.

    The NTK has a finite, non-zero limit when :math:`m c_m^2` does, i.e. for the ``"ntk"``
    parametrization and the paper's presets with :math:`c_m = 1/\\sqrt{m}`
    (``"standard-normal"``, ``"gaussian-std"``). With ``"standard"`` and the presets with
    :math:`c_m = 1` it grows like m; with ``"mean_field"`` it vanishes like 1/m: a ValueError
    says so. For the width-aware constrained ``"ntk"`` initialization,
    :math:`a = O(1/\\sqrt{m})`, so :math:`\\sigma_a^2 = 0`: only the output layer's term stays.
    Constrained flows must use ``positivity="projected"`` (parameters are the weights).

    >>> from pyro_overparam_flows import unconstrained_monotone
    >>> limit = kernel_limit(unconstrained_monotone(1, 8, parametrization="ntk"))
    >>> limit.weights, limit.output_variance, limit.train_output
    ('normal', 1.0, True)
    """
    if not _elementwise(transform):
        raise TypeError(
            "kernel_limit takes an element-wise ConstrainedMonotone or UnconstrainedMonotone, "
            f"got {type(transform).__name__}"
        )
    parametrization = transform.parametrization
    constrained = isinstance(transform.family, ConstrainedFamily)
    if constrained and not transform.positivity.projected:
        raise ValueError(
            "the limit is that of the NTK with respect to the weights themselves: build the "
            f"constrained flow with positivity='projected', not {transform.positivity.name!r}"
        )
    limits = {
        ("constrained", "ntk"): ("half-normal", 0.0, True),
        ("constrained", "standard-normal"): ("half-normal", 0.005**2, True),
        ("unconstrained", "ntk"): ("normal", 1.0, True),
        ("unconstrained", "gaussian-std"): ("normal", 0.25**2, False),
    }
    family = "constrained" if constrained else "unconstrained"
    if (family, parametrization) not in limits:
        growth = "vanishes like 1/m" if parametrization == "mean_field" else "grows like m"
        raise ValueError(
            f"the NTK of the {family} parametrization {parametrization!r} has no finite "
            f"non-zero infinite-width limit (it {growth}); use 'ntk'"
        )
    weights, variance, trained = limits[(family, parametrization)]
    return KernelLimit(transform.activation.name, weights, 1.0, variance, trained)


def infinite_width_ntk(
    transform: MonotoneTransformModule, x: torch.Tensor, x2: torch.Tensor | None = None
) -> torch.Tensor:
    """The NTK that :func:`empirical_ntk` (``output="network"``) of ``transform`` tends to at
    initialization as its width grows (:func:`kernel_limit`), shape ``(n, n2)``, float64.

    >>> from pyro_overparam_flows import constrained_monotone
    >>> transform = constrained_monotone(1, 4096, parametrization="ntk", positivity="projected")
    >>> x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    >>> limit = infinite_width_ntk(transform, x)
    >>> error = (empirical_ntk(transform.double(), x)[0] - limit).norm() / limit.norm()
    >>> bool(error < 0.1)
    True
    """
    limit = kernel_limit(transform)
    x = _as_points(x, "x").double()
    x2 = None if x2 is None else _as_points(x2, "x2").double()
    return infinite_width_kernels(
        x,
        x2,
        activation=limit.activation,
        weights=limit.weights,
        hidden_std=limit.hidden_std,
        output_variance=limit.output_variance,
        train_output=limit.train_output,
    ).ntk


def kernel_distance(kernel: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    r""":math:`\|\Theta_t - \Theta_0\|_F / \|\Theta_0\|_F` over the last two dimensions.

    >>> kernel_distance(2 * torch.eye(3), torch.eye(3)).item()
    1.0"""
    if kernel.shape != initial.shape:
        raise ValueError(
            f"kernels must have the same shape, got {tuple(kernel.shape)} and "
            f"{tuple(initial.shape)}"
        )
    difference = torch.linalg.matrix_norm(kernel - initial)
    return difference / torch.linalg.matrix_norm(initial)


def parameter_distances(
    module: nn.Module, initial: dict[str, torch.Tensor]
) -> dict[str, tuple[float, float]]:
    r"""For each trained parameter named in ``initial`` (a ``{name: tensor}`` copy taken at
    initialization): :math:`(\|\theta_t - \theta_0\|, \|\theta_t - \theta_0\| /
    \|\theta_0\|)`, Frobenius norms.

    >>> layer = torch.nn.Linear(2, 2)
    >>> start = {k: v.detach().clone() for k, v in layer.named_parameters()}
    >>> parameter_distances(layer, start)["weight"]
    (0.0, 0.0)
    """
    distances = {}
    for name, value in module.named_parameters():
        if name not in initial:
            continue
        start = initial[name]
        moved = float(torch.linalg.vector_norm(value.detach() - start))
        size = float(torch.linalg.vector_norm(start))
        distances[name] = (moved, moved / size if size > 0 else math.inf)
    return distances
