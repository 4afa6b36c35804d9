"""The similarity key of an activity: what people share is grouped by equality on it.

    "Listening to Taylor Swift's Lover"  (kind listening)
    "listening to LOVER by taylor swift!" (kind listening)   -> the same key

Normalization, in order: Unicode compatibility form without accents, case folded; possessive
's dropped; anything not a letter or digit splits words; stop words and the kind's own verb
("listening" when the kind is listening) dropped; each word lightly stemmed (plural and -ing /
-ed endings, final -e, -y -> -i); duplicates removed and the words sorted, so word order does not
matter. The key is the first 32 hex digits of SHA-256 over kind + words.

Why an exact key on normalized words and not SimHash: activities are a handful of words, where a
SimHash of one changed word flips many bits, and near neighbours need a Hamming-distance search
(banding tables) instead of one equality lookup on an index. Seed 000 asks for "O(1) lookup
using an indexed hash"; the normalized-word key is that, deterministic, explainable to a user,
and needs no model or network.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

KIND_VERBS: dict[str, str] = {
    "listening": "listen",
    "watching": "watch",
    "reading": "read",
    "playing": "play",
    "eating": "eat",
    "doing": "do",
}

STOP_WORDS = frozenset(
    """a an the to of by in on at for with and or but from about into onto out up off over
    is am are was were be been being i im ive me my mine we our you your he she his her
    they their them it its this that these those some any just now right currently again
    today tonight still also too very so really""".split()
)

_POSSESSIVE = re.compile(r"['\u2019]s\b")  # ' and the typographic apostrophe
_APOSTROPHE = re.compile(r"['\u2019]")
_NON_WORD = re.compile(r"[^\w]+|_+")
_VOWELS = frozenset("aeiouy")


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _has_vowel(word: str) -> bool:
    return any(c in _VOWELS for c in word)


def stem(word: str) -> str:
    """A light English stemmer (a small part of Porter's): enough to group plural and
    -ing/-ed forms of the same word; other languages pass through mostly unchanged."""
    if len(word) <= 3 or not word.isalpha():
        return word
    w = word
    if w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "i"
    elif w.endswith(("ches", "shes", "xes")):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        base = w[: -len(suffix)]
        if w.endswith(suffix) and len(base) >= 3 and _has_vowel(base):
            if base[-1] == base[-2] and base[-1] not in "lsz":  # running -> run
                base = base[:-1]
            w = base
            break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    if len(w) > 2 and w.endswith("y") and w[-2] not in _VOWELS:
        w = w[:-1] + "i"
    return w


def words(text: str, kind: str) -> list[str]:
    """The normalized, sorted, distinct words that make the key."""
    folded = _APOSTROPHE.sub("", _POSSESSIVE.sub("", _fold(text)))
    raw = [w for w in _NON_WORD.split(folded) if w]
    verb = KIND_VERBS.get(kind)
    kept = [stem(w) for w in raw if w not in STOP_WORDS]
    kept = [w for w in kept if w != verb]
    if not kept:  # only stop words ("I am"): keep them rather than group everything together
        kept = [stem(w) for w in raw]
    return sorted(set(kept))


def similarity_key(text: str, kind: str) -> str:
    """The grouping key, or ValueError when the text has no words at all."""
    normalized = words(text, kind)
    if not normalized:
        raise ValueError("the text has no words")
    digest = hashlib.sha256(f"{kind}\x1f{' '.join(normalized)}".encode()).hexdigest()
    return digest[:32]


def label(others: int) -> str:
    """How the ack says it: "only one", "1 other", "N others"."""
    if others <= 0:
        return "only one"
    return "1 other" if others == 1 else f"{others} others"
