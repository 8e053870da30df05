"""HTML evals (mailyard.spam.evals_html): each with a hit and a near miss."""

from __future__ import annotations

import pytest

from mailyard.spam import SpamEngine
from mailyard.spam.html import HtmlInfo, parse_color, render_html

RULES = """
body LOW_CONTRAST  eval:html_test('font_low_contrast')
body FACE_BAD      eval:html_test('font_face_bad')
body SIZE_LARGE    eval:html_range('max_size', '5', '6')
body SIZE_HUGE     eval:html_range('max_size', '6', 'inf')
body SHORT         eval:html_eval('length', '< 40')
body LEN_0_1024    eval:html_range('length', '0', '1024')
body BAL_BODY      eval:html_tag_balance('body', '!= 0')
body LINK_IMAGE    eval:html_text_match('anchor', '<img>')
body COMMENT       eval:html_text_match('comment', '<!.*?>')
body LONG_TITLE    eval:html_text_match('title', '.{20}')
"""
NAMES = {"LOW_CONTRAST", "FACE_BAD", "SIZE_LARGE", "SIZE_HUGE", "SHORT", "LEN_0_1024",
         "BAL_BODY", "LINK_IMAGE", "COMMENT", "LONG_TITLE"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("rules")
    (d / "r.cf").write_text(RULES)
    return SpamEngine(rules_dirs=[d], builtin_rules=False)


def html(body: str) -> bytes:
    return ("From: a@example.org\r\nTo: b@example.test\r\nSubject: s\r\n"
            "Content-Type: text/html; charset=utf-8\r\n\r\n" + body + "\r\n").encode()


def hits(engine, body: str) -> set[str]:
    return set(engine.scan(html(body)).rule_names) & NAMES


PLAIN = "<html><body><p>" + "A perfectly ordinary newsletter paragraph. " * 3 + \
    "</p></body></html>"


def test_plain_html_hits_only_the_length_band(engine):
    assert hits(engine, PLAIN) == {"LEN_0_1024"}


def test_low_contrast(engine):
    assert "LOW_CONTRAST" in hits(engine, '<body><font color="#fafafa">buy now</font></body>')
    assert "LOW_CONTRAST" in hits(engine, '<body><p style="color: white">x</p></body>')
    assert "LOW_CONTRAST" not in hits(engine, '<body><font color="#333333">hello</font></body>')
    # a CSS background counts, and default black text on it is judged too
    assert "LOW_CONTRAST" not in hits(engine, '<div style="background-color: black">'
                                              '<font color="white">hello</font></div>')
    assert "LOW_CONTRAST" in hits(engine, '<div style="background: black url(x.png)">'
                                          "hello</div>")
    assert "LOW_CONTRAST" in hits(engine, '<body text="#ffffff">hello</body>')


def test_low_contrast_bgcolor_attribute_is_not_a_background(engine):
    """As spamassassin -t judges these (checked with SpamAssassin 4.0.1): HTML.pm converts a
    bgcolor= attribute and never stores it, so white text on a bgcolor="black" page is white
    on white, and a font's own style= is not read."""
    assert "LOW_CONTRAST" in hits(engine, '<body bgcolor="black"><font color="white">'
                                          "hello</font></body>")
    assert "LOW_CONTRAST" not in hits(engine, '<table><tr><td bgcolor="#6699cc">'
                                              '<font color="#6699cc">title</font></td>'
                                              "</tr></table>")
    assert "LOW_CONTRAST" not in hits(engine, '<body><font style="color: white">hello</font>'
                                              "</body>")


def test_low_contrast_needs_visible_text_in_that_colour(engine):
    # the colour alone is no hit: only text rendered in it (as SpamAssassin judges it)
    assert "LOW_CONTRAST" not in hits(engine, '<body><font color="#ffffff"><img src="x.png">'
                                              "</font> readable text</body>")
    assert "LOW_CONTRAST" not in hits(engine, '<body><font color="white"> &nbsp; </font>'
                                              "readable</body>")
    assert "LOW_CONTRAST" in hits(engine, '<body><font color="white"><b>hidden</b></font>'
                                          "</body>")


def test_low_contrast_background_ends_with_its_element(engine):
    # a coloured cell's background does not reach text in a later cell
    assert "LOW_CONTRAST" not in hits(engine, '<table><tr><td style="background-color: #6699cc">'
                                              '</td><td><font color="#6699cc">title</font></td>'
                                              "</tr></table>")
    assert "LOW_CONTRAST" in hits(engine, '<table><tr><td style="background-color: #6699cc">'
                                          '<font color="#6699cc">title</font></td>'
                                          "</tr></table>")


def test_low_contrast_threshold_weights_brightness(engine):
    # light grey on white: #f2f2f2 is under the threshold, #eeeeee readable enough
    assert "LOW_CONTRAST" in hits(engine, '<body><font color="#f2f2f2">faint</font></body>')
    assert "LOW_CONTRAST" not in hits(engine, '<body><font color="#eeeeee">faint</font></body>')


def test_font_face_and_size(engine):
    assert "FACE_BAD" in hits(engine, '<body><font face="Arial;x{}">x</font></body>')
    assert "FACE_BAD" not in hits(engine, '<body><font face="Arial, Helvetica">x</font></body>')
    assert "SIZE_LARGE" in hits(engine, '<body><font size="6">x</font></body>')
    assert "SIZE_HUGE" in hits(engine, '<body><font size="+4">x</font></body>')
    assert not {"SIZE_LARGE", "SIZE_HUGE"} & hits(engine, '<body><font size="5">x</font></body>')


def test_length_eval_and_balance(engine):
    assert "SHORT" in hits(engine, "<body>tiny</body>")
    assert "SHORT" not in hits(engine, PLAIN)
    assert "BAL_BODY" in hits(engine, "<body>unclosed " * 2)
    assert "BAL_BODY" not in hits(engine, "<body>closed</body>")


def test_anchor_comment_title(engine):
    assert "LINK_IMAGE" in hits(engine, '<body><a href="http://x.example/"><img src="y.gif">'
                                        "</a></body>")
    assert "LINK_IMAGE" not in hits(engine, '<body><a href="http://x.example/">text</a>'
                                            '<img src="y.gif"></body>')
    assert "COMMENT" in hits(engine, "<body><!-- hidden words --> hi</body>")
    assert "COMMENT" not in hits(engine, "<body>no comment &lt;!-- here</body>")
    assert "LONG_TITLE" in hits(engine, "<head><title>A really long title for a mail"
                                        "</title></head><body>x</body>")
    assert "LONG_TITLE" not in hits(engine, "<head><title>Short</title></head><body>x</body>")


def test_html_evals_do_not_hit_plain_text(engine):
    m = b"From: a@example.org\r\nSubject: s\r\n\r\n<!-- not html --> <font size=7>\r\n"
    assert not set(engine.scan(m).rule_names) & NAMES


@pytest.mark.parametrize("value,rgb", [("#FFF", (255, 255, 255)), ("00ff00", (0, 255, 0)),
                                       ("rgb(1, 2, 300)", (1, 2, 255)), ("White", (255,) * 3),
                                       ("bogus", None), ("#12345", None)])
def test_parse_color(value, rgb):
    assert parse_color(value) == rgb


def test_hostile_html_facts_stay_bounded():
    info = HtmlInfo()
    render_html("<a href=x>" * 5000 + "<!--" + "x" * 100000, info)
    assert len(info.anchors) <= 500 and len(info.comments) <= 200
