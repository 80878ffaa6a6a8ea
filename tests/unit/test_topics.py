"""Topic matching follows RabbitMQ's topic exchange exactly; patterns and topics are validated."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tchu_rpc.errors import TopicError
from tchu_rpc.registry import (
    Registry,
    default_kind,
    topic_matches,
    validate_pattern,
    validate_topic,
    words,
)

# (pattern, topic, matches). Rows about empty words and the empty key were checked on RabbitMQ 3.10;
# tests/integration/test_topic_routing_broker.py checks the same rules against the running broker.
MATCH_TABLE = [
    # literal words
    ("a", "a", True),
    ("a", "b", False),
    ("a.b", "a.b", True),
    ("a.b", "a", False),
    ("a", "a.b", False),
    ("a.b.c", "a.b.c", True),
    ("a.b", "b.a", False),
    ("user.created", "user.created", True),
    ("user.created", "user.createdx", False),
    # '*' is exactly one word
    ("*", "a", True),
    ("*", "a.b", False),
    ("*", "", False),
    ("*", ".", False),
    ("a.*", "a.b", True),
    ("a.*", "a", False),
    ("a.*", "a.b.c", False),
    ("*.b", "a.b", True),
    ("*.*", "a.b", True),
    ("*.*", "a", False),
    ("a.*.c", "a.b.c", True),
    ("a.*.c", "a.c", False),
    # '#' is zero or more words
    ("#", "", True),
    ("#", "a", True),
    ("#", "a.b.c", True),
    ("#", ".", True),
    ("#.#", "", True),
    ("#.#", "a", True),
    ("#.#", "a.b.c", True),
    ("a.#", "a", True),
    ("a.#", "a.b", True),
    ("a.#", "a.b.c", True),
    ("a.#", "b", False),
    ("a.#", "ab", False),
    ("#.b", "b", True),
    ("#.b", "a.b", True),
    ("#.b", "a.b.c", False),
    ("a.#.b", "a.b", True),
    ("a.#.b", "a.x.b", True),
    ("a.#.b", "a.x.y.b", True),
    ("a.#.b", "a.b.c", False),
    ("a.#.#.b", "a.b", True),
    ("a.#.#.b", "a.x.b", True),
    ("a.#.#.b", "a.x.y.z.b", True),
    ("#.a.#", "a", True),
    ("#.a.#", "x.a.y", True),
    ("#.a.#", "x.y", False),
    ("*.#", "", False),
    ("*.#", "a", True),
    ("#.*", "", False),
    ("#.*", "a.b", True),
    ("#.*.#", "a", True),
    ("#.#.#.#.x", "x", True),
    ("#.#.#.#.x", "a.b.x", True),
    ("#.#.#.#.x", "a.b.y", False),
    # an empty word between dots is a word
    ("a.*.b", "a..b", True),
    ("*.b", ".b", True),
    ("a.*", "a.", True),
    ("a..b", "a..b", True),
    ("a..b", "a.b", False),
    ("a.#", "a.", True),
    ("a.#.b", "a..b", True),
    (".", ".", True),
    (".", "", False),
    ("*.*", ".", True),
    ("#.", ".", True),
    ("#.", "a", False),
    (".#", ".a", True),
    # the empty routing key has no words
    ("", "", True),
    ("", "a", False),
    ("", ".", False),
    ("a", "", False),
    # wildcard characters inside a word are literal
    ("a*", "a*", True),
    ("a*", "ab", False),
    ("a#", "a#", True),
    ("a#", "a.b", False),
    ("*x", "ax", False),
    # unicode words
    ("ünï.*", "ünï.cødé", True),
    ("日本.#", "日本", True),
    ("日本.#", "日本.東京.駅", True),
    ("*.東京", "日本.東京", True),
    ("ünï", "uni", False),
]


@pytest.mark.parametrize(("pattern", "topic", "expected"), MATCH_TABLE)
def test_topic_matches_like_a_topic_exchange(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_match_table_is_large_and_has_no_duplicate_rows() -> None:
    assert len(MATCH_TABLE) >= 40
    assert len({(p, t) for p, t, _ in MATCH_TABLE}) == len(MATCH_TABLE)


@pytest.mark.timeout(5)
def test_many_hashes_match_in_polynomial_time() -> None:
    # A backtracking matcher takes exponential time here; the state-set matcher is quadratic.
    pattern = ".".join(["#"] * 40 + ["x"])
    assert topic_matches(pattern, ".".join(["a"] * 200 + ["x"]))
    assert not topic_matches(pattern, ".".join(["a"] * 200 + ["y"]))


def _registrable(pattern: str) -> bool:
    try:
        validate_pattern(pattern)
    except TopicError:
        return False
    return True


def test_registry_match_agrees_with_the_match_table() -> None:
    # Given every registrable pattern of the table, each with its own handler, in table order
    registry = Registry()
    patterns = [p for p in dict.fromkeys(p for p, _, _ in MATCH_TABLE) if _registrable(p)]
    for pattern in patterns:
        registry.add(pattern, lambda data: None, kind="event")
    # Then each topic selects exactly the patterns the table says, in registration order
    for topic in dict.fromkeys(topic for _, topic, _ in MATCH_TABLE):
        expected = [pattern for pattern in patterns if topic_matches(pattern, topic)]
        assert [h.pattern for h in registry.match(topic, "event")] == expected
    for pattern, topic, matches in MATCH_TABLE:
        if pattern in patterns:
            assert (pattern in [h.pattern for h in registry.match(topic, "event")]) is matches


@pytest.mark.timeout(5)
def test_registry_match_with_many_hashes_is_polynomial() -> None:
    registry = Registry()
    registry.add(".".join(["#"] * 40 + ["x"]), lambda data: None, kind="event")
    assert len(registry.match(".".join(["a"] * 200 + ["x"]), "event")) == 1
    assert registry.match(".".join(["a"] * 200 + ["y"]), "event") == ()


@pytest.mark.parametrize(
    ("topic", "expected"),
    [("", []), ("a", ["a"]), ("a.b", ["a", "b"]), (".", ["", ""]), ("a..b", ["a", "", "b"])],
)
def test_words_split_on_dots_and_the_empty_key_has_none(topic: str, expected: list[str]) -> None:
    assert words(topic) == expected


def _reference_words(key: str) -> list[str]:
    return key.split(".") if key else []


def _reference_matches(pattern: list[str], topic: list[str]) -> bool:
    """Match by plain backtracking recursion, straight from the definition of the wildcards."""
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return _reference_matches(rest, topic) or (bool(topic) and _reference_matches(pattern, topic[1:]))
    return bool(topic) and head in ("*", topic[0]) and _reference_matches(rest, topic[1:])


_PATTERN_WORDS = st.sampled_from(["a", "b", "", "*", "#", "ü", "a*", "ab"])
_TOPIC_WORDS = st.sampled_from(["a", "b", "", "ü", "a*", "ab"])


@given(
    pattern=st.lists(_PATTERN_WORDS, max_size=7).map(".".join),
    topic=st.lists(_TOPIC_WORDS, max_size=7).map(".".join),
)
def test_topic_matches_agrees_with_a_recursive_reference(pattern: str, topic: str) -> None:
    expected = _reference_matches(_reference_words(pattern), _reference_words(topic))
    assert topic_matches(pattern, topic) is expected


@pytest.mark.parametrize(
    "pattern",
    ["a", "*", "#", "a.*.#", "rpc.users.get", "a..b", ".", "a.", "日本.*", "a" * 255, "é" * 127 + "a"],
)
def test_validate_pattern_returns_valid_patterns(pattern: str) -> None:
    assert validate_pattern(pattern) == pattern


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (None, "must be a str, not NoneType"),
        (b"user.*", "must be a str, not bytes"),
        (42, "must be a str, not int"),
        ("", "must not be empty"),
        ("a" * 256, "256 bytes in UTF-8; the limit is 255"),
        ("é" * 128, "256 bytes in UTF-8; the limit is 255"),
        ("user.*x", "the word '\\*x', which mixes a wildcard"),
        ("a#", "the word 'a#', which mixes a wildcard"),
        ("#a.b", "the word '#a', which mixes a wildcard"),
        ("a.**", "the word '\\*\\*', which mixes a wildcard"),
        ("a.*#", "wildcards only as whole words"),
        ("a.\udcff", "cannot be encoded as UTF-8"),
    ],
)
def test_validate_pattern_rejects_with_a_clear_message(pattern: object, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        validate_pattern(pattern)  # type: ignore[arg-type]


@pytest.mark.parametrize("topic", ["a", "rpc.users.get", "ünï.cødé", "a-b_c:d", "a" * 255])
def test_validate_topic_returns_valid_topics(topic: str) -> None:
    assert validate_topic(topic) == topic


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        (None, "topic must be a str, not NoneType"),
        (b"a.b", "topic must be a str, not bytes"),
        ("", "topic must not be empty"),
        ("a" * 256, "is 256 bytes in UTF-8; the limit is 255"),
        ("日" * 86, "is 258 bytes in UTF-8"),
        ("a..b", "topic 'a..b' has an empty word"),
        (".a", "topic '.a' has an empty word"),
        ("a.", "topic 'a.' has an empty word"),
        (".", "topic '.' has an empty word"),
        ("user.*", "topic 'user.\\*' contains '\\*' or '#'"),
        ("user.#", "topic 'user.#' contains '\\*' or '#'"),
        ("a#b", "wildcards belong in patterns, not topics"),
        ("*", "wildcards belong in patterns"),
        ("a\udcff", "cannot be encoded as UTF-8"),
    ],
)
def test_validate_topic_rejects_with_a_message_naming_the_topic(topic: object, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        validate_topic(topic)  # type: ignore[arg-type]


# (key, message): whitespace as str.isspace knows it, and C0, DEL and C1 control characters.
UNPRINTABLE_KEYS = [
    ("user created", "contains whitespace (' ' at index 4)"),
    ("user.created ", "contains whitespace (' ' at index 12)"),
    (" user", "contains whitespace (' ' at index 0)"),
    ("user\tcreated", "contains whitespace ('\\t' at index 4)"),
    ("user.created\n", "contains whitespace ('\\n' at index 12)"),
    ("user\r.x", "contains whitespace ('\\r' at index 4)"),
    ("a\x0bb", "contains whitespace ('\\x0b' at index 1)"),
    ("a\x0cb", "contains whitespace ('\\x0c' at index 1)"),
    ("a\u00a0b", "contains whitespace ('\\xa0' at index 1)"),
    ("a\u2028b", "contains whitespace ('\\u2028' at index 1)"),
    ("a\u3000b", "contains whitespace ('\\u3000' at index 1)"),
    ("a\x00b", "contains a control character ('\\x00' at index 1)"),
    ("\x01", "contains a control character ('\\x01' at index 0)"),
    ("a.\x1bb", "contains a control character ('\\x1b' at index 2)"),
    ("a\x7f", "contains a control character ('\\x7f' at index 1)"),
    ("a\x80", "contains a control character ('\\x80' at index 1)"),
    ("a\x9f", "contains a control character ('\\x9f' at index 1)"),
]


@pytest.mark.parametrize(("topic", "message"), UNPRINTABLE_KEYS)
def test_validate_topic_rejects_whitespace_and_control_characters(topic: str, message: str) -> None:
    with pytest.raises(TopicError) as raised:
        validate_topic(topic)
    assert str(raised.value).startswith(f"topic {topic!r} {message}: ")
    assert "must not contain whitespace or control characters" in str(raised.value)


@pytest.mark.parametrize(("pattern", "message"), UNPRINTABLE_KEYS)
def test_validate_pattern_rejects_whitespace_and_control_characters(pattern: str, message: str) -> None:
    with pytest.raises(TopicError) as raised:
        validate_pattern(pattern)
    assert str(raised.value).startswith(f"pattern {pattern!r} {message}: ")


@pytest.mark.parametrize("pattern", ["user.* ", "#\t", "a.\x00.#", "*.\x85"])
def test_validate_pattern_rejects_whitespace_beside_wildcards(pattern: str) -> None:
    with pytest.raises(TopicError, match=r"whitespace|control character"):
        validate_pattern(pattern)


def test_validate_topic_reports_the_first_unprintable_character() -> None:
    with pytest.raises(TopicError, match=re.escape("contains a control character ('\\x00' at index 1)")):
        validate_topic("a\x00 b\n")


@pytest.mark.parametrize("key", ["a\u200bb", "ünï.cødé", "a~b!c@d$e%f^g&h(i)j", "日本.東京", "a\u00adb"])
def test_printable_characters_beyond_ascii_are_accepted(key: str) -> None:
    # Format characters such as a zero-width space (Cf) are neither whitespace nor control characters.
    assert validate_topic(key) == key
    assert validate_pattern(key) == key


def test_topic_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_topic("")


@pytest.mark.parametrize(
    ("pattern", "kind"),
    [
        ("rpc.users.get", "call"),
        ("rpc.#", "call"),
        ("rpc", "call"),
        ("rpcx.users", "event"),
        ("users.rpc", "event"),
        ("user.created", "event"),
        ("#", "event"),
        ("*.users.get", "event"),
        ("", "event"),
    ],
)
def test_default_kind_is_call_when_the_first_word_is_rpc(pattern: str, kind: str) -> None:
    assert default_kind(pattern) == kind
