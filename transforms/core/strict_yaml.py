"""YAML without repeated keys, for the files users write (a campaign, a policy).

PyYAML keeps the last of two equal keys silently: a second ``waves:`` in a
campaign, or ``doc_line_limit: 5`` then ``50`` in a policy, would win
without a word. :class:`UniqueKeys` refuses it with :class:`DuplicateKey`,
which names the key and its line.

    raw = yaml.load(text, Loader=unique_keys(yaml.SafeLoader))
"""

from __future__ import annotations

import functools

import yaml

__all__ = ["DuplicateKey", "unique_keys"]


class DuplicateKey(yaml.YAMLError):
    """A mapping gives ``key`` twice; ``problem_mark`` is where the second one is."""

    def __init__(self, key: str, mark):
        super().__init__(key)
        self.key, self.problem_mark = key, mark


class UniqueKeys:
    """A loader mix-in: every mapping's scalar keys are checked before it is built."""

    def construct_mapping(self, node, deep=False):
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise DuplicateKey(key_node.value, key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


@functools.lru_cache(maxsize=None)
def unique_keys(loader: type) -> type:
    """``loader`` (``yaml.SafeLoader``, or libyaml's ``yaml.CSafeLoader``: its parser is C, its constructor
    Python's) refusing repeated keys."""
    return type(f"Unique{loader.__name__}", (UniqueKeys, loader), {})
