"""dockerapi.filters: the one parser and the shared matchers of Docker's ``filters`` query parameter."""
from __future__ import annotations

import pytest

from dockerapi import filters
from pkg import errors

NOW = 1_700_000_000 * 10**9


def test_both_json_forms() -> None:
    assert filters.parse('{"dangling": {"true": true}}', ["dangling"]) == {"dangling": ["true"]}
    assert filters.parse('{"label": ["a=b", "c"]}', ["label"]) == {"label": ["a=b", "c"]}
    assert filters.parse('{"status": {"running": true, "exited": false}}', ["status"]) == {"status": ["running"]}
    assert filters.parse("", ["label"]) == {} and filters.parse(None, ["label"]) == {}


@pytest.mark.parametrize("raw, message", [
    ('{"nope": ["x"]}', "invalid filter 'nope'"),
    ("{not json", "invalid filter"),
    ('["label"]', "invalid filter"),
    ('{"label": "a=b"}', "invalid filter 'label'"),
])
def test_bad_filters(raw: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        filters.parse(raw, ["label", "dangling"])


def test_bool_values() -> None:
    assert filters.bool_value({}, "dangling") is None
    assert filters.bool_value({"dangling": ["true"]}, "dangling") is True
    assert filters.bool_value({"dangling": ["1", "TRUE"]}, "dangling") is True
    assert filters.bool_value({"dangling": ["0"]}, "dangling") is False
    with pytest.raises(errors.InvalidArgument, match=r"invalid filter 'dangling=\[maybe\]'"):
        filters.bool_value({"dangling": ["maybe"]}, "dangling")
    with pytest.raises(errors.InvalidArgument, match=r"invalid filter 'all=\[true false\]'"):
        filters.bool_value({"all": ["true", "false"]}, "all")


def test_labels() -> None:
    labels = {"a": "b", "c": ""}
    assert filters.labels_match(labels, ["a=b", "c"]) and filters.labels_match(labels, [])
    assert not filters.labels_match(labels, ["a=x"]) and not filters.labels_match(labels, ["d"])
    assert not filters.labels_match(labels, ["a!=b"])  # no such key as "a!"
    assert filters.labels_match(labels, ["c="])  # present and empty
    assert filters.labels_selected({"label": ["a"], "label!": ["keep"]}, labels)
    assert not filters.labels_selected({"label!": ["a=b"]}, labels)
    assert not filters.labels_selected({"label!": ["zzz", "c"]}, labels)  # any label! that holds keeps it
    assert not filters.labels_selected({"label": ["a=x"]}, labels)


def test_until() -> None:
    assert filters.until({}, NOW) is None
    assert filters.until({"until": ["10m"]}, NOW) == (NOW - 600 * 10**9) / 1e9
    assert filters.until({"until": ["1700000000.5"]}, NOW) == 1_700_000_000.5
    with pytest.raises(errors.InvalidArgument, match="more than one until filter"):
        filters.until({"until": ["1h", "2h"]}, NOW)
    with pytest.raises(errors.InvalidArgument, match="failed to parse value as time or duration"):
        filters.until({"until": ["yesterday"]}, NOW)
