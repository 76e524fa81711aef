"""Search-space oracles of docs/methods.md §1 and §7: ops, cells, supernets."""
import pytest
import torch

from gradnas.arch import SoftmaxAlpha
from gradnas.search.model import SearchModel
from gradnas.spaces import DARTS_OPS, NB201_OPS, SPACES, build_op


def count(module):
    return sum(p.numel() for p in module.parameters())


def model_for(space, **kw):
    net = SPACES[space].supernet(**kw)
    return SearchModel(net, SoftmaxAlpha(net.cell_types, net.op_names, net.in_degrees))


@pytest.mark.parametrize("space,ops", [("darts", DARTS_OPS), ("nb201", NB201_OPS)])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_maps_C_to_C_with_its_stride(space, ops, stride):
    x = torch.randn(2, 8, 8, 8)
    for name in ops:
        y = build_op(space, name, 8, stride, affine=False)(x)
        assert y.shape == (2, 8, 8 // stride, 8 // stride), name


def test_zero_op_is_zero_and_pools_exclude_padding():
    x = torch.ones(1, 4, 6, 6)
    assert build_op("darts", "none", 4, 2, False)(x).abs().sum() == 0
    pool = build_op("nb201", "avg_pool_3x3", 4, 1, True)
    assert torch.allclose(pool(x), x)  # count_include_pad=False keeps a constant map constant


@pytest.mark.parametrize("classes,expected", [(10, 1_930_618), (100, 1_953_748)])
def test_darts_supernet_weight_count(classes, expected):
    model = model_for("darts", num_classes=classes)
    assert count(model.net) == expected
    assert [tuple(a.shape) for a in model.arch.alpha.values()] == [(14, 8), (14, 8)]


def test_nb201_supernet_weight_count_and_alpha():
    model = model_for("nb201")
    assert count(model.net) == 1_686_106
    assert [tuple(a.shape) for a in model.arch.alpha.values()] == [(6, 5)]
    assert len(model.net.cells) == 15


def test_darts_supernet_shapes_and_cell_widths():
    model = model_for("darts")
    widths = []
    for cell in model.net.cells:
        cell.register_forward_hook(lambda m, i, o: widths.append(tuple(o.shape[1:])))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert model.net.cell_types == ["normal", "normal", "reduce", "normal", "normal", "reduce", "normal", "normal"]
    assert widths == [(64, 32, 32)] * 2 + [(128, 16, 16)] * 3 + [(256, 8, 8)] * 3


def test_nb201_supernet_forward():
    model = model_for("nb201", C=4, layers=1)
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_mixed_op_skips_removed_and_none_ops():
    from gradnas.edges import MixedOp
    edge = MixedOp("nb201", NB201_OPS, 4, 1)
    assert edge.active == [1, 2, 3, 4]  # none is never computed
    x, w = torch.randn(2, 4, 6, 6), torch.softmax(torch.randn(5), 0)
    full = edge(x, w)
    edge.remove(3)
    reduced = edge(x, w)
    expected = w[1] * x + w[2] * edge.ops[2](x) + w[4] * edge.ops[4](x)
    assert torch.allclose(reduced, expected, atol=1e-6) and not torch.allclose(full, reduced)
