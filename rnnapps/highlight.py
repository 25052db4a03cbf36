"""Words shown with a score each: coloured in a terminal, ``word(+0.31)`` in a pipe, or an HTML page.

Used by ``rnnapps predict sentiment --explain`` to show which words drove a
review's verdict (integrated-gradients attributions): positive scores pushed
towards the positive label (green), negative ones towards the negative (red).
"""

from __future__ import annotations

import html
from collections.abc import Sequence


def _strength(score: float, scale: float) -> float:
    return min(abs(score) / scale, 1.0) if scale > 0 else 0.0


def _scale(scores: Sequence[float]) -> float:
    return max((abs(score) for score in scores), default=0.0)


def plain(tokens: Sequence[str], scores: Sequence[float]) -> str:
    """``word(+0.31) word(-0.02) ...``: readable in a file or a pipe."""
    return " ".join(f"{token}({score:+.2f})" for token, score in zip(tokens, scores, strict=True))


def ansi(tokens: Sequence[str], scores: Sequence[float]) -> str:
    """The words on a green (positive) or red (negative) background, as strong as the score (24-bit colour)."""
    scale, words = _scale(scores), []
    for token, score in zip(tokens, scores, strict=True):
        strength = _strength(score, scale)
        level = int(255 - 155 * strength)
        red, green, blue = (level, 255, level) if score >= 0 else (255, level, level)
        words.append(f"\x1b[48;2;{red};{green};{blue}m\x1b[38;2;0;0;0m{token}\x1b[0m")
    return " ".join(words)


def html_page(rows: Sequence[tuple[str, str, float, Sequence[str], Sequence[float]]], title: str) -> str:
    """A self-contained page: for each ``(text, label, probability, tokens, scores)`` the highlighted tokens."""
    sections = []
    for text, label, probability, tokens, scores in rows:
        scale = _scale(scores)
        spans = []
        for token, score in zip(tokens, scores, strict=True):
            colour = "0, 160, 60" if score >= 0 else "210, 30, 30"
            spans.append(
                f'<span title="{score:+.4f}" style="background: rgba({colour}, {0.85 * _strength(score, scale):.3f})">'
                f"{html.escape(token)}</span>"
            )
        sections.append(
            f"<section><h2>{html.escape(label)} ({probability:.3f})</h2>"
            f"<p class=\"tokens\">{' '.join(spans)}</p>"
            f"<p class=\"text\">{html.escape(text)}</p></section>"
        )
    return (
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;max-width:48em;margin:2em auto;line-height:1.9}"
        "span{padding:0.1em 0.15em;border-radius:0.2em}.text{color:#666;font-size:0.85em}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        "<p>Green words pushed the review towards <b>positive</b>, red ones towards <b>negative</b>; "
        "hover a word for its attribution (integrated gradients of the logit).</p>"
        + "".join(sections)
        + "</body></html>\n"
    )


def picture(rows: Sequence[tuple[str, float, Sequence[str], Sequence[float]]], path, title: str = "", width: float = 9.0):
    """A PNG of highlighted reviews, for docs and reports: for each ``(label, probability, tokens, scores)``.

    Words are laid out left to right and wrapped at ``width`` inches, each on a background as
    green (positive) or red (negative) as its score, scaled per review like :func:`ansi`.
    """
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    line_height, margin, font = 0.32, 0.2, 11
    figure = plt.figure(figsize=(width, 1.0))
    renderer = figure.canvas.get_renderer()
    placed, y = [], 0.0  # (x, y, text, colour, bold) in inches from the top left

    def advance(text, bold=False):
        probe = figure.text(0, 0, text, fontsize=font, weight="bold" if bold else "normal")
        extent = probe.get_window_extent(renderer=renderer)
        probe.remove()
        return extent.width / figure.dpi

    if title:
        placed.append((margin, y, title, None, True))
        y += 1.4 * line_height
    for label, probability, tokens, scores in rows:
        placed.append((margin, y, f"{label} ({probability:.3f})", None, True))
        y += line_height
        x, scale = margin, _scale(scores)
        for token, score in zip(tokens, scores, strict=True):
            word = advance(token)
            if x + word > width - margin and x > margin:
                x, y = margin, y + line_height
            strength = _strength(score, scale)
            colour = (0.0, 0.63, 0.24, 0.85 * strength) if score >= 0 else (0.82, 0.12, 0.12, 0.85 * strength)
            placed.append((x, y, token, colour, False))
            x += word + advance(" ")
        y += 1.5 * line_height
    height = y + margin
    figure.set_size_inches(width, height)
    for x, top, text, colour, bold in placed:
        figure.text(x / width, 1 - (top + margin + 0.2) / height, text, fontsize=font, weight="bold" if bold else "normal",
                    bbox=dict(facecolor=colour, edgecolor="none", pad=1.5) if colour else None)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def print_explanations(explain, batches, labels: Sequence[str], html_path=None, png_path=None,
                       title: str = "Why rnnapps judged these reviews so") -> None:
    """Print each text's verdict and its words with their attributions; optionally a page and a picture.

    Args:
        explain: an exported ``explain`` signature (``text -> {probability, tokens, attributions}``).
        batches: lists of texts, each at most one request's worth.
        labels: the (negative, positive) label names.
        html_path, png_path: also write the highlighted texts as an HTML page / a PNG.
    """
    import sys
    from pathlib import Path

    import click
    import tensorflow as tf

    show = ansi if sys.stdout.isatty() else plain
    rows = []
    for batch in batches:
        outputs = explain(text=tf.constant(batch, tf.string))
        for text, probability, tokens, scores in zip(batch, outputs["probability"].numpy(), outputs["tokens"].numpy(),
                                                     outputs["attributions"].numpy(), strict=True):
            real = [index for index, token in enumerate(tokens) if token]
            words, values = [tokens[index].decode() for index in real], [float(scores[index]) for index in real]
            label = labels[int(probability >= 0.5)]
            click.echo(f"{label}\t{probability:.4f}\t{show(words, values)}")
            rows.append((text, label, float(probability), words, values))
    if html_path:
        Path(html_path).write_text(html_page(rows, title), encoding="utf-8")
        click.echo(f"explanation page: {html_path}", err=True)
    if png_path:
        picture([row[1:] for row in rows], png_path, title=title)
        click.echo(f"explanation picture: {png_path}", err=True)
