"""The shared JSONL readers: strict for user data, lenient for files pvlens appends to."""

from __future__ import annotations

import pytest

from pvlens.io.jsonl import iter_jsonl, read_jsonl_lenient


def test_strict_reader_names_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    rows = iter_jsonl(p, error=KeyError)
    assert next(rows) == (1, {"a": 1}) and next(rows) == (3, {"a": 2})  # blank line skipped
    with pytest.raises(KeyError, match=r"d.jsonl:4: not valid JSON"):
        next(rows)


def test_lenient_reader_skips_a_cut_off_line(tmp_path):
    p = tmp_path / "cache.jsonl"
    assert read_jsonl_lenient(p) == []  # not written yet
    p.write_text('{"k": 1}\n\n{"k": 2}\n{"k": 3')
    assert read_jsonl_lenient(p) == [{"k": 1}, {"k": 2}]


def test_keyed_text_store_appends_and_survives_a_cut_line(tmp_path):
    from pvlens.io.jsonl import KeyedTextStore

    p = tmp_path / "c.jsonl"
    s = KeyedTextStore(p, "reply")
    assert s.missing(["b", "a", "b"]) == [("a", 1), ("b", 2)]
    s.add(["a", "b"], ["A", "B"])
    with p.open("a") as f:
        f.write('{"key": "c", "rep')  # a write cut off by a kill
    again = KeyedTextStore(p, "reply")
    assert again.get(["b", "a"]) == ["B", "A"] and "c" not in again
    assert KeyedTextStore(p, "answer").known == {}  # another cache's field is not read
