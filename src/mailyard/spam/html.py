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
# elements whose `style` HTML.pm reads (%ok_attributes)
_STYLED = {"table", "tr", "td", "th", "span", "p", "div", "a"}
_PARA = {"p", "div", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "blockquote"}


@dataclass
class HtmlInfo:
    """Facts about the HTML parts of a message, for the html evals and the Bayes tokenizer."""

    links: list[str] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)
    images: int = 0
    image_area: int = 0
    html_chars: int = 0          # characters of HTML source (SpamAssassin's `length`)
    non_space_chars: int = 0     # rendered characters that are not white space (`non_space_len`)
    title: str = ""
    has_html: bool = False
    unbalanced: int = 0
    iframe_src: bool = False
    font_colors: list[str] = field(default_factory=list)
    # for the html_* evals: largest <font size>, low-contrast or badly named fonts,
    # open-minus-close count per tag, comments, anchor texts (an image inside reads "<img>")
    max_font_size: int = 0
    low_contrast: bool = False
    font_face_bad: bool = False
    balance: dict[str, int] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)
    anchors: list[str] = field(default_factory=list)


class _Colours:
    """The colours in force while one HTML text renders, as SpamAssassin's HTML.pm keeps them:
    open elements that set a background or a text colour (innermost last); black text on
    white when none. Only CSS sets a background (`style` on table, tr, td, th, span, p, div,
    a): HTML.pm converts a `bgcolor=` attribute and then never stores it, so white text on a
    `bgcolor="black"` page reads as white on white there — and here, since the stock scores
    were made with that behaviour. Text colour: `<font color>`, `<body text>`, CSS `color`."""

    def __init__(self) -> None:
        self.backgrounds: list[tuple[str, tuple[int, int, int]]] = []
        self.texts: list[tuple[str, tuple[int, int, int]]] = []

    @property
    def faint(self) -> bool:
        """Text rendered now would be hard to tell from its background."""
        fg = self.texts[-1][1] if self.texts else (0, 0, 0)
        bg = self.backgrounds[-1][1] if self.backgrounds else (255, 255, 255)
        return _similar(fg, bg)

    def close(self, tag: str) -> None:
        for stack in (self.texts, self.backgrounds):   # the innermost open one
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][0] == tag:
                    del stack[i]
                    break


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
    in_anchor = False
    colours = _Colours()
    for m in _TOKEN.finditer(text):
        if m.start() > pos and not hidden:
            out.append(text[pos:m.start()])
            if colours.faint and not info.low_contrast and \
                    not _BLANK.fullmatch(text, pos, m.start()):
                info.low_contrast = True     # visible text in a colour close to its background
            if in_anchor and len(info.anchors[-1]) < 2000:
                info.anchors[-1] += text[pos:m.start()]
        elif m.start() > pos and title_mode:
            info.title += text[pos:m.start()]
        pos = m.end()
        name = m.group(2)
        if name is None:
            token = m.group(0)
            if token == "<" and not hidden:
                out.append("<")
            elif token.startswith("<!") and len(info.comments) < 200:
                info.comments.append(token[:2000])
            continue
        name = name.lower()
        closing = bool(m.group(1))
        info.tags[name] = info.tags.get(name, 0) + 1
        info.balance[name] = info.balance.get(name, 0) + (-1 if closing else 1)
        if name == "a":
            in_anchor = not closing and len(info.anchors) < 500
            if in_anchor:
                info.anchors.append("")
        elif name == "img" and in_anchor and not closing:
            info.anchors[-1] += "<img>"
        if closing:
            depth[name] = depth.get(name, 0) - 1
            colours.close(name)
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
            _attributes(name, attrs, info, colours)
    if pos < len(text) and not hidden:
        out.append(text[pos:])
        if colours.faint and not _BLANK.fullmatch(text, pos):
            info.low_contrast = True
    info.unbalanced += sum(abs(v) for k, v in depth.items() if k in ("div", "table", "font", "a"))
    rendered = _unescape("".join(out))
    rendered = re.sub(r"[ \t\r\f\v\xa0]+", " ", rendered)
    rendered = re.sub(r" ?\n ?", "\n", rendered)
    info.non_space_chars += len("".join(rendered.split()))
    return rendered.strip()


_BLANK = re.compile(r"(?:\s|&nbsp;|&#160;|\xa0)*", re.IGNORECASE)
_HUGE_ENTITY = re.compile(r"&#(?:[0-9]{8,}|[xX][0-9a-fA-F]{7,});?")


def _unescape(text: str) -> str:
    """html.unescape, with absurd numeric references (&#999…9;) made harmless first."""
    return html_mod.unescape(_HUGE_ENTITY.sub("\ufffd", text))


def _attributes(tag: str, attrs: str, info: HtmlInfo, colours: _Colours) -> None:
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
    style = values.get("style", "").lower() if tag in _STYLED else ""
    background = _style_value(style, "background-color") or _style_value(style, "background")
    if background:
        rgb = next((c for c in map(parse_color, background.split()) if c is not None), None)
        if rgb is not None:
            colours.backgrounds.append((tag, rgb))   # until this element closes
    color = values.get("color") if tag == "font" else values.get("text") if tag == "body" \
        else None
    if tag == "font" and color:
        info.font_colors.append(color.lower())
    color = _style_value(style, "color") or color
    if color:
        rgb = parse_color(color)
        if rgb is not None:
            colours.texts.append((tag, rgb))   # judged when visible text renders in it
    if tag == "font":
        size = values.get("size", "").strip()
        m = re.fullmatch(r"([+-]?)(\d{1,2})", size)
        if m:
            n = int(m.group(2))
            n = 3 + n if m.group(1) == "+" else (3 - n if m.group(1) == "-" else n)
            info.max_font_size = max(info.max_font_size, n)
        face = values.get("face")
        if face is not None and not re.fullmatch(r"[\w \t,'\"-]*", face):
            info.font_face_bad = True


_COLOR_NAMES = {"white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0),
                "green": (0, 128, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
                "silver": (192, 192, 192), "gray": (128, 128, 128), "grey": (128, 128, 128),
                "navy": (0, 0, 128), "maroon": (128, 0, 0), "purple": (128, 0, 128),
                "fuchsia": (255, 0, 255), "lime": (0, 255, 0), "olive": (128, 128, 0),
                "teal": (0, 128, 128), "aqua": (0, 255, 255), "snow": (255, 250, 250),
                "ivory": (255, 255, 240), "whitesmoke": (245, 245, 245)}


def parse_color(value: str) -> tuple[int, int, int] | None:
    """(r, g, b) of an HTML colour: #rrggbb, #rgb, rrggbb, rgb(...) or a common name."""
    v = value.strip().lower().strip("'\"")
    if v in _COLOR_NAMES:
        return _COLOR_NAMES[v]
    m = re.fullmatch(r"#?([0-9a-f]{6})", v)
    if m:
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    m = re.fullmatch(r"#([0-9a-f]{3})", v)
    if m:
        return tuple(int(c * 2, 16) for c in m.group(1))  # type: ignore[return-value]
    m = re.fullmatch(r"rgb\(\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*\)", v)
    if m:
        return tuple(min(int(x), 255) for x in m.groups())  # type: ignore[return-value]
    return None


def _similar(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    """Text this close to its background is unreadable, as SpamAssassin judges it: the
    channel differences weighted by their share of brightness (0.2126 red, 0.7152 green,
    0.0722 blue) are less than 12 apart (#f2f2f2 on white is, #eeeeee is not)."""
    r, g, b = (x - y for x, y in zip(a, b))
    return ((0.2126 * r) ** 2 + (0.7152 * g) ** 2 + (0.0722 * b) ** 2) ** 0.5 < 12


def _style_value(style: str, prop: str) -> str:
    m = re.search(rf"(?:^|;)\s*{prop}\s*:\s*([^;]+)", style)
    return m.group(1).strip() if m else ""
