"""Evaluation networks: docs/methods.md §7 weight-count oracles on the §8 genotypes, shapes, aux, drop path."""
from __future__ import annotations

import pytest
import torch

from gradnas.errors import GradnasError
from gradnas.genotypes import CellGenotype, Genotype
from gradnas.models import (EvalCell, InferCell, NB201Network, NetworkCIFAR, NetworkImageNet, build_eval_network,
                            count_parameters)

_ABBR = {"sep3": "sep_conv_3x3", "sep5": "sep_conv_5x5", "dil3": "dil_conv_3x3", "dil5": "dil_conv_5x5",
         "max": "max_pool_3x3", "avg": "avg_pool_3x3", "skip": "skip_connect"}


def darts_cell(spec: str, concat: tuple[int, ...] = (2, 3, 4, 5)) -> CellGenotype:
    """``"sep3,0 sep3,1 | ..."``: the §8 notation, one ``|``-separated group of (op, source) pairs per node."""
    return CellGenotype(tuple(tuple((_ABBR[op], int(src)) for op, src in (p.split(",") for p in node.split()))
                              for node in spec.split("|")), concat)


def darts(normal: str, reduce: str) -> Genotype:
    return Genotype("darts", darts_cell(normal), darts_cell(reduce))


def nb201(arch: str) -> Genotype:
    nodes = tuple(tuple((op, int(i)) for op, i in (p.split("~") for p in node.strip("|").split("|")))
                  for node in arch.split("+"))
    return Genotype("nb201", CellGenotype(nodes, (3,)))


# docs/methods.md §8, written out here so this file does not depend on the genotype parsers.
GENOTYPES = {
    "DARTS_V1": darts("sep3,1 sep3,0 | skip,0 sep3,1 | skip,0 sep3,1 | sep3,0 skip,2",
                      "max,0 max,1 | skip,2 max,0 | max,0 skip,2 | skip,2 avg,0"),
    "DARTS_V2": darts("sep3,0 sep3,1 | sep3,0 sep3,1 | sep3,1 skip,0 | skip,0 dil3,2",
                      "max,0 max,1 | skip,2 max,1 | max,0 skip,2 | skip,2 max,1"),
    "PC_DARTS_cifar": darts("sep3,1 skip,0 | sep3,0 dil3,1 | sep5,0 sep3,1 | avg,0 dil3,1",
                            "sep5,1 max,0 | sep5,1 sep5,2 | sep3,0 sep3,3 | sep3,1 sep3,2"),
    "PC_DARTS_image": darts("skip,1 sep3,0 | sep3,0 skip,1 | sep3,1 sep3,3 | sep3,1 dil5,4",
                            "sep3,0 skip,1 | dil5,2 max,1 | sep3,2 sep3,1 | sep5,0 sep3,3"),
}
NB201_ALL = "|{0}~0|+|{0}~0|{0}~1|+|{0}~0|{0}~1|{0}~2|"
IS_DARTS_NB201 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("name, kwargs, exclude_aux, expected", [
    ("DARTS_V2", {}, True, 3_349_342),
    ("DARTS_V2", {}, False, 3_825_768),
    ("DARTS_V2", {"num_classes": 100}, True, 3_401_272),
    ("DARTS_V1", {}, True, 3_169_414),
    ("PC_DARTS_cifar", {}, True, 3_634_678),
])
def test_cifar_weight_oracles(name, kwargs, exclude_aux, expected):
    assert count_parameters(NetworkCIFAR(GENOTYPES[name], **kwargs), exclude_aux) == expected


@pytest.mark.parametrize("name, expected", [("DARTS_V2", 4_718_752), ("PC_DARTS_image", 5_342_464)])
def test_imagenet_weight_oracles(name, expected):
    assert count_parameters(NetworkImageNet(GENOTYPES[name], auxiliary=False)) == expected


@pytest.mark.parametrize("arch, expected", [
    (NB201_ALL.format("nor_conv_3x3"), 1_531_546),
    (NB201_ALL.format("skip_connect"), 73_306),
    (IS_DARTS_NB201, 1_288_506),
])
def test_nb201_weight_oracles(arch, expected):
    assert count_parameters(NB201Network(nb201(arch))) == expected


def test_cifar_forward_and_aux():
    x = torch.randn(2, 3, 32, 32)
    net = NetworkCIFAR(GENOTYPES["DARTS_V2"], C=8, layers=5)  # reductions at cells 1 and 3, aux on 8×8
    logits, aux = net(x)
    assert logits.shape == aux.shape == (2, 10)
    assert net.eval()(x)[1] is None  # the aux head only runs in training
    logits, aux = NetworkCIFAR(GENOTYPES["DARTS_V2"], C=8, layers=5, auxiliary=False, num_classes=7)(x)
    assert logits.shape == (2, 7) and aux is None


def test_imagenet_forward_and_aux():
    net = NetworkImageNet(GENOTYPES["PC_DARTS_image"], C=8, layers=5, num_classes=5)
    logits, aux = net(torch.randn(2, 3, 224, 224))  # the aux head needs its 7×7 input
    assert logits.shape == aux.shape == (2, 5)
    net = NetworkImageNet(GENOTYPES["PC_DARTS_image"], C=8, layers=5, num_classes=5, auxiliary=False)
    assert net(torch.randn(2, 3, 64, 64))[0].shape == (2, 5)  # the adaptive global pool takes small inputs


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    net = NetworkCIFAR(GENOTYPES["DARTS_V2"], C=4, layers=3, auxiliary=False, drop_path_prob=0.5)
    assert not torch.equal(net(x)[0], net(x)[0])
    net.drop_path_prob = 0.0  # the trainer mutates this attribute
    assert torch.equal(net(x)[0], net(x)[0])
    net.drop_path_prob = 0.5
    net.eval()
    assert torch.equal(net(x)[0], net(x)[0])


def test_identity_edges_are_never_dropped():
    cell = EvalCell(darts_cell("skip,0 skip,1 | skip,2 skip,0 | skip,3 skip,1 | skip,4 skip,2"), 8, 8, 4, False, False)
    s = torch.randn(2, 8, 6, 6)
    assert torch.equal(cell(s, s, drop_prob=0.9), cell(s, s, drop_prob=0.9))


@pytest.mark.parametrize("concat", [(4, 5), (2, 3, 5)])
def test_partial_concat_sets_output_width(concat):
    # Node 5 also sums three inputs: nodes may take any number of pairs.
    spec = "sep3,0 skip,1 | dil3,0 sep3,2 | max,1 avg,2 | sep5,4 skip,3 dil5,0"
    genotype = Genotype("darts", darts_cell(spec, concat), darts_cell(spec, concat))
    cell = EvalCell(genotype.normal, 12, 12, 4, reduction=False, reduction_prev=False)
    assert cell.multiplier == len(concat)
    assert cell(torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8)).shape == (2, 4 * len(concat), 8, 8)
    net = NetworkCIFAR(genotype, C=4, layers=4)
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)


def test_per_cell_genotypes():
    normal, reduce = GENOTYPES["DARTS_V1"].normal, GENOTYPES["PC_DARTS_cifar"].reduce
    other = darts_cell("sep3,0 sep3,1 | skip,0 sep3,2 | dil5,3 skip,1 | max,0 sep5,4", concat=(3, 5))
    cells = (normal, reduce, other, reduce, normal)  # layers=5: reductions at 1 and 3
    net = NetworkCIFAR(Genotype("darts", normal, reduce, cells=cells), C=4, layers=5)
    assert [c.multiplier for c in net.cells] == [4, 4, 2, 4, 4]
    assert net.cells[2].sources == ((0, 1), (0, 2), (3, 1), (0, 4))
    assert net(torch.randn(2, 3, 32, 32))[0].shape == (2, 10)


def test_nb201_forward_and_none_edges():
    genotype = nb201("|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|none~1|nor_conv_3x3~2|")
    net = NB201Network(genotype, C=4, N=1)
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux is None
    assert [len(ops) for ops in net.cells[0].nodes] == [1, 1, 2]  # none edges are not built
    zero = InferCell(nb201("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|").normal, 4)
    assert torch.equal(zero(torch.randn(2, 4, 8, 8)), torch.zeros(2, 4, 8, 8))


def test_build_eval_network_dispatch():
    v2 = GENOTYPES["DARTS_V2"]
    assert isinstance(build_eval_network(nb201(IS_DARTS_NB201), "cifar100", C=4, N=1), NB201Network)
    assert build_eval_network(nb201(IS_DARTS_NB201), "imagenet16-120", C=4, N=1).classifier.out_features == 120
    imagenet = build_eval_network(v2, "ImageNet", C=8, layers=3)
    assert isinstance(imagenet, NetworkImageNet) and imagenet.classifier.out_features == 1000
    cifar = build_eval_network(v2, "cifar100", C=4, layers=3)
    assert isinstance(cifar, NetworkCIFAR) and cifar.classifier.out_features == 100
    assert build_eval_network(v2, "mydata", num_classes=3, C=4, layers=3).classifier.out_features == 3
    with pytest.raises(GradnasError):
        build_eval_network(v2, "mydata", C=4, layers=3)


def test_malformed_genotypes_are_rejected():
    with pytest.raises(GradnasError):  # node 2 cannot read node 3
        EvalCell(darts_cell("sep3,3 sep3,1 | sep3,0 sep3,1 | sep3,0 sep3,1 | sep3,0 sep3,1"), 8, 8, 4, False, False)
    with pytest.raises(GradnasError):
        EvalCell(darts_cell("sep3,0 sep3,1 | sep3,0 sep3,1 | sep3,0 sep3,1 | sep3,0 sep3,1", (2, 6)), 8, 8, 4,
                 False, False)
    with pytest.raises(GradnasError):  # a cell input cannot be part of the output
        EvalCell(darts_cell("sep3,0 sep3,1 | sep3,0 sep3,1 | sep3,0 sep3,1 | sep3,0 sep3,1", (1, 5)), 8, 8, 4,
                 False, False)
    with pytest.raises(GradnasError):
        NetworkCIFAR(nb201(IS_DARTS_NB201), C=4, layers=3)
    with pytest.raises(GradnasError):
        NB201Network(GENOTYPES["DARTS_V2"], C=4, N=1)
