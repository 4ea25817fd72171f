"""The Dockerfile frontend: parser (continuations, directives, forms, heredocs, errors), BuildKit's shell lexer
and the .dockerignore matcher (moby's patternmatcher semantics)."""
from __future__ import annotations

import pytest

from pkg import errors
from pkg.docker.build.dockerfile.ignore import Matcher, read_patterns
from pkg.docker.build.dockerfile.instructions import find_stage, parse_stages
from pkg.docker.build.dockerfile.lexer import process_word, process_words
from pkg.docker.build.dockerfile.parser import ParseError, parse


# ---- lexer ----
@pytest.mark.parametrize(("word", "env", "expected"), [
    ("$A", {"A": "1"}, "1"),
    ("${A}x", {"A": "1"}, "1x"),
    ("${A:-w}", {}, "w"),
    ("${A:-w}", {"A": ""}, "w"),
    ("${A-w}", {"A": ""}, ""),
    ("${A:+w}", {"A": "1"}, "w"),
    ("${A:+w}", {"A": ""}, ""),
    ("${A+w}", {"A": ""}, "w"),
    ("${A:-${B}}", {"B": "b"}, "b"),
    ("$UNSET", {}, ""),
    ("'$A'", {"A": "1"}, "$A"),
    ('"$A b"', {"A": "1"}, "1 b"),
    ('"a\\"b"', {}, 'a"b'),
    ('"a\\nb"', {}, "a\\nb"),  # inside double quotes \ only escapes " $ and itself
    ("a\\ b", {}, "a b"),
    ("\\$A", {"A": "1"}, "$A"),
    ("$", {}, "$"),
    ("a$-b", {}, "a$-b"),
])
def test_process_word(word: str, env: dict[str, str], expected: str) -> None:
    assert process_word(word, env) == expected


def test_process_word_with_backtick_escape() -> None:
    assert process_word("a`$b", {"b": "x"}, escape="`") == "a$b"


def test_words_split_expansions_but_not_quotes() -> None:
    assert process_words('a $X "b c" d\\ e', {"X": "1 2"}) == ["a", "1", "2", "b c", "d e"]


@pytest.mark.parametrize(("word", "message"), [
    ("'abc", "single-quote"),
    ('"abc', "double-quote"),
    ("${A:?must be set}", "A: must be set"),
    ("${}", "bad substitution"),
])
def test_lexer_errors(word: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        process_word(word, {})


# ---- parser ----
def test_continuations_comments_and_forms() -> None:
    df = parse("FROM busybox\n"
               "# a comment\n"
               "RUN echo a \\\n"
               "   # comment inside\n"
               "\n"
               "  && echo b\n"
               'CMD ["sh", "-c", "x"]\n'
               "ENTRYPOINT echo not json [\n"
               "COPY --chown=1:2 --from=a x y /d/\n"
               'ENV A=1 B="two words"\n'
               "ENV legacy value with spaces\n"
               "ARG X Y=2\n"
               "EXPOSE 80 443/udp\n")
    cmds = [n.cmd for n in df.nodes]
    assert cmds == ["from", "run", "cmd", "entrypoint", "copy", "env", "env", "arg", "expose"]
    run = df.nodes[1]
    assert run.args == ("echo a   && echo b",) and not run.json and run.line == 3
    assert df.nodes[2].json and df.nodes[2].args == ("sh", "-c", "x")
    assert not df.nodes[3].json and df.nodes[3].args == ("echo not json [",)
    assert df.nodes[4].flags == ("chown=1:2", "from=a") and df.nodes[4].args == ("x", "y", "/d/")
    assert df.nodes[5].pairs == (("A", "1"), ("B", '"two words"'))
    assert df.nodes[6].pairs == (("legacy", "value with spaces"),)
    assert df.nodes[7].pairs == (("X", None), ("Y", "2"))
    assert df.nodes[8].args == ("80", "443/udp")


def test_escape_directive() -> None:
    df = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n")
    assert df.escape == "`"
    assert df.nodes[1].args == ("echo a   b",)


def test_directive_only_at_the_top() -> None:
    df = parse("FROM busybox\n# escape=`\nRUN echo \\\n x\n")
    assert df.escape == "\\" and df.nodes[1].args == ("echo  x",)


def test_heredoc() -> None:
    df = parse("FROM busybox\nRUN <<EOF\necho one\necho two\nEOF\nRUN true\n")
    run = df.nodes[1]
    assert run.heredocs[0].content == "echo one\necho two\n"
    assert [n.cmd for n in df.nodes] == ["from", "run", "run"]


def test_onbuild_and_healthcheck() -> None:
    df = parse("FROM busybox\nONBUILD RUN echo hi\nHEALTHCHECK --interval=5s --retries=3 CMD [\"true\"]\n"
               "HEALTHCHECK NONE\n")
    onbuild = df.nodes[1]
    assert onbuild.sub is not None and onbuild.sub.cmd == "run" and onbuild.args == ("RUN echo hi",)
    assert df.nodes[2].args == ("CMD", "true") and df.nodes[2].flags == ("interval=5s", "retries=3")
    assert df.nodes[3].args == ("NONE",)


@pytest.mark.parametrize(("text", "message"), [
    ("FROM busybox\nFOO bar\n", "dockerfile parse error on line 2: unknown instruction: FOO"),
    ("FROM\n", "dockerfile parse error on line 1: FROM requires either one or three arguments"),
    ("FROM a b c\n", "dockerfile parse error on line 1: Second argument should be AS"),
    ("FROM busybox\nCOPY x\n", "dockerfile parse error on line 2: COPY requires at least two arguments"),
    ("FROM busybox\nWORKDIR\n", "dockerfile parse error on line 2: WORKDIR requires exactly one argument"),
    ("FROM busybox\nCOPY --nope=1 a b\n", "dockerfile parse error on line 2: unknown flag: nope"),
    ("FROM busybox\nENV A\n", "dockerfile parse error on line 2: ENV must have two arguments"),
    ("FROM busybox\nENV A=1 B\n", "can't find = in 'B'"),
    ("FROM busybox\nSHELL sh -c\n", "SHELL requires the arguments to be in JSON form"),
    ("FROM busybox\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM busybox\nONBUILD FROM x\n", "FROM isn't allowed as an ONBUILD trigger"),
    ("RUN true\n", "dockerfile parse error on line 1: no build stage in current context"),
    ("FROM busybox AS 1st\n", "invalid name for build stage"),
    ("FROM busybox\nHEALTHCHECK FOO x\n", 'Unknown type "FOO" in HEALTHCHECK'),
    ("FROM busybox\nRUN --mount=type=cache,target=/x true\n", "the --mount option requires BuildKit"),
    ("# just a comment\n\n", "file with no instructions"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_stages(parse(text))
    assert message in info.value.message


def test_parse_error_carries_the_line() -> None:
    with pytest.raises(ParseError) as info:
        parse("FROM busybox\n\n\nBAD x\n")
    assert info.value.line == 4


def test_stages_and_meta_args() -> None:
    parsed = parse_stages(parse("ARG V=1\nFROM busybox AS Build\nRUN true\nFROM scratch\nCOPY --from=build /x /\n"))
    assert [a.node.pairs for a in parsed.meta_args] == [(("V", "1"),)]
    assert [(s.name, s.base, len(s.instructions)) for s in parsed.stages] == [("build", "busybox", 1),
                                                                              ("", "scratch", 1)]
    assert find_stage(parsed.stages, "BUILD") is parsed.stages[0]
    assert find_stage(parsed.stages, "1") is parsed.stages[1]
    assert find_stage(parsed.stages, "nope") is None


# ---- .dockerignore ----
def test_read_patterns_trims_and_skips() -> None:
    text = "ignored\n ignored-with-spaces \n!ignored/subdir/excepted-file\n! spaced  \n\n#comment\n/abs/x\n./rel\n"
    assert read_patterns(text) == ["ignored", "ignored-with-spaces", "!ignored/subdir/excepted-file", "!spaced",
                                   "abs/x", "rel"]


@pytest.mark.parametrize(("patterns", "path", "ignored"), [
    (["*.log"], "a.log", True),
    (["*.log"], "dir/a.log", False),
    (["**/*.log"], "dir/sub/a.log", True),
    (["**/*.log"], "a.log", True),
    (["dir"], "dir/deep/file", True),
    (["dir", "!dir/keep"], "dir/keep", False),
    (["dir", "!dir/keep"], "dir/other", True),
    (["dir/*", "!dir/keep*", "dir/keep-not"], "dir/keep-not", True),
    (["a?c"], "abc", True),
    (["a?c"], "a/c", False),
    (["[a-c]x"], "bx", True),
    (["[!a-c]x"], "bx", False),
    (["#*"], "#file.txt", False),  # a comment line, not a pattern
    (["Dockerfile"], "Dockerfile", True),
])
def test_matcher(patterns: list[str], path: str, ignored: bool) -> None:
    assert Matcher(read_patterns("\n".join(patterns))).matches(path) is ignored
