"""DrNAS (docs/methods.md §15): Dirichlet samples on the simplex with concentration ELU(β)+1, the pathwise
gradient, the KL regulariser against its closed-form gradient, the preset, and resume."""
import pytest
import torch
import torch.nn.functional as F

from gradnas.arch import DirichletAlpha
from gradnas.config import resolve_config
from gradnas.search.loop import Searcher, build_search_model, search
from gradnas.spaces import NB201_OPS
from helpers import killed_in_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def arch(rows=6, kl_weight=0.0):
    a = DirichletAlpha(["normal"] * 2, NB201_OPS, (1, 2, 3), kl_weight=kl_weight)
    with torch.no_grad():
        a.alpha["normal"].copy_(torch.linspace(-1.5, 2.0, 30).view(6, 5))  # both branches of the ELU
    return a


def test_samples_lie_on_the_simplex_with_mean_elu_plus_one():
    torch.manual_seed(0)
    a = arch()
    cells = a()
    w = cells[0].ops
    assert cells[1].ops is w  # one sample per cell type
    assert (w > 0).all() and torch.allclose(w.sum(-1), torch.ones(6))
    conc = F.elu(a.alpha["normal"]) + 1
    draws = a.dirichlet(a.alpha["normal"].expand(4000, 6, 5)).rsample()
    # the mean of Dir(c) is c / Σc: a softplus or exp concentration gives another mean
    assert torch.allclose(draws.mean(0), conc / conc.sum(-1, keepdim=True), atol=0.01)


def test_pathwise_gradient_is_the_gradient_of_the_expectation():
    """rsample: ∇β of the mean over draws of Σ c·w approaches ∇β of Σ c·E[w] = Σ c·conc/Σconc."""
    torch.manual_seed(0)
    a = arch()
    beta = a.alpha["normal"]
    c = torch.randn(6, 5)
    draws = a.dirichlet(beta.expand(20000, 6, 5)).rsample()
    (g,) = torch.autograd.grad((draws * c).sum(-1).mean(0).sum(), beta)
    conc = F.elu(beta) + 1
    (expected,) = torch.autograd.grad((c * conc / conc.sum(-1, keepdim=True)).sum(), beta)
    assert torch.allclose(g, expected, atol=0.01), (g - expected).abs().max()


def test_kl_regulariser_and_its_gradient_are_the_closed_form():
    """KL(Dir(a) ‖ Dir(1)) = lnΓ(a0) − Σ lnΓ(a_i) − lnΓ(K) + Σ (a_i − 1)(ψ(a_i) − ψ(a0)), a = ELU(β)+1;
    ∂/∂a_i = (a_i − 1)ψ'(a_i) − (a0 − K)ψ'(a0), times ELU'(β)."""
    a = arch(kl_weight=1e-3)
    beta = a.alpha["normal"]
    conc = (F.elu(beta) + 1).detach().double()
    a0, K = conc.sum(-1, keepdim=True), conc.shape[-1]
    lgamma_k = torch.lgamma(torch.tensor(K, dtype=torch.double))
    kl = (torch.lgamma(a0).squeeze(-1) - torch.lgamma(conc).sum(-1) - lgamma_k
          + ((conc - 1) * (torch.digamma(conc) - torch.digamma(a0))).sum(-1))
    reg = a.regularizer()
    assert reg.item() == pytest.approx(1e-3 * kl.sum().item(), rel=1e-5)
    (g,) = torch.autograd.grad(reg, beta)
    d_conc = (conc - 1) * torch.polygamma(1, conc) - (a0 - K) * torch.polygamma(1, a0)
    d_elu = torch.where(beta > 0, 1.0, beta.exp()).double()
    assert torch.allclose(g.double(), 1e-3 * d_conc * d_elu, rtol=1e-4, atol=1e-9)
    assert arch().regularizer() is None  # their default: weight decay on β only


def test_preset_follows_the_authors_script():
    nb = resolve_config({"space": "nb201", "method": "drnas"})
    assert (nb.arch, nb.order, nb.epochs, nb.nesterov, nb.weight_decay, nb.dirichlet_kl, nb.arch_weight_decay) == \
        ("dirichlet", 1, 100, False, 3e-4, 0.0, 1e-3)
    model = build_search_model(resolve_config({"space": "nb201", "method": "drnas", "channels": 4, "layers": 1,
                                               "dirichlet_kl": 1e-3}), 10)
    assert isinstance(model.arch, DirichletAlpha) and model.arch.kl_weight == 1e-3


def test_search_resumes_bit_identically_and_logs_softmax_beta(tmp_path, monkeypatch):
    tiny = lambda name: resolve_config({"space": "nb201", "method": "drnas", "dirichlet_kl": 1e-3, "channels": 8,
                                        "layers": 1, "epochs": 3, "batch_size": 32, "steps_per_epoch": 3,
                                        "progress": False, "out": str(tmp_path / name)})
    full = search(tiny("full"))
    with killed_in_epoch(monkeypatch, Searcher, 2):
        search(tiny("cut"))
    resumed = search(tiny("cut"), resume=True)
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)
    probs = full.model.arch.alpha["normal"].softmax(-1)
    assert full.history[-1]["arch"]["normal"][0] == [float(f"{v:.4g}") for v in probs[0].tolist()]
