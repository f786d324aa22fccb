"""Token texts and character offsets of generated sequences, decoded incrementally."""

from __future__ import annotations


class IncrementalDecoder:
    """The text of a growing token sequence, decoded in one linear pass, equal to decoding the whole
    prefix each time (special tokens skipped).

    A step decodes only the tokens since the text last ended on a complete character, plus one token
    before them: byte-level pieces of one character decode only together (a prefix that ends inside
    a character shows U+FFFD until its last byte arrives), and decoders such as sentencepiece's drop
    the leading space of the first token they see, which the extra token absorbs."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        self.ids: list[int] = []  # the non-special tokens so far
        self.text = ""  # decoded ids[:stable]: no later token can change it
        self.tail = ""  # the rest of the text decoded so far, which the next token may still change
        self._context, self._stable, self._context_length = 0, 0, 0  # window start; committed end; len(decode(ids[context:stable]))

    def add(self, token_id: int) -> int | None:
        """Append one token; the length of the text decoded so far, None for a special token."""
        if token_id in self.special:
            return None
        self.ids.append(token_id)
        window = self.tokenizer.decode(self.ids[self._context:], skip_special_tokens=True)
        self.tail = window[self._context_length:]
        length = len(self.text) + len(self.tail)
        if not window.endswith("\ufffd"):  # complete characters: commit, keep one token of context
            self.text += self.tail
            self.tail = ""
            self._context, self._stable = len(self.ids) - 1, len(self.ids)
            self._context_length = len(self.tokenizer.decode(self.ids[self._context:], skip_special_tokens=True))
        return length


def decoded_offsets(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it (special tokens (0, 0)):
    token k spans from the end of the text of the tokens before it to the end of the text of
    ``ids[:k + 1]`` (the prefix, not the token: byte-level pieces of one character only decode together)."""
    decoder, offsets, end = IncrementalDecoder(tokenizer), [], 0
    for token_id in ids:
        length = decoder.add(token_id)
        offsets.append((0, 0) if length is None else (end, length))
        end = end if length is None else length
    return decoder.text + decoder.tail, offsets
