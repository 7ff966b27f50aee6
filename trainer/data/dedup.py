"""De-duplication: exact (content hash) and near-duplicate (MinHash LSH over word shingles, datasketch)."""

from __future__ import annotations

import re

from datasketch import MinHash, MinHashLSH
from datasketch.lsh import _optimal_param

from llmops.trainer.config.data import NearDedupConfig

_WORD = re.compile(r"\w+")


def shingles(text: str, size: int) -> set[bytes]:
    """Word n-grams of lower-cased text; a text shorter than `size` words is one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


# LSH only proposes candidates, each checked against the exact Jaccard below, so false positives cost a
# little time but never a wrongly dropped document; missed pairs are lost for good. Hence the weights.
FALSE_POSITIVE_WEIGHT, FALSE_NEGATIVE_WEIGHT = 0.05, 0.95


def lsh_parameters(config: NearDedupConfig) -> tuple[int, int]:
    """(bands, rows): the configured bands, else the split that favours recall at the threshold."""
    if config.bands:
        return config.bands, config.num_permutations // config.bands
    bands, rows = _optimal_param(config.threshold, config.num_permutations, FALSE_POSITIVE_WEIGHT,
                                 FALSE_NEGATIVE_WEIGHT)
    return bands, rows


class NearDuplicateIndex:
    """Streaming near-duplicate detection: a document is a duplicate of an earlier kept one when LSH makes
    them candidates and their exact shingle Jaccard similarity reaches the threshold.

    The first document of a duplicate cluster is kept, later ones are dropped, so the result does not
    depend on how many workers ran the per-document stages. Kept documents' shingle hashes stay in memory
    for the exact check (about 6 kB per 100-word document).
    """

    def __init__(self, config: NearDedupConfig):
        self.config = config
        self.bands, self.rows = lsh_parameters(config)
        self.lsh = MinHashLSH(num_perm=self.bands * self.rows, params=(self.bands, self.rows))
        # Permutations are drawn once and shared: building them per document costs more than hashing it.
        template = MinHash(num_perm=self.bands * self.rows, seed=1)
        self._permutations, self._scheme = template.permutations, template.scheme
        self._shingles: dict[str, frozenset[int]] = {}

    def signature(self, grams: set[bytes]) -> MinHash:
        minhash = MinHash(num_perm=self.bands * self.rows, seed=1, permutations=self._permutations,
                          scheme=self._scheme)
        minhash.update_batch(list(grams))
        return minhash

    def is_duplicate(self, key: str, text: str) -> bool:
        """Check `text` against every kept document so far, and keep it when it is new."""
        grams = shingles(text, self.config.shingle_size)
        hashed = frozenset(hash(g) for g in grams)
        minhash = self.signature(grams)
        for candidate in self.lsh.query(minhash):
            other = self._shingles[candidate]
            if len(hashed & other) / len(hashed | other) >= self.config.threshold:
                return True
        self.lsh.insert(key, minhash)
        self._shingles[key] = hashed
        return False


def jaccard(a: str, b: str, size: int) -> float:
    """Exact Jaccard similarity of two texts' shingle sets (for tests and the benchmark)."""
    sa, sb = shingles(a, size), shingles(b, size)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


