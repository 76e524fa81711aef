"""The command line's help: every flag explained, with its default and choices, search flags grouped by part."""
from __future__ import annotations

import argparse
import dataclasses

import pytest

from gradnas.cli import build_parser
from gradnas.config import SearchConfig, resolve_config
from gradnas.errors import GradnasError
from gradnas.options import PARTS, Option, declare


def subparsers(parser: argparse.ArgumentParser, name: str = "gradnas"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from subparsers(p, f"{name} {sub}")


def test_every_flag_of_every_command_has_help():
    for name, parser in subparsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != action.dest.replace("_", " "), (name, action.option_strings)


def test_search_flags_are_the_parts_declarations_grouped_by_part(capsys):
    """SearchConfig is assembled from the options each part declares: one field each, with its help."""
    fields = [f.name for f in dataclasses.fields(SearchConfig)]
    declared = [o.name for options in PARTS.values() for o in options]
    assert fields == declared and all(o.help for options in PARTS.values() for o in options)
    search = dict(subparsers(build_parser()))["gradnas search"]
    groups = {g.title: [a.dest for a in g._group_actions] for g in search._action_groups}
    parts = [name for name, options in PARTS.items() if options]
    assert list(groups)[-len(parts):] == [f"{name} options" for name in parts]
    for name in parts:
        assert groups[f"{name} options"] == [o.name for o in PARTS[name]]
    assert "data" in groups["data options"] and "lr" in groups["optimisation options"]
    assert "seed" in groups["run options"] and "partial_k" in groups["edge options"]
    assert "shrink_rate" in groups["shrinking options"] and "arch_lr" in groups["update options"]
    text = search.format_help()
    assert "--lr FLOAT" in text and "(default: 0.025)" in text and "(default: digits)" in text
    helps = {a.dest: a.help for a in search._actions}
    assert "pc-darts-imagenet, darts-attention" in helps["method"] and "fisher, alpha" in helps["importance"]
    assert "softmax, per-cell-softmax, dnas, masks" in helps["arch"]
    for name in ("epochs", "batch_size", "arch_lr", "train_portion"):
        action = next(a for a in search._actions if a.dest == name)
        assert action.default is None  # so only explicit flags override config files and presets
        assert f"(default: {getattr(SearchConfig, name)})" in action.help


def test_a_config_file_may_group_options_by_part(tmp_path):
    grouped = tmp_path / "grouped.yaml"
    grouped.write_text("method: pc-darts\nedge: {partial_k: 8, partial_sampling: first}\nupdate: {arch_lr: 6.0e-4}\n"
                       "edge_norm: false\n")
    c = resolve_config(config_file=grouped)
    assert (c.method, c.edge, c.partial_k, c.arch_lr, c.edge_norm) == ("pc-darts", "mixed", 8, 6e-4, False)
    for text, message in (("update: {partial_k: 8}\n", "partial_k is not an option of update"),
                          ("wings: {partial_k: 8}\n", "wings is not a part with options")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(GradnasError, match=message):
            resolve_config(config_file=bad)


def test_an_option_is_declared_once():
    with pytest.raises(ValueError, match="declared twice: lr"):
        declare("optimisation", Option("lr", float, 0.1, "again"))
