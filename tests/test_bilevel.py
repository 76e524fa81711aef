"""DARTS bilevel optimisation (docs/methods.md §2): first order touches only α; the second-order
finite-difference Hessian-vector product matches exact double backward."""
import torch
import torch.nn as nn

from gradnas.arch import SoftmaxAlpha
from gradnas.config import resolve_config
from gradnas.search.bilevel import ARCH_UPDATES, Bilevel
from gradnas.search.loop import search
from gradnas.search.model import SearchModel
from gradnas.spaces import SPACES


def tiny(space="darts", dtype=torch.float32):
    kw = dict(C=4, layers=3) if space == "darts" else dict(C=4, layers=1)
    net = SPACES[space].supernet(**kw)
    model = SearchModel(net, SoftmaxAlpha(net.cell_types, net.op_names, net.in_degrees)).to(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    y = torch.randint(0, 10, (4,))
    return model, (x, y)


def test_first_order_step_moves_only_alpha():
    model, batch = tiny()
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
    update = Bilevel(model, nn.CrossEntropyLoss(), order=1, lr=0.1)
    weights = [p.detach().clone() for p in model.weight_parameters()]
    alphas = [a.detach().clone() for a in model.arch_parameters()]
    update.arch_step(batch, batch, sgd)
    assert all(torch.equal(a, b) for a, b in zip(weights, model.weight_parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(alphas, model.arch_parameters()))
    assert all(p.grad is None for p in model.weight_parameters())


def test_finite_difference_hvp_matches_exact_double_backward():
    torch.manual_seed(1)
    model, batch = tiny("darts", torch.float64)
    crit = nn.CrossEntropyLoss()
    update = Bilevel(model, crit, order=2)
    weights = [p for p in model.weight_parameters()]
    vector = [torch.randn_like(p) for p in weights]
    before = [p.detach().clone() for p in weights]
    # A small radius: at DARTS's 0.01 the curvature of a 4-image BN net dominates the difference.
    approx = update.hessian_vector_product(vector, batch, weights, r=1e-6)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(before, weights))  # w restored

    loss = crit(model(batch[0]), batch[1])
    gw = torch.autograd.grad(loss, weights, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(gw, vector))
    exact = torch.autograd.grad(dot, list(model.arch_parameters()))
    a, e = torch.cat([t.flatten() for t in approx]), torch.cat([t.flatten() for t in exact])
    assert (a - e).norm() / e.norm() < 1e-4


def exact_unrolled_gradient(model, crit, train, val, sgd, draws=None):
    """∇_α L_val(w − ξ(μ·v + ∇_w L_train + wd·w), α) by autograd through the virtual step (DARTS's
    _compute_unrolled_model); the train forward starts from the generator state ``draws`` when given."""
    group = sgd.param_groups[0]
    lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
    weights = list(model.weight_parameters())
    alphas = list(model.arch_parameters())
    if draws is not None:
        torch.set_rng_state(draws)
    gw = torch.autograd.grad(crit(model(train[0]), train[1]), weights, create_graph=True)
    buffers = [sgd.state.get(w, {}).get("momentum_buffer") for w in weights]
    moment = [0 if v is None else mu * v for v in buffers]
    unrolled = [w - lr * (m + g + wd * w) for w, m, g in zip(weights, moment, gw)]
    # L_val at w' with w' a differentiable function of α, via functional_call.
    params = dict(zip([n for n, _ in model.net.named_parameters()], unrolled))
    state = {**params, **dict(model.net.named_buffers())}
    logits = torch.func.functional_call(model.net, state, (val[0], model.arch()))
    return torch.autograd.grad(crit(logits, val[1]), alphas)


def relative_error(approx, exact):
    a, e = torch.cat([t.flatten() for t in approx]), torch.cat([t.flatten() for t in exact])
    return ((a - e).norm() / e.norm()).item()


def test_second_order_gradient_uses_the_momentum_buffer():
    """With a momentum buffer in the weight optimiser (every step after the first), w' = w − ξ(μ·v + g + wd·w)."""
    torch.manual_seed(4)
    model, train = tiny("nb201", torch.float64)
    val = (torch.randn_like(train[0]), torch.randint(0, 10, (4,)))
    crit = nn.CrossEntropyLoss()
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    crit(model(train[0]), train[1]).backward()
    sgd.step()  # a momentum buffer now exists for every weight
    sgd.zero_grad(set_to_none=True)
    model.arch.zero_grad(set_to_none=True)
    for p in model.weight_parameters():  # a large buffer, so that dropping it would show
        sgd.state[p]["momentum_buffer"].normal_()
    update = Bilevel(model, crit, order=2, fd_radius=1e-6)
    _, _, approx = update.unrolled_gradient(train, val, sgd)
    assert relative_error(approx, exact_unrolled_gradient(model, crit, train, val, sgd)) < 1e-4
    for p in model.weight_parameters():
        sgd.state[p].pop("momentum_buffer")
    assert relative_error(approx, exact_unrolled_gradient(model, crit, train, val, sgd)) > 1e-2


def test_second_order_step_of_a_stochastic_supernet_replays_its_random_draws():
    """Skip dropout and random channel subsets draw on every forward; the unrolled step's train forwards
    (the virtual step and both sides of the finite difference) see one draw, as with fixed masks."""
    torch.manual_seed(3)
    net = SPACES["darts"].supernet(C=4, layers=3, edge_options={"partial_k": 2, "partial_sampling": "random",
                                                       "skip_dropout": 0.5})
    model = SearchModel(net, SoftmaxAlpha(net.cell_types, net.op_names, net.in_degrees)).double()
    train = (torch.randn(4, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (4,)))
    val = (torch.randn_like(train[0]), torch.randint(0, 10, (4,)))
    crit = nn.CrossEntropyLoss()
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    update = Bilevel(model, crit, order=2, fd_radius=1e-6)
    draws = torch.get_rng_state()
    _, _, approx = update.unrolled_gradient(train, val, sgd)
    after = torch.rand(1)
    exact = exact_unrolled_gradient(model, crit, train, val, sgd, draws)  # train forward, then val forward
    assert relative_error(approx, exact) < 1e-4
    torch.set_rng_state(draws)
    update.unrolled_gradient(train, val, sgd)
    assert torch.equal(torch.rand(1), after)  # the generators continue after the val forward's draws


def test_second_order_gradient_matches_exact_unrolled_gradient():
    """g_α of the unrolled step against autograd through the virtual step itself (float64, no momentum yet)."""
    torch.manual_seed(2)
    model, train = tiny("nb201", torch.float64)
    val = (torch.randn_like(train[0]), torch.randint(0, 10, (4,)))
    crit = nn.CrossEntropyLoss()
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    update = Bilevel(model, crit, order=2, fd_radius=1e-6)
    originals = [w.detach().clone() for w in model.weight_parameters()]
    _, _, approx = update.unrolled_gradient(train, val, sgd)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(originals, model.weight_parameters()))  # w restored
    assert relative_error(approx, exact_unrolled_gradient(model, crit, train, val, sgd)) < 1e-4


class RandomAlphaSmoothing(Bilevel):
    """SDARTS-RS's shape, as a user would add it: α perturbed by uniform noise for the weight step, put back after."""

    calls: list[torch.Tensor] = []

    def weight_step(self, batch, optimizer, weights, grad_clip, scaler=None):
        alphas = list(self.model.arch.parameters())
        saved = [a.detach().clone() for a in alphas]
        with torch.no_grad():
            for a in alphas:
                a.add_(torch.empty_like(a).uniform_(-0.3, 0.3))
        out = super().weight_step(batch, optimizer, weights, grad_clip, scaler)
        with torch.no_grad():
            for a, s in zip(alphas, saved):
                a.copy_(s)
        self.calls.append(out[0])
        return out


ARCH_UPDATES.register("random-smoothing-test")(RandomAlphaSmoothing)


def test_an_update_of_its_own_wraps_the_weight_step(tmp_path):
    """The weight step belongs to the update: a method that perturbs α around it is an update, not a loop edit."""
    config = resolve_config({"space": "nb201", "arch_update": "random-smoothing-test", "channels": 4, "layers": 1,
                             "epochs": 1, "batch_size": 16, "steps_per_epoch": 3, "progress": False, "out": str(tmp_path)})
    plain = resolve_config({**{f: getattr(config, f) for f in ("space", "channels", "layers", "epochs", "batch_size",
                                                              "steps_per_epoch", "progress")}, "out": str(tmp_path / "p")})
    smoothed, reference = search(config), search(plain)
    assert len(RandomAlphaSmoothing.calls) == 3
    # Same seed, same data: only the perturbed weight steps differ.
    w = lambda r: torch.cat([p.detach().flatten() for p in r.model.weight_parameters()])
    assert not torch.allclose(w(smoothed), w(reference))
