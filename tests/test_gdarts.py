"""G-DARTS-A (docs/methods.md §4, oracles of §7): channel-group parallel sampling, group attention, grouped convs,
presets end to end."""
import functools
import json

import pytest
import torch
import torch.nn.functional as F

from gradnas.arch import GroupAttention
from gradnas.arch.attention import default_attention_init
from gradnas.cli import main
from gradnas.config import resolve_config
from gradnas.edges import ChannelGroupEdge, build_edge, channel_shuffle
from gradnas.edges.groups import fold_groups, unfold_groups
from gradnas.errors import GradnasError
from gradnas.search.bilevel import Bilevel
from gradnas.search.loop import Searcher, build_search_model, search
from gradnas.selection import derive_genotype
from gradnas.spaces import DARTS_OPS, NB201_OPS
from helpers import killed_in_epoch, nan_after

PRESETS = ("darts-attention", "g-darts-a", "g-pc-darts-a", "g-darts")
FORMATS = (torch.contiguous_format, torch.channels_last)


def weight_count(model) -> int:
    return sum(p.numel() for p in model.weight_parameters())


def attention(model) -> GroupAttention:
    return next(m for m in model.arch.modifiers if isinstance(m, GroupAttention))


# -- parts --------------------------------------------------------------------------------------------
def test_default_attention_init():
    assert torch.allclose(default_attention_init(4), torch.tensor([0.7, 0.9, 1.1, 1.3]))
    assert default_attention_init(1).tolist() == [1.0]
    assert torch.allclose(default_attention_init(2, spread=0.5), torch.tensor([0.5, 1.5]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_fold_puts_group_m_of_image_b_at_sample_bM_plus_m_and_unfolds_back(fmt):
    x = torch.randn(3, 8, 5, 6).contiguous(memory_format=fmt)
    folded = fold_groups(x, 4)
    assert folded.shape == (12, 2, 5, 6) and folded.is_contiguous(memory_format=fmt)
    assert torch.equal(folded[2 * 4 + 3], x[2, 6:8])
    back = unfold_groups(folded, 4)
    assert torch.equal(back, x) and back.is_contiguous(memory_format=fmt)


@functools.lru_cache
def full_size(method: str):
    """The C=16, L=8 supernet of a preset, on the meta device (shapes only: fast)."""
    with torch.device("meta"):
        return build_search_model(resolve_config({"method": method}), 10)


def test_attention_shape_and_init_in_the_supernet():
    model = full_size("g-darts")  # C=16, L=8, M=4
    assert attention(model).a.shape == (8, 14, 4) and attention(model).a.numel() == 448
    cells = model.arch()
    assert len(cells) == 8 and all(c.groups.shape == (14, 4) for c in cells)
    assert {id(p) for p in attention(model).parameters()} <= {id(p) for p in model.arch_parameters()}
    a = attention(build_search_model(resolve_config({"method": "g-darts", "channels": 8, "layers": 3}), 10)).a
    assert torch.equal(a, default_attention_init(4).expand(3, 14, 4))


@pytest.mark.parametrize("method,expected", [("g-darts", 299_578), ("g-darts-a", 899_962),
                                             ("g-pc-darts-a", 299_578), ("darts-attention", 1_930_618)])
def test_weight_counts(method, expected):
    assert weight_count(full_size(method)) == expected


@pytest.mark.parametrize("mode", ["exact", "split"])
def test_one_group_with_attention_frozen_at_one_equals_darts(mode):
    base = {"space": "darts", "channels": 8, "layers": 3, "executor": "per-edge"}  # the group wrapper, bit for bit
    darts = build_search_model(resolve_config(base), 10)
    grouped = build_search_model(resolve_config({**base, "groups": 1, "group_mode": mode, "group_attention": True}), 10)
    source = darts.state_dict()
    with torch.no_grad():  # the same weights and α; the group wrapper adds ".inner" to the names
        for key, value in grouped.state_dict().items():
            value.copy_(torch.ones(()) if key == "arch.modifiers.0.a" else source[key.replace(".inner.", ".")])
    attention(grouped).a.requires_grad_(False)
    assert (attention(grouped).a == 1).all()
    x = torch.randn(4, 3, 16, 16)
    for fmt in FORMATS:
        darts.to(memory_format=fmt), grouped.to(memory_format=fmt)
        assert torch.equal(darts(x.contiguous(memory_format=fmt)), grouped(x.contiguous(memory_format=fmt)))


def edge_pair(mode: str, stride: int, space: str = "darts"):
    """A G-DARTS-A edge on 16 channels, M=4, with random op weights and attention."""
    ops = DARTS_OPS if space == "darts" else NB201_OPS
    options = {"exact": dict(group_mode="exact"), "grouped": dict(group_mode="split", conv_groups=4)}[mode]
    edge = build_edge("mixed", space, ops, 16, stride, groups=4, group_attention=True, **options)
    return edge, torch.randn(len(ops)).softmax(0), torch.rand(4) + 0.5


@pytest.mark.parametrize("mode,train", [("exact", False), ("grouped", False), ("grouped", True)])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("fmt", FORMATS)
def test_changing_input_group_m_changes_only_output_group_m(mode, train, stride, fmt):
    # Exact mode pools BN statistics over the folded groups [interp], so it is separable with fixed statistics.
    edge, w, a = edge_pair(mode, stride)
    edge.train(train)
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=fmt)
    y = edge(x, w, a)
    for m in range(4):
        x2 = x.clone()
        x2[:, 4 * m:4 * m + 4] += torch.randn(2, 4, 8, 8)
        changed = (edge(x2, w, a) - y).abs().amax((0, 2, 3)) > 1e-6
        assert changed.tolist() == [4 * m <= c < 4 * m + 4 for c in range(16)], (m, changed)


@pytest.mark.parametrize("fmt", FORMATS)
def test_exact_edge_is_each_group_through_the_shared_op_times_its_attention(fmt):
    edge, w, a = edge_pair("exact", 2)
    edge.eval()
    assert isinstance(edge, ChannelGroupEdge) and edge.inner.ops[4].body[0].in_channels == 4  # built for C/M
    x = torch.randn(2, 16, 8, 8)
    y = edge(x.contiguous(memory_format=fmt), w, a)
    expected = torch.cat([a[m] * edge.inner(x[:, 4 * m:4 * m + 4].contiguous(), w) for m in range(4)], 1)
    assert y.shape == (2, 16, 4, 4) and torch.allclose(y, expected, atol=1e-6)
    assert y.is_contiguous(memory_format=fmt)


def test_darts_attention_edge_scales_the_full_width_output_by_group():
    edge = build_edge("mixed", "darts", DARTS_OPS, 16, 1, groups=4, group_mode="split", group_attention=True)
    w, a = torch.randn(8).softmax(0), torch.rand(4) + 0.5
    x = torch.randn(2, 16, 8, 8)
    assert torch.allclose(edge(x, w, a), edge.inner(x, w) * a.repeat_interleave(4)[:, None, None], atol=1e-6)


def test_g_pc_edge_sends_all_groups_through_the_shared_op_then_shuffles():
    config = resolve_config({"method": "g-pc-darts-a"})
    edge_options = {k: getattr(config, k) for k in ("partial_k", "partial_sampling", "groups", "group_mode",
                                                    "conv_groups", "group_attention")}
    edge = build_edge("mixed", "darts", DARTS_OPS, 16, 2, **edge_options).eval()
    w, a = torch.randn(8).softmax(0), torch.rand(4) + 0.5
    x = torch.randn(2, 16, 8, 8)
    mixed = edge.inner.inner
    expected = channel_shuffle(torch.cat([a[m] * mixed(x[:, 4 * m:4 * m + 4], w) for m in range(4)], 1), 4)
    y = edge(x, w, a)
    assert y.shape == (2, 16, 4, 4) and torch.allclose(y, expected, atol=1e-6)  # every group strided, none bypassed


def test_attention_receives_gradients_in_every_cell_edge_and_group():
    model = build_search_model(resolve_config({"method": "g-darts", "channels": 8, "layers": 3}), 10)
    F.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.randint(0, 10, (4,))).backward()
    grad = attention(model).a.grad
    assert grad is not None and grad.shape == (3, 14, 4) and (grad != 0).all()


def test_attention_takes_no_part_in_derivation():
    model = build_search_model(resolve_config({"method": "g-darts", "channels": 8, "layers": 3}), 10)
    before = (derive_genotype(model.arch, "darts"), model.arch.selection_weights())
    with torch.no_grad():
        attention(model).a.uniform_(0, 3)
    after = (derive_genotype(model.arch, "darts"), model.arch.selection_weights())
    assert before[0] == after[0] and all(torch.equal(b, a) for b, a in zip(before[1], after[1]))


def test_constant_validation_loss_leaves_attention_unchanged():
    """No weight decay on a (docs/methods.md §4 [interp]): without a loss gradient a stays put, α still decays."""
    model = build_search_model(resolve_config({"method": "darts-attention", "channels": 8, "layers": 3}), 10)
    update = Bilevel(model, lambda logits, y: 0 * logits.sum() + 1.0, order=1, lr=0.1, weight_decay=1e-3)
    a, alpha = attention(model).a.detach().clone(), model.arch.alpha["normal"].detach().clone()
    batch = (torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,)))
    for _ in range(3):
        update.arch_step(batch, batch, torch.optim.SGD(model.weight_parameters(), lr=0.1))
    assert torch.equal(attention(model).a, a)
    assert not torch.equal(model.arch.alpha["normal"], alpha)


def test_arch_optimiser_state_saved_with_one_group_still_loads():
    model = build_search_model(resolve_config({"method": "darts-attention", "channels": 8, "layers": 3}), 10)
    one = torch.optim.Adam(list(model.arch_parameters()), lr=0.1, weight_decay=1e-3)  # the former layout
    for p in model.arch_parameters():
        p.grad = torch.randn_like(p)
    one.step()
    update = Bilevel(model, F.cross_entropy, order=1, lr=0.1, weight_decay=1e-3)
    update.load_state_dict({"optimizer": one.state_dict()})
    groups = update.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [1e-3, 0.0] and groups[1]["params"] == [attention(model).a]
    assert torch.equal(update.optimizer.state[attention(model).a]["exp_avg"], one.state[attention(model).a]["exp_avg"])


def test_preset_values():
    base = {"order": 1, "lr_min": 0.0, "groups": 4, "group_attention": True, "cutout": 0.5}  # 16 px on 32-px CIFAR
    expected = {"darts-attention": {"group_mode": "split", "conv_groups": 1},
                "g-darts-a": {"group_mode": "split", "conv_groups": 4},
                "g-darts": {"group_mode": "exact", "conv_groups": 1, "partial_k": 1},
                "g-pc-darts-a": {"group_mode": "exact", "partial_sampling": "all", "partial_k": 4, "edge_norm": True,
                                 "batch_size": 256, "lr": 0.1, "arch_lr": 6e-4, "arch_warmup_epochs": 15}}
    for method, values in expected.items():
        c = resolve_config({"method": method})
        assert {k: getattr(c, k) for k in {**base, **values}} == {**base, **values}, method


def test_sigmoid_attention_option():
    model = build_search_model(resolve_config({"method": "g-darts", "channels": 8, "layers": 3,
                                               "attention_sigmoid": True}), 10)
    assert torch.allclose(model.arch()[0].groups, torch.tensor([0.7, 0.9, 1.1, 1.3]).sigmoid().expand(14, 4))


@pytest.mark.parametrize("overrides,message", [
    ({"groups": 3}, "divisible by groups"),
    ({"group_mode": "both"}, "group_mode"),
    ({"method": "g-darts-a", "channels": 12}, "conv_groups"),
    ({"partial_sampling": "most"}, "partial_sampling"),
])
def test_bad_group_options_are_one_clear_error(overrides, message):
    with pytest.raises(GradnasError, match=message):
        resolve_config({"channels": 16, **overrides})


def test_cli_rejects_bad_groups_with_exit_2(capsys):
    assert main(["search", "--groups", "5"]) == 2
    assert "divisible by groups" in capsys.readouterr().err


# -- end to end -----------------------------------------------------------------------------------------
def tiny(tmp_path, method, space="darts", **kw):
    return resolve_config({"method": method, "space": space, "channels": 8, "layers": 3 if space == "darts" else 1,
                           "epochs": 1, "batch_size": 8, "steps_per_epoch": 1, "arch_warmup_epochs": 0,
                           "progress": False, "out": str(tmp_path / "run"), **kw})


@pytest.mark.parametrize("method", PRESETS)
def test_tiny_search_per_preset(tmp_path, method):
    config = tiny(tmp_path, method)
    assert config.cutout == 0.5 and config.groups == 4 and config.group_attention
    result = search(config)
    a = attention(result.model).a
    assert not torch.allclose(a, default_attention_init(4).expand_as(a))  # learnt by the arch step
    record = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert len(record["arch"]["attention"]["mean_per_cell"]) == 3
    assert all(p.stat().st_size > 0 for p in result.paths["diagrams"])


def test_nb201_and_second_order(tmp_path):
    result = search(tiny(tmp_path / "nb", "g-darts-a", "nb201"))
    assert result.genotype.space == "nb201" and attention(result.model).a.shape == (3, 6, 4)
    assert search(tiny(tmp_path / "o2", "g-darts", order=2)).genotype.space == "darts"


def test_resume_is_exact_with_attention_and_edge_normalisation(tmp_path, monkeypatch):
    full = search(tiny(tmp_path / "a", "g-pc-darts-a", epochs=2))
    cut = tiny(tmp_path / "b", "g-pc-darts-a", epochs=2)
    with killed_in_epoch(monkeypatch, Searcher, 1):
        search(cut)
    resumed = search(cut, resume=True)
    assert resumed.genotype == full.genotype
    for a, b in zip(full.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_nan_guard(tmp_path):
    searcher = Searcher(tiny(tmp_path, "g-darts"))
    searcher.criterion = searcher.update.criterion = nan_after(searcher.criterion, 0)
    with pytest.raises(GradnasError, match="non-finite loss at epoch 1"):
        searcher.run()


def test_found_genotype_trains(tmp_path):
    from gradnas.train import resolve_train_config, train

    found = search(tiny(tmp_path, "g-darts-a")).genotype
    config = resolve_train_config({"genotype": str(tmp_path / "run"), "data": "digits", "channels": 4, "layers": 3,
                                   "auxiliary": False, "epochs": 1, "batch_size": 16, "steps_per_epoch": 2,
                                   "progress": False, "out": str(tmp_path / "train")})
    result = train(config)
    assert result.genotype == found and len(result.history) == 1
