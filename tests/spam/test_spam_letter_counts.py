"""The upper-case share (BODY_SHOUTING and friends) counts letters the same on both paths:
bytes.translate for ASCII text, the regexes for everything else."""
from hypothesis import given
from hypothesis import strategies as st

from mailyard.spam.evals import _LETTER, _UPPER, _letter_counts


def by_regex(text: str) -> tuple[int, int]:
    return len(_LETTER.findall(text)), len(_UPPER.findall(text))


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_ascii_text_counts_like_the_regexes(text):
    assert _letter_counts(text) == by_regex(text)


@given(st.text())
def test_any_text_counts_like_the_regexes(text):
    assert _letter_counts(text) == by_regex(text)


def test_counts_of_a_shouting_line():
    assert _letter_counts("BUY NOW, only 9 left!") == (14, 6)
    assert _letter_counts("ÀÉ ée") == (4, 2)
