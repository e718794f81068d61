"""The matcher regexes' own memory: results remembered per pattern, within bounds whatever the values."""

from __future__ import annotations

from sidecars.adapter.promql import regex


def test_match_results_are_remembered_within_bounds() -> None:
    pattern = regex.AnchoredRegex("a.*")
    # A target inventing new label values on every scrape: the memo starts afresh at its bound.
    for i in range(3 * regex._MEMO_VALUES):
        assert pattern.matches(f"a{i}") and not pattern.matches(f"b{i}")
        assert len(pattern._memo) <= regex._MEMO_VALUES
    assert pattern.matches("a0") and not pattern.matches("b0")  # right after a fresh start too
    # A long value is matched every time, never kept.
    long = "a" * (regex._MEMO_VALUE_CHARS + 1)
    assert pattern.matches(long) and not pattern.matches("b" + long)
    assert long not in pattern._memo and "b" + long not in pattern._memo
    # Compiled patterns come from the rules file; a cache bounded in entries holds them.
    assert regex.compile_anchored.cache_info().maxsize == 1024
