"""Per-document stages as pure functions: normalise, filter (with the rule that dropped), scrub, split."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter

from llmops.trainer.config.data import (
    LengthFilter,
    LineFilter,
    NormalizeConfig,
    PiiKind,
    QualityFilter,
    UnicodeForm,
)

_SPACES = re.compile(r"[ \t\u00a0]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BULLETS = ("•", "-", "*", "‣", "▪")
_TERMINAL = (".", "!", "?", '"', "'", "”", "’")
_BOILERPLATE = ("javascript", "lorem ipsum", "cookie policy", "use cookies", "terms of use", "privacy policy")


def normalize(text: str, config: NormalizeConfig) -> str:
    if config.unicode is not UnicodeForm.NONE:
        text = unicodedata.normalize(config.unicode.value, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if config.strip_control_characters:
        text = _CONTROL.sub("", text)
    if config.collapse_whitespace:
        text = "\n".join(_SPACES.sub(" ", line).strip() for line in text.split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def length_rule(text: str, config: LengthFilter) -> str | None:
    """The rule the text breaks (e.g. "length.minChars"), or None when it passes."""
    if len(text) < config.min_chars:
        return "length.minChars"
    if len(text) > config.max_chars:
        return "length.maxChars"
    return None


def quality_rule(text: str, config: QualityFilter) -> str | None:
    """Gopher-style quality heuristics (Rae et al. 2021): the first rule the text breaks, or None."""
    if not config.enabled:
        return None
    words = text.split()
    if len(words) < config.min_words:
        return "quality.minWords"
    if len(words) > config.max_words:
        return "quality.maxWords"
    mean_length = sum(map(len, words)) / len(words)
    if mean_length < config.min_mean_word_length:
        return "quality.minMeanWordLength"
    if mean_length > config.max_mean_word_length:
        return "quality.maxMeanWordLength"
    if (text.count("#") + text.count("...") + text.count("…")) / len(words) > config.max_symbol_word_ratio:
        return "quality.maxSymbolWordRatio"
    lines = [line for line in text.split("\n") if line.strip()]
    if lines:
        if sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines) > config.max_ellipsis_line_fraction:
            return "quality.maxEllipsisLineFraction"
        if sum(line.lstrip().startswith(_BULLETS) for line in lines) / len(lines) > config.max_bullet_line_fraction:
            return "quality.maxBulletLineFraction"
        if (len(lines) - len(set(lines))) / len(lines) > config.max_duplicate_line_fraction:
            return "quality.maxDuplicateLineFraction"
    # A word "has a letter": isalpha() settles most words at C speed; the per-character test only the rest.
    alphabetic = sum(1 for w in words if w.isalpha() or any(map(str.isalpha, w)))
    if alphabetic / len(words) < config.min_alphabetic_word_fraction:
        return "quality.minAlphabeticWordFraction"
    if len(words) > 2:
        bigrams = Counter(zip(words, words[1:], strict=False))
        (top, count), = bigrams.most_common(1)
        if count > 1 and count * (len(top[0]) + len(top[1])) / len(text) > config.max_top_ngram_fraction:
            return "quality.maxTopNgramFraction"
    return None


def filter_lines(text: str, config: LineFilter) -> tuple[str, int]:
    """C4-style line filtering: the kept text and how many lines were removed."""
    if not config.enabled:
        return text, 0
    kept, removed = [], 0
    for line in text.split("\n"):
        stripped = line.strip()
        lower = stripped.lower()
        if stripped and (len(stripped.split()) < config.min_words_per_line
                         or (config.require_terminal_punctuation and not stripped.endswith(_TERMINAL))
                         or (config.drop_boilerplate and any(b in lower for b in _BOILERPLATE))):
            removed += 1
            continue
        kept.append(line)
    return "\n".join(kept).strip(), removed


# PII patterns, applied in this order so that e.g. a card number is not taken for a phone number.
_PII_PATTERNS: list[tuple[PiiKind, re.Pattern[str]]] = [
    (PiiKind.SECRET, re.compile(
        r"\b(?:AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}|xox[abprs]-[A-Za-z0-9-]{10,}"
        r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9_-]{20,})\b"
        r"|(?i:(?<=api_key=)|(?<=api-key: )|(?<=apikey=)|(?<=token=)|(?<=secret=)|(?<=password=))"
        r"[A-Za-z0-9_./+=-]{8,}")),
    (PiiKind.EMAIL, re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    (PiiKind.CREDIT_CARD, re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")),
    (PiiKind.IP_ADDRESS, re.compile(
        r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")),
    (PiiKind.PHONE, re.compile(
        r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}"
        r"(?![ .-]?\d)(?!\w)")),
]
PLACEHOLDERS = {kind: f"<{re.sub(r'(?<!^)(?=[A-Z])', '_', kind.value).upper()}>" for kind in PiiKind}


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def scrub_pii(text: str, kinds: list[PiiKind]) -> tuple[str, Counter[str]]:
    """Replace PII by typed placeholders (<EMAIL>, <CREDIT_CARD>, ...); count replacements by kind."""
    counts: Counter[str] = Counter()
    for kind, pattern in _PII_PATTERNS:
        if kind not in kinds:
            continue

        def replace(match: re.Match[str], kind: PiiKind = kind) -> str:
            if kind is PiiKind.CREDIT_CARD:
                digits = re.sub(r"\D", "", match.group())
                if not (13 <= len(digits) <= 19 and luhn_valid(digits)):
                    return match.group()
            counts[kind.value] += 1
            return PLACEHOLDERS[kind]

        text = pattern.sub(replace, text)
    return text, counts


def content_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def is_validation(text_hash: str, fraction: float, seed: int) -> bool:
    """Deterministic split: the same document always lands on the same side for a given seed."""
    digest = hashlib.sha1(f"{seed}:{text_hash}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
