"""BuildKit's shell lexer (frontend/dockerfile/shell/lex.go), as far as Dockerfiles use it: quote removal and
``$var ${var} ${var:-w} ${var-w} ${var:+w} ${var+w} ${var:?w} ${var?w}`` expansion, word splitting.

Single quotes are literal; inside double quotes the escape token only escapes ``"``, ``$`` and itself; outside,
it escapes any character.  An unset variable expands to nothing.  Words produced by a ``$`` expansion are split
on whitespace like the shell does; quoted text is never split.
"""
from __future__ import annotations

from collections.abc import Mapping

from pkg import errors

EOF_CH = ""


class _Words:
    """Word splitting as BuildKit's wordsStruct: raw (quoted/escaped) text never splits a word."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.word = ""
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace() and self.in_word:
            if self.word:
                self.words.append(self.word)
            self.word, self.in_word = "", False
        elif not ch.isspace():
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.word += ch
        self.in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text
        self.in_word = True

    def result(self) -> list[str]:
        if self.in_word:
            return [*self.words, self.word]
        return list(self.words)


class _Scanner:
    def __init__(self, text: str, env: Mapping[str, str], escape: str) -> None:
        self.text = text
        self.pos = 0
        self.env = env
        self.escape = escape

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else EOF_CH

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self.pos += 1
        return ch

    # ---- the grammar ----
    def process(self, stop: str = EOF_CH) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        while self.peek() != EOF_CH:
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words.result()
            if ch == "'":
                text = self._single()
                result.append(text)
                words.add_raw_string(text)
            elif ch == '"':
                text = self._double()
                result.append(text)
                words.add_raw_string(text)
            elif ch == "$":
                text = self._dollar()
                result.append(text)
                words.add_string(text)
            else:
                ch = self.next()
                if ch == self.escape:
                    ch = self.next()
                    if ch == EOF_CH:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise errors.InvalidArgument(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def _single(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.next()
            if ch == EOF_CH:
                raise errors.InvalidArgument("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double(self) -> str:
        self.next()
        out: list[str] = []
        while True:
            ch = self.peek()
            if ch == EOF_CH:
                raise errors.InvalidArgument("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self.next()
            if ch == self.escape:
                following = self.peek()
                if following == EOF_CH:
                    continue
                if following in ('"', "$", self.escape):
                    ch = self.next()
            out.append(ch)

    def _name(self) -> str:
        name = []
        while (ch := self.peek()) and (ch.isalnum() or ch == "_"):
            name.append(self.next())
        return "".join(name)

    def _dollar(self) -> str:
        self.next()  # the $
        if self.peek() != "{":
            name = self._name()
            if not name:
                return "$"
            return self.env.get(name, "")
        self.next()  # the {
        name = self._name()
        if not name:
            raise errors.InvalidArgument("bad substitution")
        ch = self.peek()
        if ch == "}":
            self.next()
            return self.env.get(name, "")
        colon = ch == ":"
        if colon:
            self.next()
            ch = self.peek()
        if ch not in ("-", "+", "?"):
            raise errors.InvalidArgument(f"unsupported modifier ({ch or 'EOF'}) in substitution")
        self.next()
        word, _ = self.process("}")
        value = self.env.get(name)
        is_set = value is not None and (value != "" or not colon)
        if ch == "-":
            return value if is_set and value is not None else word
        if ch == "+":
            return word if is_set else ""
        if not is_set:  # ?
            raise errors.InvalidArgument(f"{name}: {word}" if word else f"{name}: is not allowed to be unset")
        return value or ""


def process_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """One word, quotes removed and variables expanded (ENV, LABEL, WORKDIR, USER, COPY paths, ...)."""
    result, _ = _Scanner(text, env, escape).process()
    return result


def process_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Words after expansion and splitting (EXPOSE, VOLUME in shell form)."""
    _, words = _Scanner(text, env, escape).process()
    return words
