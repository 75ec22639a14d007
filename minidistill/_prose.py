"""reStructuredText → plain prose, for building raw-text corpora from documentation sources.

Documentation books are real English prose wrapped in markup. :func:`rst_to_paragraphs` keeps the
prose and drops what is not: section underlines, tables, code and literal blocks (after ``::``),
doctest lines, comments and the bodies of code-like directives (``code-block``, ``toctree``,
``kernel-doc``, ``math``, …). Descriptive directives (``function``, ``note``, ``versionadded``, …)
keep their indented body, since that is where the prose is. Inline markup is reduced to its text:
``:func:`os.path.join``` → ``os.path.join``, ```text <url>`_`` → ``text``, ````literal```` →
``literal``, ``**bold**`` → ``bold``. A paragraph is kept when it has at least ``min_words``
words and is mostly letters (a line of symbols or numbers is not prose).
"""

from __future__ import annotations

import re

# directives whose indented body is code, data or navigation, never prose
CODE_DIRECTIVES = frozenset("""
code-block code sourcecode literalinclude highlight toctree kernel-doc kernel-abi kernel-feat include image
figure table csv-table list-table flat-table math productionlist doctest testcode testoutput testsetup
testcleanup raw graphviz index only ifconfig c:namespace c:namespace-push c:namespace-pop tabularcolumns
cssclass rst-class parsed-literal audit-event-table opcode program-output kernel-include maxdepth
""".split())

_UNDERLINE = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")
_TABLE = re.compile(r"^\s*(\+[-=+]+\+?|\|.*\||[=\s]{3,}=)\s*$")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:.-]+)::")
_COMMENT = re.compile(r"^(\s*)\.\.(\s|$)")
_BULLET = re.compile(r"^\s*(?:[-*+•]|#\.|\d+[.)]|\(?[a-z]\))\s+")
_ROLE = re.compile(r":[\w:.+-]+:`(~|!)?([^`<]*?)\s*(?:<[^`>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^`>]*>)?`__?")
_LITERAL = re.compile(r"``(.+?)``")
_EMPH = re.compile(r"\*\*?([^*\s][^*]*?)\*\*?")
_SUBST = re.compile(r"\|([\w -]+)\|")
_FOOTREF = re.compile(r"\s*\[(?:#\w*|\*|\d+)\]_")
_DEFAULT_ROLE = re.compile(r"`([^`]+)`")
_FIELD = re.compile(r"^:[\w -]+:(?:\s+|$)")
_SPACES = re.compile(r"\s+")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def inline_text(text: str) -> str:
    """Inline reST markup reduced to the text a reader sees."""
    text = _ROLE.sub(lambda m: m.group(2), text)
    text = _LINK.sub(lambda m: m.group(1), text)
    text = _LITERAL.sub(lambda m: m.group(1), text)
    text = _DEFAULT_ROLE.sub(lambda m: m.group(1).lstrip("~!"), text)
    text = _EMPH.sub(lambda m: m.group(1), text)
    text = _FOOTREF.sub("", text)
    text = _SUBST.sub(lambda m: m.group(1), text)
    text = text.replace("\\ ", "").replace("\\", "")
    return _SPACES.sub(" ", text).strip()


def _is_prose(paragraph: str, min_words: int) -> bool:
    words = paragraph.split()
    if len(words) < min_words:
        return False
    letters = sum(c.isalpha() for c in paragraph)
    return letters >= 0.6 * len(paragraph.replace(" ", "")) and not paragraph.startswith((">>>", "$ ", "# "))


def rst_to_paragraphs(source: str, min_words: int = 6) -> list[str]:
    """The prose paragraphs of a reStructuredText document, each one line of plain text."""
    lines = source.expandtabs(8).splitlines()
    out, para = [], []
    skip_below = None  # drop lines indented deeper than this (a code body or literal block)
    literal_next = False

    def close():
        if para:
            text = inline_text(" ".join(para))
            if text.endswith("::"):
                text = text[:-1]
            if _is_prose(text, min_words):
                out.append(text)
            para.clear()

    for line in lines:
        stripped = line.strip()
        if skip_below is not None:
            if not stripped or _indent(line) > skip_below:
                continue
            skip_below = None
        if not stripped:
            close()
            if literal_next is not False:  # the block after "::" starts at the next indented line
                skip_below, literal_next = literal_next, False
            continue
        m = _DIRECTIVE.match(line)
        if m:
            close()
            if m.group(2).lower() in CODE_DIRECTIVES:
                skip_below = _indent(line)
            continue
        m = _COMMENT.match(line)
        if m:  # a comment, target or footnote: its indented continuation goes too
            close()
            skip_below = _indent(line)
            continue
        if _UNDERLINE.match(stripped) or _TABLE.match(line) or stripped.startswith((">>>", "... ")):
            close()
            continue
        if _FIELD.match(stripped):  # a field list entry: keep its text
            stripped = _FIELD.sub("", stripped)
        if _BULLET.match(line):
            close()
            stripped = _BULLET.sub("", line).strip()
        para.append(stripped)
        if stripped.endswith("::"):
            close()
            literal_next = _indent(line)
    close()
    return out
