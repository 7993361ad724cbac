"""Names from a model file are hostile input: the one place that makes them safe to show.

A site or node name comes from the model (a module path, an ONNX node name) and can hold
anything: ESC sequences that repaint or retitle a terminal, Rich markup (`[/bold]`), a
newline that forges a table row, `=HYPERLINK(...)` that a spreadsheet runs as a formula,
`<script>` for HTML. Every renderer passes such text through one of these functions:

- `visible(text)`: control characters (C0, DEL, C1, and the Unicode bidi / line-separator
  marks that reorder or break a line) become visible escapes like `\\x1b`; for any plain text.
- `rich_text(text)`: `visible` as a Rich `Text`, which Rich never parses as markup.
- `csv_cell(text)`: `visible`, and a leading `=`, `+`, `-`, `@` (or tab / CR) quoted with `'`
  so that a spreadsheet shows the text instead of evaluating it (OWASP's CSV injection rule).
- `html_text(text)`: `visible`, then HTML-escaped (quotes included), for element text and
  attribute values.
"""

from __future__ import annotations

import html
import re

from rich.text import Text

# C0 controls, DEL, C1 controls; bidi embeddings/overrides/isolates; line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: object) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\n`-> `\\x0a`)."""
    return _CONTROL.sub(_escape, str(text))


def rich_text(text: object, style: str = "") -> Text:
    """A Rich Text of `visible(text)`: markup in it is shown, never interpreted."""
    return Text(visible(text), style=style)


def csv_cell(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: no formula, no control character."""
    if not isinstance(value, str):
        return value
    # the check is on the raw value: a leading tab or CR is itself a formula trigger in some spreadsheets
    quoted = "'" + value if value.startswith(_FORMULA_START) else value
    return visible(quoted)


def html_text(text: object) -> str:
    """Text for HTML element content or a quoted attribute value."""
    return html.escape(visible(text), quote=True)


# what can start markup in running text: code, emphasis, links and images, HTML, tables, entities
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<|~&])")


def md_text(text: object) -> str:
    """Running Markdown text (a list item, a note): `visible`, and every character that could start
    markup, a link or HTML backslash-escaped (the line's own start is ours: `- `, `> `)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", visible(text))


def md_code(text: object) -> str:
    """`text` as an inline code span that is safe in a table cell: no line break, pipes escaped,
    a fence longer than any run of backticks inside."""
    s = visible(text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""
    return f"{fence}{pad}{s}{pad}{fence}"
