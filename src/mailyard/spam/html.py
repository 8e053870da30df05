"""Render HTML mail to text in linear time, collecting what the HTML rules ask about.

A single forward scan with one compiled tokenizer regex (comments, declarations, tags, text):
no DOM, no backtracking over the document, so pathological HTML (unclosed comments, a million
`<`, deep nesting) costs one pass over capped input. `<script>`, `<style>` and `<head>` text
is dropped; block tags become line breaks; entities are decoded. Links (`href`, `src`,
`action`), image counts and areas, and the set of tags seen land in `HtmlInfo`.
"""

from __future__ import annotations

import html as html_mod
import re
from dataclasses import dataclass, field

MAX_HTML = 512 * 1024

_TOKEN = re.compile(r"<!--.*?(?:-->|\Z)|<![^>]*>?|<\?[^>]*>?|<(/?)([a-zA-Z][a-zA-Z0-9:-]{0,30})"
                    r"((?:[^<>\"']|\"[^\"]{0,1000}\"|'[^']{0,1000}'){0,2000})>|<", re.DOTALL)
_ATTR = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*(?:=\s*("[^"]*"|'[^']*'|[^\s"'>]+))?""")
_BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "hr",
          "blockquote", "pre", "ul", "ol", "dl", "dt", "dd", "title", "center", "form", "td"}
_HIDDEN = {"script", "style", "head", "title", "object", "applet", "noscript"}
_PARA = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "blockquote"}


@dataclass
class HtmlInfo:
    """Facts about the HTML parts of a message, for the html evals and the Bayes tokenizer."""

    links: list[str] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)
    images: int = 0
    image_area: int = 0
    text_chars: int = 0
    html_chars: int = 0
    title: str = ""
    has_html: bool = False
    unbalanced: int = 0
    iframe_src: bool = False
    font_colors: list[str] = field(default_factory=list)


def render_html(text: str, info: HtmlInfo) -> str:
    """Visible text of `text` (HTML), updating `info`."""
    text = text[:MAX_HTML]
    info.has_html = True
    info.html_chars += len(text)
    out: list[str] = []
    hidden = 0
    pos = 0
    title_mode = False
    depth: dict[str, int] = {}
    for m in _TOKEN.finditer(text):
        if m.start() > pos and not hidden:
            out.append(text[pos:m.start()])
        elif m.start() > pos and title_mode:
            info.title += text[pos:m.start()]
        pos = m.end()
        name = m.group(2)
        if name is None:
            if m.group(0) == "<" and not hidden:
                out.append("<")
            continue
        name = name.lower()
        closing = bool(m.group(1))
        info.tags[name] = info.tags.get(name, 0) + 1
        if closing:
            depth[name] = depth.get(name, 0) - 1
            if name in _HIDDEN and hidden:
                hidden -= 1
                title_mode = False
            if name in _BLOCK:
                out.append("\n\n" if name in _PARA else "\n")
            continue
        depth[name] = depth.get(name, 0) + 1
        attrs = m.group(3) or ""
        if name in _HIDDEN and not attrs.rstrip().endswith("/"):
            hidden += 1
            title_mode = name == "title"
        if name in _BLOCK:
            out.append("\n\n" if name in _PARA else "\n")
        if attrs:
            _attributes(name, attrs, info)
    if pos < len(text) and not hidden:
        out.append(text[pos:])
    info.unbalanced += sum(abs(v) for k, v in depth.items() if k in ("div", "table", "font", "a"))
    rendered = _unescape("".join(out))
    rendered = re.sub(r"[ \t\r\f\v\xa0]+", " ", rendered)
    rendered = re.sub(r" ?\n ?", "\n", rendered)
    info.text_chars += len(rendered.strip())
    return rendered.strip()


_HUGE_ENTITY = re.compile(r"&#(?:[0-9]{8,}|[xX][0-9a-fA-F]{7,});?")


def _unescape(text: str) -> str:
    """html.unescape, with absurd numeric references (&#999…9;) made harmless first."""
    return html_mod.unescape(_HUGE_ENTITY.sub("\ufffd", text))


def _attributes(tag: str, attrs: str, info: HtmlInfo) -> None:
    values = {}
    for am in _ATTR.finditer(attrs):
        val = am.group(2) or ""
        if val[:1] in ("'", '"'):
            val = val[1:-1]
        values[am.group(1).lower()] = _unescape(val.strip())
    for key in ("href", "src", "action", "background"):
        link = values.get(key)
        if link and len(info.links) < 500 and not link.startswith(("#", "cid:", "data:")):
            info.links.append(link)
    if tag == "img":
        info.images += 1
        try:
            w = int(re.sub(r"\D", "", values.get("width", "")) or 0)
            h = int(re.sub(r"\D", "", values.get("height", "")) or 0)
            info.image_area += min(w * h, 10_000_000)
        except ValueError:
            pass
    if tag == "iframe" and values.get("src"):
        info.iframe_src = True
    if tag == "font" and values.get("color"):
        info.font_colors.append(values["color"].lower())
