"""DARTS-format genotypes of any node count and concat list (NASNet, AmoebaNet) and DARTS searches with
other node counts (steps) and multipliers, against weight counts of the DARTS code's networks."""
from __future__ import annotations

import pytest

from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.errors import GradnasError
from gradnas.genotypes import (PUBLISHED, format_darts, genotype_from_dict, genotype_to_dict, load_genotype,
                               parse_darts, parse_genotype)
from gradnas.models import NetworkCIFAR, NetworkImageNet, build_eval_network, count_parameters
from gradnas.search.loop import build_search_model, search
from gradnas.train import resolve_train_config, train

# As the DARTS code's genotypes.py writes them.
NASNET = ("Genotype(normal=[('sep_conv_5x5', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 0), ('sep_conv_3x3', 0), "
          "('avg_pool_3x3', 1), ('skip_connect', 0), ('avg_pool_3x3', 0), ('avg_pool_3x3', 0), ('sep_conv_3x3', 1), "
          "('skip_connect', 1)], normal_concat=[2, 3, 4, 5, 6], reduce=[('sep_conv_5x5', 1), ('sep_conv_7x7', 0), "
          "('max_pool_3x3', 1), ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('sep_conv_5x5', 0), ('skip_connect', 3), "
          "('avg_pool_3x3', 2), ('sep_conv_3x3', 2), ('max_pool_3x3', 1)], reduce_concat=[4, 5, 6])")
AMOEBANET = ("Genotype(normal=[('avg_pool_3x3', 0), ('max_pool_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_5x5', 2), "
             "('sep_conv_3x3', 0), ('avg_pool_3x3', 3), ('sep_conv_3x3', 1), ('skip_connect', 1), ('skip_connect', 0), "
             "('avg_pool_3x3', 1)], normal_concat=[4, 5, 6], reduce=[('avg_pool_3x3', 0), ('sep_conv_3x3', 1), "
             "('max_pool_3x3', 0), ('sep_conv_7x7', 2), ('sep_conv_7x7', 0), ('avg_pool_3x3', 1), ('max_pool_3x3', 0), "
             "('max_pool_3x3', 1), ('conv_7x1_1x7', 0), ('sep_conv_3x3', 5)], reduce_concat=[3, 4, 6])")


# Weights of the DARTS code's NetworkCIFAR(36, 10, 20, auxiliary=True) without / with the auxiliary head, and of
# its NetworkImageNet(48, 1000, 14, auxiliary=False) (its count_parameters_in_MB leaves out the auxiliary head).
@pytest.mark.parametrize("name, text, cifar, cifar_aux, imagenet", [
    ("nasnet", NASNET, 3_830_950, 4_288_944, 5_564_320),
    ("amoebanet", AMOEBANET, 3_145_078, 3_603_072, 4_627_360),
])
def test_published_five_node_genotypes_build_the_darts_code_networks(name, text, cifar, cifar_aux, imagenet):
    g = parse_genotype(name)
    assert g == parse_darts(text) and format_darts(g) == text
    assert genotype_from_dict(genotype_to_dict(g)) == g
    assert len(g.normal.nodes) == len(g.reduce.nodes) == 5
    net = NetworkCIFAR(g, C=36, layers=20, auxiliary=True)
    assert (count_parameters(net), count_parameters(net, exclude_aux=False)) == (cifar, cifar_aux)
    assert count_parameters(NetworkImageNet(g, auxiliary=False)) == imagenet
    # the cell output concatenates its concat list: 5 nodes in NASNet's normal cell, 3 in its reduction cell
    widths = [cell.multiplier for cell in net.cells[5:8]]
    assert widths == [len(g.normal.concat), len(g.reduce.concat), len(g.normal.concat)]


def test_small_nasnet_runs_forward():
    import torch
    logits, aux = NetworkCIFAR(PUBLISHED["amoebanet"], C=4, layers=5)(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)


def test_cli_show_nasnet(tmp_path, capsys):
    assert main(["show", "nasnet", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "normal_concat=[2, 3, 4, 5, 6]" in printed and "3,830,950 parameters" in printed
    assert {p.name for p in tmp_path.iterdir()} >= {"cell_normal.png", "cell_reduce.svg"}


def test_three_node_text_form_and_bad_concat():
    g = parse_darts("Genotype(normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('sep_conv_3x3', 2), "
                    "('max_pool_3x3', 0), ('dil_conv_3x3', 3), ('skip_connect', 2)], normal_concat=[3, 4], "
                    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1)], reduce_concat=range(2, 3))")
    assert (len(g.normal.nodes), g.normal.concat, len(g.reduce.nodes), g.reduce.concat) == (3, (3, 4), 1, (2,))
    assert [c.multiplier for c in build_eval_network(g, C=4, layers=3).cells] == [2, 1, 1]
    with pytest.raises(GradnasError, match=r"concat \[3, 5\] must name distinct intermediate nodes from 2..4"):
        parse_darts(format_darts(g).replace("normal_concat=[3, 4]", "normal_concat=[3, 5]"))


# Weights and α entries of the DARTS code's model_search.Network(16, 10, 8, steps=s, multiplier=m).
@pytest.mark.parametrize("steps, multiplier, weights, alphas", [(4, 4, 1_930_618, 224), (3, 2, 1_233_146, 144),
                                                                (5, 5, 2_732_026, 320)])
def test_supernet_steps_and_multiplier_match_the_darts_code(steps, multiplier, weights, alphas):
    model = build_search_model(resolve_config({"space": "darts", "steps": steps, "multiplier": multiplier}), 10)
    assert sum(p.numel() for p in model.net.parameters()) == weights
    assert sum(p.numel() for p in model.arch_parameters()) == alphas


@pytest.mark.parametrize("steps, multiplier, method", [(3, 2, "darts"), (5, None, "is-darts")])
def test_search_with_other_node_counts_trains_end_to_end(tmp_path, steps, multiplier, method):
    config = resolve_config({"space": "darts", "method": method, "steps": steps, "multiplier": multiplier,
                             "channels": 4, "layers": 3, "epochs": 2, "batch_size": 8, "steps_per_epoch": 1,
                             "iim_samples": 8, "shrink_rate": 1.0, "shrink_interval": 1, "progress": False,
                             "out": str(tmp_path / "s")})
    g = search(config).genotype
    concat = tuple(range(2 + steps - (multiplier or steps), 2 + steps))
    assert [len(c.nodes) for c in (g.normal, g.reduce)] == [steps, steps] and g.normal.concat == g.reduce.concat == concat
    assert load_genotype(tmp_path / "s" / "genotype.json") == g
    result = train(resolve_train_config({"genotype": str(tmp_path / "s"), "data": "digits", "auxiliary": False,
                                         "channels": 4, "layers": 3, "epochs": 1,
                                         "batch_size": 8, "steps_per_epoch": 1, "eval_every": 100, "progress": False,
                                         "out": str(tmp_path / "t")}))
    assert result.genotype == g and result.model.cells[0].multiplier == len(concat)


@pytest.mark.parametrize("options, message", [({"steps": 0}, "steps must be at least 1"),
                                              ({"steps": 3, "multiplier": 4}, "multiplier in 1..steps"),
                                              ({"space": "nb201", "steps": 3}, "the nb201 cell is fixed")])
def test_bad_cell_options_are_rejected(options, message):
    with pytest.raises(GradnasError, match=message):
        resolve_config(options)
