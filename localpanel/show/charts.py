"""Charts for the HTML card, as inline SVG: no scripts, no external assets, colours that read in light and dark.

- ``votes_chart``: votes per option over the rounds, one line per option, so a changed mind shows at a glance;
- ``persuasion_chart``: participants as nodes, an arrow per persuasion from who persuaded to whom, with its round;
- ``paths_chart``: each seat's probability for the option it ended on, round by round, one line per seat;
- ``probability_bar``: one ballot's option probabilities as a small stacked bar.

Text takes its colour from the page (``currentColor``); the option colours are mid-tone, legible on both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

from localpanel.panel.tally import TurningPoint
from localpanel.runs.transcript import Transcript

# Tableau 10: distinct, colour-blind aware, mid-tone.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]


def option_colors(options: list[str]) -> dict[str, str]:
    return {o: PALETTE[i % len(PALETTE)] for i, o in enumerate(options)}


def svg(width: int, height: int, cls: str, label: str, body: list[str]) -> str:
    return (
        f'<svg class="chart {cls}" role="img" aria-label="{escape(label)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" font-family="system-ui,sans-serif" '
        f'font-size="12" fill="currentColor">' + "".join(body) + "</svg>"
    )


@dataclass
class RoundsFrame:
    """A chart over the rounds: the plot area, the value grid with its labels, the round axis, and series labels
    at the right end nudged apart so that equal values do not overlap. ``top_value`` is the value at the top."""

    rounds: list[int]
    top_value: float
    ticks: list[tuple[float, str]]  # grid lines: (value, label)
    width: int = 560
    height: int = 220
    left: int = 40
    right: int = 150
    top: int = 16
    bottom: int = 34
    labels: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def plot_w(self) -> float:
        return self.width - self.left - self.right

    def x(self, i: int) -> float:
        if len(self.rounds) < 2:
            return self.left + self.plot_w / 2
        return self.left + i * self.plot_w / (len(self.rounds) - 1)

    def y(self, v: float) -> float:
        return self.top + (self.height - self.top - self.bottom) * (1 - v / self.top_value)

    def axes(self) -> list[str]:
        body = []
        for v, label in self.ticks:
            body.append(f'<line x1="{self.left}" x2="{self.left + self.plot_w}" y1="{self.y(v):.1f}" y2="{self.y(v):.1f}" '
                        'stroke="currentColor" stroke-opacity="0.15"/>')
            body.append(f'<text x="{self.left - 7}" y="{self.y(v) + 4:.1f}" text-anchor="end" fill-opacity="0.7">{label}</text>')
        for i, number in enumerate(self.rounds):
            body.append(f'<text x="{self.x(i):.1f}" y="{self.height - 12}" text-anchor="middle" fill-opacity="0.7">'
                        f"Round {number}</text>")
        return body

    def label(self, at_y: float, text: str, color: str, most: int) -> None:
        self.labels.append((at_y, text if len(text) <= most else text[: most - 1] + "…", color))

    def render(self, cls: str, title: str, body: list[str]) -> str:
        placed: list[float] = []
        for ly, text, color in sorted(self.labels):
            while any(abs(ly - p) < 14 for p in placed):
                ly += 14
            placed.append(ly)
            body.append(f'<text x="{self.left + self.plot_w + 11}" y="{ly + 4:.1f}" fill="{color}" font-weight="600">'
                        f"{escape(text)}</text>")
        return svg(self.width, self.height, cls, title, self.axes() + body)


def votes_chart(t: Transcript) -> str:
    """Votes for each option in each round: a line per option, its count at every point."""
    colors = option_colors(t.options)
    rounds = [r.number for r in t.rounds]
    n = max(1, len(t.participants))
    frame = RoundsFrame(rounds, n, [(v, str(v)) for v in range(n + 1)])
    x, y = frame.x, frame.y
    body = []
    for option in t.options:
        counts = [r.tally.counts[option] for r in t.rounds]
        if not any(counts):
            continue
        color = colors[option]
        points = " ".join(f"{x(i):.1f},{y(c):.1f}" for i, c in enumerate(counts))
        body.append(f'<polyline class="series" points="{points}" fill="none" stroke="{color}" stroke-width="3" stroke-linejoin="round"/>')
        for i, c in enumerate(counts):
            body.append(
                f'<circle cx="{x(i):.1f}" cy="{y(c):.1f}" r="4.5" fill="{color}">'
                f"<title>{escape(option)}: {c} vote{'s' if c != 1 else ''} in round {rounds[i]}</title></circle>"
            )
        frame.label(y(counts[-1]), option, color, 20)
    return frame.render("votes", "Votes for each option, round by round", body)


def persuasion_chart(t: Transcript) -> str:
    """Participants on a circle; each persuasion an arrow from the persuader to the persuaded, labelled with its round."""
    names = [p.name for p in t.participants]
    width, height = 560, 300
    cx, cy, radius = width / 2, height / 2, min(width, height) / 2 - 48
    pos = {}
    for i, name in enumerate(names):
        angle = -math.pi / 2 + 2 * math.pi * i / max(1, len(names))
        pos[name] = (cx + radius * math.cos(angle), cy + radius * math.sin(angle))
    moves: list[TurningPoint] = [p for p in t.turning_points if p.attributed_to and p.attributed_to in pos]
    final = {x.participant: x.vote for x in t.rounds[-1].turns if x.valid} if t.rounds else {}
    colors = option_colors(t.options)
    body = [
        '<defs><marker id="lp-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="currentColor"/></marker></defs>'
    ]
    seen: dict[tuple[str, str], int] = {}
    node_r = 20
    for p in moves:
        (x1, y1), (x2, y2) = pos[p.attributed_to], pos[p.participant]
        k = seen.get((p.attributed_to, p.participant), 0)
        seen[(p.attributed_to, p.participant)] = k + 1
        dx, dy = x2 - x1, y2 - y1
        dist = math.hypot(dx, dy) or 1.0
        ux, uy = dx / dist, dy / dist
        bend = 24 + 18 * k  # several arrows between the same two: each bends further out
        mx, my = (x1 + x2) / 2 - uy * bend, (y1 + y2) / 2 + ux * bend
        sx, sy = x1 + ux * node_r, y1 + uy * node_r
        ex, ey = x2 - ux * (node_r + 3), y2 - uy * (node_r + 3)
        label = f"R{p.round}"
        body.append(
            f'<path class="arrow" d="M{sx:.1f},{sy:.1f} Q{mx:.1f},{my:.1f} {ex:.1f},{ey:.1f}" fill="none" '
            f'stroke="currentColor" stroke-opacity="0.75" stroke-width="1.8" marker-end="url(#lp-arrow)">'
            f"<title>Round {p.round}: {escape(p.attributed_to)} moved {escape(p.participant)} from "
            f"{escape(p.from_vote)} to {escape(p.to_vote)}</title></path>"
        )
        lx, ly = (sx + 2 * mx + ex) / 4, (sy + 2 * my + ey) / 4  # the curve's midpoint
        body.append(f'<text class="arrow-label" x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="middle" font-weight="600">{label}</text>')
    for name in names:
        x0, y0 = pos[name]
        vote = final.get(name)
        fill = colors.get(vote, "#888888") if vote else "#888888"
        body.append(
            f'<circle class="node" cx="{x0:.1f}" cy="{y0:.1f}" r="{node_r}" fill="{fill}" fill-opacity="0.85">'
            f"<title>{escape(name)}: {escape(vote or 'abstained')} in the last round</title></circle>"
        )
        below = y0 >= cy
        ty = y0 + (node_r + 15 if below else -node_r - 7)
        body.append(f'<text x="{x0:.1f}" y="{ty:.1f}" text-anchor="middle">{escape(name)}</text>')
    if not moves:
        body.append(f'<text x="{cx:.1f}" y="{cy + 4:.1f}" text-anchor="middle" fill-opacity="0.7">Nobody was persuaded</text>')
    return svg(width, height, "persuasion", "Who persuaded whom", body)


def paths_chart(t: Transcript) -> str:
    """Each seat's probability for the option it ended on, one line per seat over the rounds: a mind that moved
    without flipping shows as a slope, a flip as a line that crosses 0.5 (for two options)."""
    rounds = [r.number for r in t.rounds]
    frame = RoundsFrame(rounds, 1.0, [(v, f"{v:.2f}") for v in (0, 0.25, 0.5, 0.75, 1.0)], left=44, right=190, top=14)
    body = []
    names = [p.name for p in t.participants]
    for name, path in t.probability_paths.items():
        color = PALETTE[names.index(name) % len(PALETTE)] if name in names else "#888888"
        pts = [(frame.x(i), frame.y(p), p, rounds[i]) for i, p in enumerate(path.probabilities) if p is not None and i < len(rounds)]
        if not pts:
            continue
        body.append(f'<polyline class="path" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in pts)}" fill="none" '
                    f'stroke="{color}" stroke-width="2.5" stroke-linejoin="round"/>')
        for a, b, p, number in pts:
            body.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="4" fill="{color}"><title>{escape(name)}: '
                        f"{escape(path.option)} {p:.2f} in round {number}</title></circle>")
        frame.label(pts[-1][1], f"{name} · {path.option}", color, 28)
    return frame.render("paths", "Each seat's probability for the option it ended on, round by round", body)


def probability_bar(confidence: dict[str, float], options: list[str], width: int = 220) -> str:
    """One ballot's probability of each option, as a stacked bar in the options' colours."""
    colors = option_colors(options)
    body, x = [], 0.0
    for option in options:
        p = confidence.get(option, 0.0)
        w = p * width
        if w <= 0:
            continue
        body.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="10" fill="{colors[option]}">'
            f"<title>{escape(option)}: {p:.2f}</title></rect>"
        )
        x += w
    return (
        f'<svg class="pbar" role="img" aria-label="option probabilities" viewBox="0 0 {width} 10" width="{width}" '
        f'height="10">' + "".join(body) + "</svg>"
    )
