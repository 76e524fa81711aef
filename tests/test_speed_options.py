"""One-device speed options: compiled supernet without recompiles, autocast, channels-last, dry run."""
import logging
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from torch._dynamo.utils import counters

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.runtime import autocast_dtype
from gradnas.search.bilevel import Bilevel
from gradnas.search.loop import build_search_model, compile_cells, weight_step
from gradnas.selection.importance import mixed_op
from gradnas.spaces import NB201_OPS


def tiny_model(**kw):
    return build_search_model(resolve_config({"space": "nb201", "channels": 4, "layers": 1, **kw}), 10)


@pytest.mark.parametrize("executor", ["batched", "per-edge"])
def test_compiled_cells_do_not_recompile_when_architecture_weights_or_attention_change(executor):
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model(method="g-darts-a", groups=2, conv_groups=1, executor=executor)  # α, β and attention
    compile_cells(model.net, backend="eager")  # dynamo's guards decide recompiles; the backend does not matter
    criterion = nn.CrossEntropyLoss()
    update = Bilevel(model, criterion, lr=0.5)
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.1)
    weights = list(model.weight_parameters())
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    graphs = []
    for _ in range(4):
        arch = [a.detach().clone() for a in model.arch_parameters()]
        update.arch_step((x, y), (x, y), sgd)
        weight_step(model, criterion, sgd, weights, (x, y), 5.0)
        assert all(not torch.equal(a, b) for a, b in zip(arch, model.arch_parameters()))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[1:] == [graphs[0]] * 3
    assert not counters["graph_break"]


@pytest.mark.parametrize("executor", ["batched", "per-edge"])
def test_cells_of_one_structure_share_one_compiled_graph(executor):
    torch._dynamo.reset()
    counters.clear()
    model = build_search_model(resolve_config({"space": "nb201", "channels": 4, "layers": 3, "executor": executor}), 10)
    x = torch.randn(2, 3, 8, 8)
    eager = model(x)
    compile_cells(model.net, backend="eager")
    torch.testing.assert_close(model(x), eager)
    model(x).sum().backward()
    # 9 cells in 3 stages of 3: one graph per stage width, not one per cell, and none broken into pieces
    assert len(model.net.cells) == 9 and 1 <= counters["stats"]["unique_graphs"] <= 3
    assert not counters["graph_break"]


def test_a_removal_recompiles_each_batched_cell_once_and_the_compiled_cells_equal_per_edge():
    """IS-DARTS's shrinking changes the batched plan: one new graph per compiled cell structure, whose results are
    the per-edge path's (forward, both gradients, BN statistics; float64)."""
    torch._dynamo.reset()
    counters.clear()
    options = {"method": "is-darts", "cell_bn_running_stats": True}  # BN statistics to compare
    ref, model = (tiny_model(**options, executor=e).double() for e in ("per-edge", "batched"))
    model.load_state_dict(ref.state_dict())
    compile_cells(SimpleNamespace(cells=model.net.cells[:1]), backend="eager")  # one cell: tracing takes seconds
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)

    def step(m):
        for p in m.parameters():
            p.grad = None
        m(x).square().sum().backward()
        return [p.grad for p in m.parameters()]

    step(ref), step(model)
    before = counters["stats"]["unique_graphs"]
    assert before == 1
    for m in (ref, model):
        for cell in m.net.cells:
            for e in (0, 3):
                mixed_op(cell.edges[e]).remove(NB201_OPS.index("nor_conv_3x3"))
    grads = [step(m) for m in (ref, model)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    step(model)
    assert counters["stats"]["unique_graphs"] == 2 * before and not counters["graph_break"]


def test_autocast_is_off_on_cpu_and_keeps_arch_weights_float32(caplog):
    with caplog.at_level(logging.WARNING):
        assert autocast_dtype(True, torch.device("cpu")) is None
    assert "no effect" in caplog.text
    model = tiny_model()
    model.amp_dtype = torch.bfloat16  # CPU autocast exists; this checks the precision boundaries only
    logits = model(torch.randn(2, 3, 8, 8))
    assert logits.dtype == torch.float32
    assert all(w.ops.dtype == torch.float32 for w in model.arch())


def test_channels_last_gives_the_same_outputs():
    model = tiny_model()
    x = torch.randn(4, 3, 8, 8)
    plain = model(x)
    model.to(memory_format=torch.channels_last)
    assert torch.allclose(plain, model(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


def test_dry_run_prints_size_and_memory(tmp_path, capsys):
    assert main(["search", "--dry-run", "--space", "nb201", "--channels", "4", "--layers", "1",
                 "--batch-size", "16", "--out", str(tmp_path / "dry")]) == 0
    out = capsys.readouterr().out
    assert "weights" in out and "activations saved for backward" in out and "peak memory" in out
    assert not (tmp_path / "dry" / "checkpoint.pt").exists()
