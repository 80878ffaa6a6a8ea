"""Topics and binding patterns: validation, RabbitMQ's topic matching, and the trie `Registry` walks.

Matching follows RabbitMQ's topic exchange exactly, so that a worker dispatches a delivery to the
handlers whose binding brought it: words are separated by `.`, `*` is exactly one word, `#` is zero
or more words, an empty word between dots is still a word, but the empty routing key has no words.
`*` and `#` are wildcards only as whole words. Topics and patterns never hold whitespace or control
characters. The trie (`Node`, `collect`) matches a topic against many patterns at the cost of the
topic and the patterns that can still match it, not of the number of patterns, as the broker does.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from tchu_rpc.errors import TopicError

if TYPE_CHECKING:
    from tchu_rpc.registry import Handler

Kind = Literal["call", "event"]

#: Routing keys and binding keys are AMQP short strings.
MAX_TOPIC_BYTES = 255
_WILDCARDS = frozenset("*#")
# Whitespace as `str.isspace` knows it, and the C0, DEL and C1 control characters.
_UNPRINTABLE = re.compile(r"[\s\x00-\x1f\x7f-\x9f]")


def words(topic: str) -> list[str]:
    """Split a topic or pattern into its words; the empty string has none."""
    return [] if topic == "" else topic.split(".")


def topic_matches(pattern: str, topic: str) -> bool:
    """Return whether a topic-exchange binding `pattern` routes the routing key `topic`."""
    pattern_words = words(pattern)
    # The set of pattern positions the words read so far can end at: linear in both lengths.
    states = _skip_hashes(pattern_words, {0})
    for word in words(topic):
        states = _skip_hashes(pattern_words, _step(pattern_words, states, word))
        if not states:
            return False
    return len(pattern_words) in states


def _step(pattern_words: list[str], states: set[int], word: str) -> set[int]:
    """Return the positions reached from `states` by reading one `word`."""
    reached: set[int] = set()
    for i in states:
        if i == len(pattern_words):
            continue
        current = pattern_words[i]
        if current == "#":
            reached.add(i)
        elif current == "*" or current == word:
            reached.add(i + 1)
    return reached


def _skip_hashes(pattern_words: list[str], states: set[int]) -> set[int]:
    """Add the positions reached from `states` by letting each `#` match no word."""
    closed = set(states)
    for i in states:
        while i < len(pattern_words) and pattern_words[i] == "#":
            i += 1
            closed.add(i)
    return closed


def validate_pattern(pattern: str) -> str:
    """Return `pattern` if the broker would bind it as intended, else raise `TopicError`."""
    _check_key("pattern", pattern)
    for word in words(pattern):
        if len(word) > 1 and _WILDCARDS.intersection(word):
            raise TopicError(
                f"pattern {pattern!r} has the word {word!r}, which mixes a wildcard with other "
                "characters: '*' and '#' are wildcards only as whole words"
            )
    return pattern


def validate_topic(topic: str) -> str:
    """Return `topic` if it is a valid concrete routing key, else raise `TopicError`."""
    _check_key("topic", topic)
    if _WILDCARDS.intersection(topic):
        raise TopicError(f"topic {topic!r} contains '*' or '#': wildcards belong in patterns, not topics")
    if "" in words(topic):
        raise TopicError(f"topic {topic!r} has an empty word (a leading, trailing or doubled '.')")
    return topic


def _check_key(what: str, key: object) -> None:
    """Raise `TopicError` unless `key` is a non-empty string of at most 255 UTF-8 bytes."""
    if not isinstance(key, str):
        raise TopicError(f"{what} must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise TopicError(f"{what} must not be empty")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise TopicError(f"{what} {key!r} cannot be encoded as UTF-8: {exc.reason}") from exc
    if size > MAX_TOPIC_BYTES:
        raise TopicError(f"{what} {key[:40]!r}... is {size} bytes in UTF-8; the limit is {MAX_TOPIC_BYTES}")
    _check_printable(what, key)


def _check_printable(what: str, key: str) -> None:
    """Raise `TopicError` if `key` holds whitespace or a control character."""
    # The broker would route such keys, but they are typing or templating mistakes that logs hide.
    found = _UNPRINTABLE.search(key)
    if found is not None:
        char = found.group()
        problem = "whitespace" if char.isspace() else "a control character"
        raise TopicError(
            f"{what} {key!r} contains {problem} ({char!r} at index {found.start()}): "
            "topics and patterns must not contain whitespace or control characters"
        )


def default_kind(pattern: str) -> Kind:
    """Return "call" for patterns whose first word is `rpc`, else "event"."""
    return "call" if words(pattern)[:1] == ["rpc"] else "event"


class Node:
    """A trie node: the patterns with these first words, by their next word or wildcard."""

    __slots__ = ("children", "handlers", "hash", "is_hash", "star")

    def __init__(self, *, is_hash: bool = False) -> None:
        self.children: dict[str, Node] = {}
        self.star: Node | None = None
        self.hash: Node | None = None
        #: Reached by a `#`, so it may also read any number of further words itself.
        self.is_hash = is_hash
        #: (registration number, handler) of each handler whose pattern ends here, in that order.
        self.handlers: list[tuple[int, Handler]] = []

    def child(self, word: str) -> Node:
        """Return the node after the pattern word `word`, adding it if it is new."""
        # A reader may walk the trie while this runs: a node is complete before it is linked in.
        if word == "*":
            if self.star is None:
                self.star = Node()
            return self.star
        if word == "#":
            if self.hash is None:
                self.hash = Node(is_hash=True)
            return self.hash
        node = self.children.get(word)
        if node is None:
            node = self.children[word] = Node()
        return node


def collect(root: Node, topic_words: list[str]) -> list[tuple[int, Handler]]:
    """Return the (registration number, handler) pairs of the patterns under `root` matching the words."""
    # States are (node, words read); each is expanded once, so `#.#.#` cannot blow up.
    found: list[tuple[int, Handler]] = []
    end = len(topic_words)
    pending = [(root, 0)]
    seen: set[tuple[Node, int]] = set()
    while pending:
        state = pending.pop()
        if state in seen:
            continue
        seen.add(state)
        node, i = state
        if node.hash is not None:
            pending.append((node.hash, i))  # the `#` reads no word
        if i == end:
            found.extend(node.handlers)
            continue
        child = node.children.get(topic_words[i])
        if child is not None:
            pending.append((child, i + 1))
        if node.star is not None:
            pending.append((node.star, i + 1))
        if node.is_hash:
            pending.append((node, i + 1))  # the `#` reads one more word
    return found
