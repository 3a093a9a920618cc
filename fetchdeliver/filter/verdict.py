"""What a scanner said, and the header lines that carry it into the message."""

from __future__ import annotations


class SpamVerdict:
    """A spam scanner's answer: score against its threshold, and the rules that hit."""

    __slots__ = ("scanner", "spam", "score", "required", "tests")

    def __init__(self, scanner: str, spam: bool, score: float, required: float, tests: list[str]) -> None:
        self.scanner = scanner
        self.spam = spam
        self.score = score
        self.required = required
        self.tests = tests

    def __repr__(self) -> str:
        return f"SpamVerdict({self.scanner}, spam={self.spam}, {self.score}/{self.required}, {self.tests})"

    def headers(self) -> list[tuple[str, str]]:
        """The headers as SpamAssassin writes them (X-Spam-Flag only on spam)."""
        out = []
        if self.spam:
            out.append(("X-Spam-Flag", "YES"))
        out.append(("X-Spam-Score", f"{self.score:.1f}"))
        out.append(("X-Spam-Level", "*" * min(max(int(self.score), 0), 50)))
        tests = ",".join(self.tests) if self.tests else "none"
        status = (f"{'Yes' if self.spam else 'No'}, score={self.score:.1f} required={self.required:.1f} "
                  f"tests={tests} scanner={self.scanner}")
        out.append(("X-Spam-Status", status))
        return out


class VirusVerdict:
    """A virus scanner's answer: clean, or infected with a named signature."""

    __slots__ = ("scanner", "infected", "name")

    def __init__(self, scanner: str, infected: bool, name: str = "") -> None:
        self.scanner = scanner
        self.infected = infected
        self.name = name

    def __repr__(self) -> str:
        return f"VirusVerdict({self.scanner}, infected={self.infected}, {self.name!r})"

    def headers(self) -> list[tuple[str, str]]:
        """The headers clamav-milter writes."""
        status = f"Infected ({self.name})" if self.infected else "Clean"
        return [("X-Virus-Scanned", self.scanner), ("X-Virus-Status", status)]


def fold(name: str, value: str, eol: bytes, width: int = 78) -> bytes:
    """`Name: value` folded at spaces and commas to stay near `width` columns (RFC 5322 2.2.3)."""
    words = []
    for part in value.split(" "):
        # Long comma lists (tests=A,B,C) may break after a comma, as SpamAssassin folds them.
        pieces = part.split(",")
        for i, p in enumerate(pieces):
            words.append((p + ("," if i < len(pieces) - 1 else ""), i == 0))
    lines = []
    line = f"{name}:"
    for word, after_space in words:
        sep = " " if after_space else ""
        if len(line) + len(sep) + len(word) > width and line.strip() and line != f"{name}:":
            lines.append(line)
            line = "\t" + word
        else:
            line += sep + word
    lines.append(line)
    return eol.join(x.encode("utf-8", "replace") for x in lines) + eol
