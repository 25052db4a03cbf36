"""Words with scores (rnnapps.highlight): plain, terminal colours, an HTML page and a PNG."""

from rnnapps import highlight

TOKENS, SCORES = ["a", "<great>", "film"], [0.01, 0.8, -0.3]


def test_plain_and_ansi():
    assert highlight.plain(TOKENS, SCORES) == "a(+0.01) <great>(+0.80) film(-0.30)"
    coloured = highlight.ansi(TOKENS, SCORES)
    # The strongest word gets the strongest green, a negative one a red background.
    assert "\x1b[48;2;100;255;100m\x1b[38;2;0;0;0m<great>" in coloured and "\x1b[48;2;255;" in coloured
    assert coloured.count("\x1b[0m") == 3


def test_html_page_escapes_words():
    page = highlight.html_page([("a <great> film", "positive", 0.9, TOKENS, SCORES)], title="Why")
    assert "&lt;great&gt;" in page and "<great>" not in page and 'title="+0.8000"' in page


def test_picture_writes_a_png_that_grows_with_the_text(tmp_path):
    short = highlight.picture([("positive", 0.9, TOKENS, SCORES)], tmp_path / "short.png", title="Why")
    long = highlight.picture([("positive", 0.9, TOKENS * 40, SCORES * 40)], tmp_path / "long.png")
    assert short.read_bytes()[:4] == b"\x89PNG"
    from matplotlib.image import imread

    assert imread(long).shape[0] > imread(short).shape[0]
