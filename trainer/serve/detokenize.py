"""Token ids to text as they arrive, with stop strings.

Decoding a growing list of ids from scratch every token is quadratic, and decoding ids one at a time breaks
characters whose bytes span tokens and drops the leading spaces some tokenizers add in context. So each new
piece is the difference between decoding a short window with and without the newest ids (the approach
vLLM and text-generation-inference use), and nothing is released while it ends in an incomplete character.
Text that could be the start of a stop string is held back until it cannot be.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, tokenizer: Any, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        """Text decoded so far (up to the last complete character)."""
        self.released = 0
        """Characters of `text` handed out."""
        self.stopped = False
        """A stop string matched; `text` ends before it."""
        self._prefix = 0
        self._read = 0
        # The Rust tokenizer directly: what a fast tokenizer's decode returns when it cleans up no spaces, at a
        # fraction of the Python wrapper's cost (twice per token per stream).
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend_decode = None
        if backend is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", True):
            self._backend_decode = lambda ids: backend.decode(ids, skip_special_tokens=True)

    def _decode(self, ids: list[int]) -> str:
        if self._backend_decode is not None:
            return self._backend_decode(ids)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        """Add one token; returns the text that may be shown now (often empty)."""
        if self.stopped:
            return ""
        self.ids.append(token)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            searched_from = max(0, len(self.text) - self.holdback)
            self.text += after[len(before) :]
            self._prefix, self._read = self._read, len(self.ids)
            if self._match_stop(searched_from):
                return self._release(len(self.text))
        return self._release(len(self.text) - self.holdback)

    def flush(self) -> str:
        """At the end of generation: everything not yet handed out, an incomplete last character included."""
        if not self.stopped and len(self.ids) > self._read:
            before = self._decode(self.ids[self._prefix : self._read])
            searched_from = max(0, len(self.text) - self.holdback)
            self.text += self._decode(self.ids[self._prefix :])[len(before) :]
            self._read = len(self.ids)
            self._match_stop(searched_from)
        return self._release(len(self.text))

    def _match_stop(self, start: int) -> bool:
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if not hits:
            return False
        self.text = self.text[: min(hits)]
        self.stopped = True
        return True

    def _release(self, upto: int) -> str:
        if upto <= self.released:
            return ""
        piece = self.text[self.released : upto]
        self.released = upto
        return piece
