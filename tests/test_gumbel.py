"""GDAS and SNAS (docs/methods.md §14): Gumbel samples of α, GDAS's one computed op per edge with the authors'
straight-through gradient, the temperature schedule, the presets, and resume across the schedule."""
import pytest
import torch

from gradnas.arch import ARCHITECTURES, GumbelSoftmax, HardGumbel
from gradnas.arch.gumbel import gumbel_softmax
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.edges import MixedOp
from gradnas.edges.batched import batched_fallback
from gradnas.methods.gumbel import temperature
from gradnas.search.checkpoint import load_checkpoint
from gradnas.search.loop import Searcher, build_search_model, capture_unsafe, search
from gradnas.spaces import NB201_OPS
from helpers import killed_in_epoch

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(tmp_path, method, name="run", **kw):
    return resolve_config({"space": "nb201", "method": method, "data": "digits", "channels": 8, "layers": 1,
                           "epochs": 4, "batch_size": 32, "steps_per_epoch": 3, "progress": False,
                           "out": str(tmp_path / name), **kw})


def test_gumbel_max_of_the_samples_follows_softmax_alpha():
    """The argmax of p = softmax((log_softmax α + g)/τ) is a draw from softmax(α), whatever τ (Gumbel-max)."""
    torch.manual_seed(0)
    alpha = torch.tensor([2.0, 0.5, -1.0, 0.0, 1.0])
    draws = gumbel_softmax(alpha.expand(20000, 5), torch.tensor(10.0)).argmax(-1)
    freq = torch.bincount(draws, minlength=5) / 20000
    assert torch.allclose(freq, alpha.softmax(-1), atol=0.015), freq


def test_gdas_sample_is_one_hot_in_value_with_the_soft_sample_gradient():
    arch = HardGumbel(["normal"] * 3, NB201_OPS, (1, 2, 3))
    with torch.no_grad():
        arch.alpha["normal"].normal_()
    arch.set_temperature(2.0)
    torch.manual_seed(1)
    cells = arch()
    torch.manual_seed(1)
    soft = gumbel_softmax(arch.alpha["normal"], arch.tau)
    w = cells[0].ops
    assert all(c.ops is w and c.sampled == cells[0].sampled for c in cells)  # one sample per cell type
    assert cells[0].sampled == soft.argmax(-1).tolist()
    assert torch.equal(w != 0, torch.nn.functional.one_hot(soft.argmax(-1), 5).bool())  # exact zeros elsewhere
    assert torch.allclose(w.sum(-1), torch.ones(6))
    c = torch.randn(6, 5)
    (g,) = torch.autograd.grad((w * c).sum(), arch.alpha["normal"])
    (expected,) = torch.autograd.grad((soft * c).sum(), arch.alpha["normal"])
    assert torch.allclose(g, expected)  # straight through: the soft sample's gradient


def test_mixed_op_computes_only_the_sampled_op_and_passes_the_authors_gradient():
    """Value: the sampled op's output. Gradient: ∂L/∂w_s = Σ ∂L/∂y · o_s(x), and for every other op the sum of
    ∂L/∂y (its weight added as a scalar, as the authors' cell does), not Σ ∂L/∂y · o(x) of an op never run."""
    torch.manual_seed(0)
    op = MixedOp("nb201", NB201_OPS, 4, 1)
    calls = []
    for i, o in enumerate(op.ops):
        o.register_forward_hook(lambda m, a, y, i=i: calls.append(i))
    x, upstream = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    probs = torch.rand(5).softmax(0).requires_grad_()
    s = 3  # nor_conv_3x3
    w = torch.zeros(5).index_fill_(0, torch.tensor(s), 1.0) - probs.detach() + probs
    y = op(x, w, sampled=s)
    assert calls == [s]
    reference = op.ops[s](x)
    assert torch.allclose(y, reference)
    (g,) = torch.autograd.grad((y * upstream).sum(), probs)
    expected = torch.full((5,), upstream.sum().item())
    expected[s] = (upstream * reference).sum()
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-5)


def test_gdas_supernet_runs_one_op_per_edge_and_every_alpha_gets_a_gradient():
    config = resolve_config({"space": "nb201", "method": "gdas", "channels": 4, "layers": 1})
    model = build_search_model(config, 10)
    calls = []
    for m in model.net.modules():
        if isinstance(m, MixedOp):
            for o in m.ops:
                o.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    logits = model(torch.randn(4, 3, 8, 8))[0]
    assert len(calls) == len(model.net.cells) * 6
    logits.logsumexp(-1).sum().backward()
    assert (model.arch.alpha["normal"].grad != 0).all()


def test_temperature_follows_the_authors_linear_schedule():
    assert [temperature(e, 240, 10, 0.1) for e in range(240)] == [10 - 9.9 * e / 239 for e in range(240)]
    assert temperature(0, 5, 1.0, 0.33) == 1.0 and temperature(4, 5, 1.0, 0.33) == pytest.approx(0.33)


def test_presets_and_what_gdas_cannot_use():
    g, s = (resolve_config({"space": "nb201", "method": m}) for m in ("gdas", "snas"))
    assert (g.arch, g.hooks, g.order, g.epochs, g.tau_max, g.tau_min, g.nesterov, g.weight_decay) == \
        ("gumbel-hard", ["temperature"], 1, 240, 10.0, 0.1, True, 5e-4)
    assert (s.arch, s.hooks, s.order, s.tau_max, s.tau_min) == ("gumbel", ["temperature"], 1, 1.0, 0.33)
    assert "GDAS" in batched_fallback(g) and batched_fallback(s) is None
    assert "GDAS" in capture_unsafe(g, False, None) and capture_unsafe(s, False, None) is None
    assert "random draws" in capture_unsafe(resolve_config({"method": "snas", "order": 2}), False, None)
    assert ARCHITECTURES["gumbel"] is GumbelSoftmax


@pytest.mark.parametrize("method", ["gdas", "snas"])
def test_search_anneals_tau_and_resumes_bit_identically(tmp_path, monkeypatch, method):
    config = tiny(tmp_path, method, "full")
    full = search(config)
    taus = [r["tau"] for r in full.history]
    assert taus == [temperature(e, 4, config.tau_max, config.tau_min) for e in range(4)]
    assert full.model.arch.tau.item() == pytest.approx(taus[-1])
    with killed_in_epoch(monkeypatch, Searcher, 2):
        search(tiny(tmp_path, method, "cut"))
    assert load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["epoch"] == 2
    resumed = search(tiny(tmp_path, method, "cut"), resume=True)
    assert resumed.genotype == full.genotype
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]
    assert strip(resumed.history) == strip(full.history)
    probs = full.model.arch.alpha["normal"].softmax(-1)
    assert full.history[-1]["arch"]["normal"][0] == [float(f"{v:.4g}") for v in probs[0].tolist()]  # α, not a sample


def test_temperature_hook_without_its_architecture_is_a_one_line_error(tmp_path, capsys):
    code = main(["search", "--space", "nb201", "--hooks", "temperature", "--channels", "4", "--layers", "1",
                 "--epochs", "1", "--no-progress", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines() == [
        "gradnas: error: the temperature hook needs --arch gumbel or gumbel-hard, not 'softmax'"]


@pytest.mark.parametrize("method", ["gdas", "snas", "drnas"])
@pytest.mark.parametrize("parts", [{"partial_k": 4, "edge_norm": True}, {"groups": 2, "group_attention": True}])
def test_samplers_compose_with_partial_channels_and_channel_groups(method, parts):
    model = build_search_model(resolve_config({"method": method, "space": "darts", "channels": 8, "layers": 3,
                                               **parts}), 10)
    torch.manual_seed(0)
    model(torch.randn(2, 3, 8, 8))[0].logsumexp(-1).sum().backward()
    assert (model.arch.alpha["normal"].grad != 0).any() and (model.arch.alpha["reduce"].grad != 0).any()
    assert all(p.grad is not None for p in model.arch.modifiers.parameters())
