"""One-device speed options: compiled supernet without recompiles, autocast, channels-last, dry run."""
import logging

import torch
import torch.nn as nn
from torch._dynamo.utils import counters

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.runtime import autocast_dtype
from gradnas.search.bilevel import Bilevel
from gradnas.search.loop import build_search_model, compile_cells, weight_step


def tiny_model(**kw):
    return build_search_model(resolve_config({"space": "nb201", "channels": 4, "layers": 1, **kw}), 10)


def test_compiled_supernet_does_not_recompile_when_architecture_weights_change():
    torch._dynamo.reset()
    counters.clear()
    model = tiny_model()
    model.net.compile(backend="eager")  # dynamo's guards decide recompiles; the backend does not matter
    criterion = nn.CrossEntropyLoss()
    update = Bilevel(model, criterion, lr=0.5)
    sgd = torch.optim.SGD(model.weight_parameters(), lr=0.1)
    weights = list(model.weight_parameters())
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    graphs = []
    for _ in range(4):
        alpha = [a.detach().clone() for a in model.arch_parameters()]
        update.arch_step((x, y), (x, y), sgd)
        weight_step(model, criterion, sgd, weights, (x, y), 5.0)
        assert not all(torch.equal(a, b) for a, b in zip(alpha, model.arch_parameters()))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1 and graphs[1:] == [graphs[0]] * 3


def test_cells_of_one_structure_share_one_compiled_graph():
    torch._dynamo.reset()
    counters.clear()
    model = build_search_model(resolve_config({"space": "nb201", "channels": 4, "layers": 3}), 10)
    x = torch.randn(2, 3, 8, 8)
    eager = model(x)
    compile_cells(model.net, backend="eager")
    torch.testing.assert_close(model(x), eager)
    model(x).sum().backward()
    # 9 cells in 3 stages of 3: one graph per stage width at most, not one per cell
    assert len(model.net.cells) == 9 and 1 <= counters["stats"]["unique_graphs"] <= 3


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
