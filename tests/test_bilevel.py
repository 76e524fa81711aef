"""DARTS bilevel optimisation (docs/methods.md §2): first order touches only α; the second-order
finite-difference Hessian-vector product matches exact double backward."""
import torch
import torch.nn as nn

from gradnas.arch import SoftmaxAlpha
from gradnas.search.bilevel import Bilevel
from gradnas.search.model import SearchModel
from gradnas.spaces import SPACES


def tiny(space="darts", dtype=torch.float32):
    kw = dict(C=4, layers=3) if space == "darts" else dict(C=4, layers=1)
    net = SPACES[space](**kw)
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


def test_second_order_gradient_matches_exact_unrolled_gradient():
    """g_α of the unrolled step against autograd through the virtual step itself (float64, momentum 0)."""
    torch.manual_seed(2)
    model, train = tiny("nb201", torch.float64)
    val = (torch.randn_like(train[0]), torch.randint(0, 10, (4,)))
    crit = nn.CrossEntropyLoss()
    lr, wd = 0.05, 3e-4
    sgd = torch.optim.SGD(model.weight_parameters(), lr=lr, momentum=0.9, weight_decay=wd)
    update = Bilevel(model, crit, order=2, fd_radius=1e-6)
    _, _, approx = update.unrolled_gradient(train, val, sgd)

    weights = list(model.weight_parameters())
    alphas = list(model.arch_parameters())
    gw = torch.autograd.grad(crit(model(train[0]), train[1]), weights, create_graph=True)
    unrolled = [w - lr * (g + wd * w) for w, g in zip(weights, gw)]
    originals = [w.detach().clone() for w in weights]
    # Evaluate L_val at w' with w' a differentiable function of α, via functional_call.
    names = [n for n, _ in model.net.named_parameters()]
    params = dict(zip(names, unrolled))
    logits = torch.func.functional_call(model.net, {**params, **dict(model.net.named_buffers())}, (val[0], model.arch()))
    exact = torch.autograd.grad(crit(logits, val[1]), alphas)
    assert all(torch.equal(a, b) for a, b in zip(originals, weights))
    a, e = torch.cat([t.flatten() for t in approx]), torch.cat([t.flatten() for t in exact])
    assert (a - e).norm() / e.norm() < 1e-4
