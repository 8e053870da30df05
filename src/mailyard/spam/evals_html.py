"""HTML `eval:` functions beyond the basic set (SpamAssassin's HTMLEval family).

Written from the documented rule descriptions; each reads the facts html.render_html
collected in `ctx.msg.html` (mailyard.spam.html.HtmlInfo):

- html_test(test): also font_low_contrast (text colour within a few steps of the background),
  font_face_bad (a font face with characters no font name has).
- html_range(test, min, max): max_size (largest <font size>), length (visible text
  characters); true when min < value <= max ('inf' allowed).
- html_eval(test, 'OP N'): the same values against one comparison ('< 512').
- html_tag_balance(tag, 'OP N'): opened minus closed count of a tag.
- html_text_match(what, regex): title, comment (each <!...> block) or anchor (each link's
  text, an image inside it reading "<img>").
"""

from __future__ import annotations

import operator
import re

from mailyard.spam.evals import EVALS, _eval, _num

_basic_html_test = EVALS["html_test"]
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}


@_eval()
def html_test(ctx, test):
    info = ctx.msg.html
    if test == "font_low_contrast":
        return info.has_html and info.low_contrast
    if test == "font_face_bad":
        return info.has_html and info.font_face_bad
    return _basic_html_test(ctx, test)


def _value(ctx, test: str) -> float | None:
    info = ctx.msg.html
    if not info.has_html:
        return None
    if test == "max_size":
        return float(info.max_font_size) if info.max_font_size else None
    if test == "length":                  # HTML.pm's length: the markup's, not the words'
        return float(info.html_chars)
    return None


def _bound(text, default: float) -> float:
    text = str(text).strip()
    if text in ("inf", "+inf"):
        return float("inf")
    if text == "-inf":
        return float("-inf")
    return _num(text, default)


@_eval()
def html_range(ctx, test, low, high):
    value = _value(ctx, str(test))
    return value is not None and _bound(low, 0.0) < value <= _bound(high, float("inf"))


def _compare(value: float, expr: str) -> bool:
    m = re.fullmatch(r"\s*(<=|>=|==|!=|<|>)\s*(-?[\d.]+)\s*", str(expr))
    return bool(m) and _OPS[m.group(1)](value, float(m.group(2)))


@_eval()
def html_eval(ctx, test, expr):
    value = _value(ctx, str(test))
    return value is not None and _compare(value, expr)


@_eval()
def html_tag_balance(ctx, tag, expr):
    info = ctx.msg.html
    tag = str(tag).lower()
    if not info.has_html or tag not in info.balance:
        return False
    return _compare(info.balance[tag], expr)


@_eval()
def html_text_match(ctx, what, regex_text):
    info = ctx.msg.html
    if not info.has_html:
        return False
    texts = {"title": [info.title], "comment": info.comments, "anchor": info.anchors}.get(
        str(what), [])
    try:
        pattern = re.compile(str(regex_text), re.DOTALL)
    except re.error:
        return False
    return any(pattern.search(t[:5000]) for t in texts if t)
