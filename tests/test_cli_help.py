"""The command line's help: every flag explained, with its default and choices, search flags grouped by part."""
from __future__ import annotations

import argparse
import dataclasses

from gradnas.cli import HELP, SEARCH_GROUPS, build_parser
from gradnas.config import SearchConfig


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


def test_search_flags_are_grouped_with_defaults_and_choices(capsys):
    fields = [f.name for f in dataclasses.fields(SearchConfig)]
    assert set(fields) <= set(HELP)
    listed = [f for members in SEARCH_GROUPS.values() for f in members]
    assert len(listed) == len(set(listed)) and set(listed) <= set(fields)
    search = dict(subparsers(build_parser()))["gradnas search"]
    groups = {g.title: [a.dest for a in g._group_actions] for g in search._action_groups}
    assert list(groups)[-5:] == [f"{name} options" for name in SEARCH_GROUPS]
    assert "data" in groups["data options"] and "lr" in groups["optimisation options"]
    assert "seed" in groups["run options"] and "partial_k" in groups["method parts options"]
    text = search.format_help()
    assert "--lr FLOAT" in text and "(default: 0.025)" in text and "(default: digits)" in text
    helps = {a.dest: a.help for a in search._actions}
    assert "pc-darts-imagenet, darts-attention" in helps["method"] and "fisher, alpha" in helps["importance"]
    assert "softmax, per-cell-softmax, dnas, masks" in helps["arch"]
    for name in ("epochs", "batch_size", "arch_lr", "train_portion"):
        action = next(a for a in search._actions if a.dest == name)
        assert action.default is None  # so only explicit flags override config files and presets
        assert f"(default: {getattr(SearchConfig, name)})" in action.help
