"""Delivered text as inert text: the one rule every surface applies before showing it.

A delivery's folder, file and column names, manifest fields and cell values are data. Wherever they
are shown (console, Prefect logs, error messages, audit reasons, report, exports) they must not start
a new line (a forged log line), drive a terminal (ANSI escapes), reorder what is around them (bidi
controls) or be taken as markup. This module makes text one printable line; each surface then adds
its own escaping on top (HTML by Jinja's autoescape, Rich markup by `console_text`).
"""

from __future__ import annotations


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def inert(text: object) -> str:
    """`text` as one printable line: every character Python does not call printable (line breaks,
    tabs, NUL and other controls, bidi and zero-width formatting, lone surrogates of undecodable
    bytes) is shown as its escape, e.g. a newline as \\x0a."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def console_text(text: object) -> str:
    """`text` for a Rich console that interprets markup: inert, and its `[` escaped so that
    `[/x]` or `[link=...]` is printed, not interpreted."""
    from rich.markup import escape

    return escape(inert(text))
