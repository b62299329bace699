"""YAML without repeated keys and of a bounded size, for the files users write (a campaign, a policy).

PyYAML keeps the last of two equal keys silently: a second ``waves:`` in a
campaign, or ``doc_line_limit: 5`` then ``50`` in a policy, would win
without a word. :class:`UniqueKeys` refuses it with :class:`DuplicateKey`,
which names the key and its line. :func:`load_bounded` refuses, with
:class:`TooLarge`, a document that holds more values than a limit once its
aliases are expanded (a "billion laughs" file of a few lines expands to 10**9
values, and the schema check that follows would take minutes and gigabytes)
or that is nested deeper than Python's recursion allows.

    raw = load_bounded(text, unique_keys(yaml.SafeLoader), max_values=100_000)
"""

from __future__ import annotations

import functools

import yaml

__all__ = ["DuplicateKey", "TooLarge", "load_bounded", "load_problem", "unique_keys"]


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


class TooLarge(yaml.YAMLError):
    """The document is too large once its aliases are expanded, or nested too deeply: ``reason`` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def load_bounded(text: str, loader: type, max_values: int):
    """The one document of ``text`` built by ``loader``, refused when it holds more than ``max_values`` values (each
    use of an alias counted with all it holds) before anything is built."""
    reader = loader(text)
    try:
        node = reader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > max_values:
            raise TooLarge(f"holds over {max_values:,} values once its YAML aliases are expanded")
        return reader.construct_document(node)
    except RecursionError:
        raise TooLarge("is nested too deeply") from None
    finally:
        reader.dispose()


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values of ``node`` with every alias expanded, a shared node counted once per use (``sizes``, by node id,
    keeps the count's time in the file's size, not the expansion's); a node inside itself counts once."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        return 1
    open_nodes.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(item, sizes, open_nodes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes) for k, v in node.value)
    open_nodes.discard(key)
    sizes[key] = size
    return size


def load_problem(exc: Exception, what: str) -> tuple[str, str]:
    """(where, what is wrong) of a ``what`` file (a campaign, a policy) that did not load: too large or too deep,
    a repeated key, not UTF-8 or not YAML; its loader makes them its one-line error."""
    if isinstance(exc, TooLarge):
        return "", f"{exc.reason}: not a {what} file"
    if isinstance(exc, DuplicateKey):
        return f"line {exc.problem_mark.line + 1}", f"{exc.key!r} is given twice"
    mark = getattr(exc, "problem_mark", None)
    return (f"line {mark.line + 1}" if mark else ""), "not valid YAML"
