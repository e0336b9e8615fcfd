"""Which pattern receives which subject: a routing table.

Run it to see the NATS rules at work: '*' matches exactly one token, '>' one or
more trailing tokens, and a token that merely contains '*' or '>' is literal.
"""

from __future__ import annotations

from trio_pubsub import InvalidSubjectError, subject_matches, validate_subject

PATTERNS = ["orders.*.created", "orders.>", "*.42.*", ">", "orders.42", "a*.>"]
SUBJECTS = [
    "orders.42.created",
    "orders.42",
    "orders",
    "orders.42.items.created",
    "payments.42.failed",
    "a*.b",
]


def main() -> None:
    width = max(map(len, SUBJECTS))
    print(" " * width + "  " + "  ".join(PATTERNS))
    for subject in SUBJECTS:
        marks = [
            ("yes" if subject_matches(p, subject) else "-").center(len(p))
            for p in PATTERNS
        ]
        print(f"{subject:<{width}}  " + "  ".join(marks))
    print()
    for bad in ["orders..42", "orders.*", "orders 42"]:
        try:
            validate_subject(bad)
        except InvalidSubjectError as exc:
            print(f"publish({bad!r}) would fail: {exc}")


if __name__ == "__main__":
    main()
