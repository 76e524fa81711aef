"""β-DARTS (docs/methods.md §11): the Beta-Decay loss against the authors' expression, its linear weight, the
presets, its gradient in a real bilevel step, a tiny search that learns on digits and resume across the ramp."""
import copy
import math

import pytest
import torch

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.methods.betadarts import BetaDecaySoftmax, beta_decay_loss, decay_weight
from gradnas.search.bilevel import Bilevel
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, build_search_model, search
from gradnas.spaces import DARTS_OPS, NB201_OPS
from helpers import killed_in_epoch


pytestmark = pytest.mark.usefixtures("one_thread")


def authors_loss(alpha: torch.Tensor) -> torch.Tensor:
    """Their ``mlc_loss``, written out: log Σ_o exp α[e, o] for every edge e, then the mean over the edges."""
    return torch.stack([torch.log(sum(math.e ** a for a in row)) for row in alpha]).mean()


def tiny(tmp_path, name="run", **kw):
    return resolve_config({"space": "nb201", "method": "beta-darts", "data": "digits", "channels": 8, "layers": 1,
                           "epochs": 4, "batch_size": 32, "steps_per_epoch": 3, "progress": False,
                           "out": str(tmp_path / name), **kw})


@pytest.mark.parametrize("types, ops", [(["normal"] * 5, NB201_OPS), (["normal", "reduce", "normal"], DARTS_OPS)])
def test_loss_and_gradient_are_the_authors_expression(types, ops):
    in_degrees = (1, 2, 3) if ops == NB201_OPS else (2, 3, 4, 5)
    arch = BetaDecaySoftmax(types, tuple(ops), in_degrees)
    with torch.no_grad():
        for a in arch.alpha.values():
            a.copy_(3 * torch.randn_like(a))  # far from uniform: a mean of α or of softmax(α) would differ
    alphas = [a.detach().double().requires_grad_() for a in arch.alpha.values()]
    # DARTS space: the rows of both cell types, one mean over all 2·14 edges (both tensors have 14 rows)
    expected = authors_loss(torch.cat(alphas))
    got = beta_decay_loss(list(arch.alpha.values()))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    expected_grads = torch.autograd.grad(expected, alphas)
    got_grads = torch.autograd.grad(got, list(arch.alpha.values()))
    for g, e, a in zip(got_grads, expected_grads, alphas):
        assert torch.allclose(g.double(), e, atol=1e-7)
        rows = sum(x.shape[0] for x in alphas)
        assert torch.allclose(e, a.softmax(-1) / rows)  # ∂/∂α = softmax(α) / number of edges
    assert arch.regularizer().item() == 0  # λ = 0 until the hook sets it
    arch.decay_weight = 2.5
    assert arch.regularizer().item() == pytest.approx(2.5 * expected.item(), rel=1e-6)


def test_weight_is_the_authors_linear_ramp():
    assert [decay_weight(e, 100) for e in range(100)] == [0 + 50 * e / 100 for e in range(100)]  # their epochs
    assert decay_weight(0, 100) == 0 and decay_weight(99, 100) == 49.5
    assert decay_weight(5, 10) == 25.0  # the ramp spans the run's epochs


def test_presets_follow_the_authors_search_scripts():
    nb = resolve_config({"space": "nb201", "method": "beta-darts"})
    assert (nb.arch, nb.hooks, nb.arch_update, nb.order) == ("beta-decay", ["beta-decay"], "bilevel", 1)
    assert (nb.epochs, nb.batch_size, nb.lr, nb.lr_min, nb.momentum, nb.nesterov, nb.weight_decay, nb.grad_clip) == \
        (100, 64, 0.025, 0.001, 0.9, False, 3e-4, 5.0)
    assert (nb.arch_lr, nb.arch_betas, nb.arch_weight_decay, nb.train_portion, nb.channels, nb.layers, nb.cutout) == \
        (3e-4, [0.5, 0.999], 1e-3, 0.5, 16, 5, 0)
    darts, beta = (resolve_config({"space": "darts", "method": m}).to_dict() for m in ("darts", "beta-darts"))
    changed = {k: (darts[k], beta[k]) for k in darts if darts[k] != beta[k]}
    assert changed == {"method": ("darts", "beta-darts"), "arch": ("softmax", "beta-decay"),
                       "hooks": ([], ["beta-decay"])}


@pytest.mark.parametrize("order", [1, 2])
def test_regularizer_reaches_the_architecture_gradient(order):
    """The same step with λ = 7 and with λ = 0: the architecture gradients differ by exactly λ·∇(their loss)."""
    config = resolve_config({"space": "nb201", "method": "beta-darts", "channels": 4, "layers": 1, "order": order})
    model = build_search_model(config, 10)
    with torch.no_grad():
        model.arch.alpha["normal"].normal_()
    a = model.arch.alpha["normal"].detach().clone().requires_grad_()
    (g,) = torch.autograd.grad(7.0 * authors_loss(a), a)
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    grads = []
    for weight in (7.0, 0.0):
        twin = copy.deepcopy(model)
        twin.arch.decay_weight = weight
        update = Bilevel(twin, torch.nn.CrossEntropyLoss(), order=order)
        update.arch_step(batch, batch, torch.optim.SGD(twin.weight_parameters(), lr=0.1, momentum=0.9))
        grads.append(twin.arch.alpha["normal"].grad)
    assert torch.allclose(grads[0] - grads[1], g, atol=1e-5) and (g > 0).all()


def test_tiny_search_learns_on_digits_and_decays_alpha(tmp_path):
    result = search(tiny(tmp_path, "beta", steps_per_epoch=8))
    weights = [r["beta_decay"]["weight"] for r in result.history]
    assert weights == [0.0, 12.5, 25.0, 37.5]  # 50·e/T with T = 4
    assert result.history[-1]["train_acc"] > 30  # ten classes: chance is 10 %
    plain = search(tiny(tmp_path, "plain", steps_per_epoch=8, arch="softmax", hooks=[]))
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "beta_decay")}
    assert strip(result.history[0]) == strip(plain.history[0])  # λ = 0: the first epoch is DARTS's, bit for bit
    assert result.history[1]["arch"] != plain.history[1]["arch"]
    smooth = lambda run: beta_decay_loss(list(run.model.arch.alpha.values())).item()
    assert smooth(result) < smooth(plain) - 0.005  # the decay holds the smoothmax of α down
    assert result.history[-1]["beta_decay"]["loss"] == pytest.approx(smooth(result))


def test_resume_mid_ramp_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    full = search(tiny(tmp_path, "full"))
    with killed_in_epoch(monkeypatch, Searcher, 2):
        search(tiny(tmp_path, "cut"))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed = search(tiny(tmp_path, "cut"), resume=True)
    assert resumed.genotype == full.genotype
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)


def test_hook_without_its_architecture_is_a_one_line_error(tmp_path, capsys):
    code = main(["search", "--space", "nb201", "--hooks", "beta-decay", "--channels", "4", "--layers", "1",
                 "--epochs", "1", "--no-progress", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == ["gradnas: error: the beta-decay hook needs --arch beta-decay, "
                                                      "not 'softmax'"]


def test_weighted_step_never_synchronises_with_the_host():
    from gradnas.profiling import HostSyncGuard, optimizer_host_tensors
    model = build_search_model(resolve_config({"space": "nb201", "method": "beta-darts", "channels": 4,
                                               "layers": 1}), 10)
    model.arch.decay_weight = 12.5
    update = Bilevel(model, torch.nn.CrossEntropyLoss())
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.1)
    batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    update.arch_step(batch, batch, sgd)  # the optimiser's state exists from here on
    with HostSyncGuard(optimizer_host_tensors(update.optimizer)):
        update.arch_step(batch, batch, sgd)
