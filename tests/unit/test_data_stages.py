"""Per-document data stages: each rule drops what it should, and says which rule it was."""

from __future__ import annotations

import pytest

from llmops.trainer.config.data import (
    LengthFilter,
    LineFilter,
    NearDedupConfig,
    NormalizeConfig,
    PiiKind,
    QualityFilter,
)
from llmops.trainer.data.dedup import NearDuplicateIndex, jaccard, lsh_parameters
from llmops.trainer.data.stages import (
    content_hash,
    filter_lines,
    is_validation,
    length_rule,
    luhn_valid,
    normalize,
    quality_rule,
    scrub_pii,
)

PROSE = ("The committee met on Tuesday to discuss the budget for the coming year. Members agreed that "
         "the library needs new shelves, better lighting and longer opening hours during the exam season. "
         "A vote on the proposal will follow next month after the treasurer has reviewed the numbers.")


def test_normalize_unifies_unicode_whitespace_and_control_characters() -> None:
    text = "Cafe\u0301  au\tlait\x07\r\n\r\n\r\n\r\nnext   line  "
    assert normalize(text, NormalizeConfig()) == "Café au lait\n\nnext line"


def test_length_rule() -> None:
    config = LengthFilter(min_chars=5, max_chars=10)
    assert [length_rule(t, config) for t in ("abc", "abcdef", "x" * 11)] == [
        "length.minChars", None, "length.maxChars"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (PROSE, None),
        ("too short to keep", "quality.minWords"),
        ("# " * 60, "quality.minMeanWordLength"),
        ("\n".join(["- item number one here"] * 3 + [PROSE]), "quality.maxDuplicateLineFraction"),
        ("\n".join(f"- bullet point {i} about things" for i in range(20)), "quality.maxBulletLineFraction"),
        ("\n".join(f"and then line number {i} of the story slowly trails off into nothing..." for i in range(20)),
         "quality.maxEllipsisLineFraction"),
        (" ".join(["123", "4567", "890"] * 30), "quality.minAlphabeticWordFraction"),
        (" ".join(["buy now"] * 40), "quality.maxTopNgramFraction"),
    ],
    ids=["prose", "short", "symbols", "duplicate-lines", "bullets", "ellipsis", "numbers", "repetition"],
)
def test_quality_rules(text: str, want: str | None) -> None:
    assert quality_rule(text, QualityFilter(min_words=10, max_duplicate_line_fraction=0.3)) == want


@pytest.mark.parametrize(("words", "want"), [
    (["king,", "été!", "(o)", "x2", "42.", "--"], None),  # 4 of 6 words hold a letter, punctuation or not
    (["king,", "été!", "42.", "--", "3", "½"], "quality.minAlphabeticWordFraction"),  # 2 of 6
])
def test_a_word_with_any_letter_counts_as_alphabetic(words: list[str], want: str | None) -> None:
    config = QualityFilter(min_words=1, min_mean_word_length=1, min_alphabetic_word_fraction=0.5,
                           max_top_ngram_fraction=1.0)
    assert quality_rule(" ".join(words * 5), config) == want


def test_line_filter_removes_boilerplate_and_fragments() -> None:
    text = "Please enable JavaScript to view this page.\nShort bit\n" + PROSE + "\nRead our cookie policy here."
    kept, removed = filter_lines(text, LineFilter(enabled=True))
    assert kept == PROSE and removed == 3


@pytest.mark.parametrize(
    ("text", "want", "kind"),
    [
        ("write to jane.roe@example.org today", "write to <EMAIL> today", PiiKind.EMAIL),
        ("call +44 20 7946 0958 now", "call <PHONE> now", PiiKind.PHONE),
        ("host 10.0.12.7 is down", "host <IP_ADDRESS> is down", PiiKind.IP_ADDRESS),
        ("card 4111-1111-1111-1111 ok", "card <CREDIT_CARD> ok", PiiKind.CREDIT_CARD),
        ("key AKIAIOSFODNN7EXAMPLE used", "key <SECRET> used", PiiKind.SECRET),
        ("token=ghp_" + "a" * 36, "token=<SECRET>", PiiKind.SECRET),
    ],
)
def test_pii_is_replaced_by_typed_placeholders(text: str, want: str, kind: PiiKind) -> None:
    scrubbed, counts = scrub_pii(text, list(PiiKind))
    assert scrubbed == want and counts[kind.value] >= 1


def test_card_numbers_need_a_valid_luhn_checksum() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    scrubbed, counts = scrub_pii("order 4111 1111 1111 1112 shipped in 1999", list(PiiKind))
    assert "4111 1111 1111 1112" in scrubbed and not counts


def test_only_the_configured_pii_kinds_are_scrubbed() -> None:
    scrubbed, _ = scrub_pii("mail a@b.io from 10.0.0.1", [PiiKind.EMAIL])
    assert scrubbed == "mail <EMAIL> from 10.0.0.1"


def test_split_is_deterministic_and_near_the_fraction() -> None:
    hashes = [content_hash(str(i)) for i in range(4000)]
    picked = [h for h in hashes if is_validation(h, 0.1, seed=7)]
    assert picked == [h for h in hashes if is_validation(h, 0.1, seed=7)]
    assert 320 < len(picked) < 480
    assert picked != [h for h in hashes if is_validation(h, 0.1, seed=8)]


def test_near_duplicate_index_finds_a_planted_near_duplicate() -> None:
    index = NearDuplicateIndex(NearDedupConfig(threshold=0.7))
    near_copy = PROSE.replace("numbers.", "numbers again.")
    assert jaccard(PROSE, near_copy, 5) > 0.9
    assert not index.is_duplicate("original", PROSE)
    assert index.is_duplicate("copy", near_copy)
    assert not index.is_duplicate("other", "A completely different story about a fisherman and the sea, "
                                           "told over many evenings in a small harbour town by the cliffs.")


def test_lsh_parameters_respect_configured_bands() -> None:
    assert lsh_parameters(NearDedupConfig(num_permutations=128, bands=16)) == (16, 8)
    bands, rows = lsh_parameters(NearDedupConfig(num_permutations=128, threshold=0.8))
    assert bands * rows <= 128
