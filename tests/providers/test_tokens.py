from hypothesis import given
from hypothesis import strategies as st

from providers.tokens import count_tokens, split_tokens


@given(st.text())
def test_tokens_join_back_to_the_text(text: str) -> None:
    tokens = split_tokens(text)
    assert "".join(tokens) == text
    assert all(tokens)
    assert count_tokens(text) == len(tokens)


def test_words_punctuation_and_numbers_split_like_a_tokenizer() -> None:
    assert split_tokens("Hello, world! 12345") == ["Hello", ",", " world", "!", " 123", "45"]
