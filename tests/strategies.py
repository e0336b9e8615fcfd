"""Hypothesis strategies for tokens, subjects and patterns.

Built on the test kit users get, ``trio_pubsub.testing``, with a vocabulary of
tokens chosen to make matches likely and to include odd literals.
"""

from __future__ import annotations

from hypothesis import strategies as st

from trio_pubsub.testing import tokens

# A small vocabulary makes matches likely; the odd tokens are literals that merely
# contain wildcard characters, and unicode that is not whitespace.
LITERAL_TOKENS = ["a", "b", "c", "orders", "42", "a*", "*b", ">>", "x>", "é", "日本"]

literal_tokens = tokens(vocabulary=LITERAL_TOKENS)
subject_tokens = st.lists(literal_tokens, min_size=1, max_size=8)
subjects = subject_tokens.map(".".join)
# Deep subjects share a long prefix, so that deep patterns can match them.
deep_subjects = st.tuples(
    st.integers(20, 60), st.lists(literal_tokens, min_size=0, max_size=4)
).map(lambda pair: ".".join(["a"] * pair[0] + pair[1]))


@st.composite
def patterns(draw: st.DrawFn, *, deep: bool = False) -> str:
    """A valid pattern: literal or ``*`` tokens, optionally ending in ``>``."""
    body = draw(
        st.lists(
            st.one_of(literal_tokens, st.just("*")),
            min_size=0,
            max_size=7,
        )
    )
    if deep:
        body = ["a"] * draw(st.integers(18, 60)) + body
    if draw(st.booleans()) or not body:
        body.append(">")
    return ".".join(body)
