"""How a local run (`rightsizer run FILE`) shows its results: a plain-text results table, a live progress board
for the load tests, and a self-contained HTML report with SVG charts.

Everything here is pure (text in, text out) except ProgressBoard.draw() and write_html(), so that the command
line decides where output goes and the tests need no terminal. The HTML report carries no JavaScript and loads
nothing from anywhere: a report is often opened from a CI artifact or an air-gapped machine.
"""

from __future__ import annotations

import dataclasses
import html
import math
import os
import shutil
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from rightsizer.backends.local.plan import reported_percentile
from rightsizer.model import Recommendation, StepFailure
from rightsizer.loadtest.load_generator import LoadProgress, LoadResult, TimelinePoint
from rightsizer.selection import (Selection, Verdict, cost_per_inference, describe_configuration,
                                  describe_environment, meets_sla)
from rightsizer.spec import LatencyThreshold

MISSING = "-"
WINNER_MARK = "*"

# -- the results table ------------------------------------------------------------------------------------------------

HEADERS = ("", "instance", "environment", "maxInvocations/min", "modelLatency ms", "CPU %", "memory %", "cost/h",
           "cost/inference", "meets SLA")
# Numbers read best right-aligned, so that their magnitudes line up.
_RIGHT_ALIGNED = frozenset({3, 4, 5, 6, 7, 8})
# Only these columns (environment, meets SLA) hold free text long enough to be worth wrapping when a width is
# imposed.
_WRAPPABLE = (2, 9)
# A wrapped column keeps at least its header and its longest word, up to this many characters: "OMP_NUM_THREADS=4"
# split in two reads worse than a table wider than the terminal.
_LONGEST_UNBROKEN_WORD = 24


@dataclasses.dataclass(frozen=True)
class _Row:
    cells: tuple[str, ...]
    is_winner: bool
    meets_sla: bool
    label: str  # the configuration as one phrase, for charts
    cost_per_inference: float | None


def _fixed(value: float | int | None, places: int) -> str:
    """Integers as published (the seed's 6 ms stays 6); measured floats to `places` decimals."""
    if value is None:
        return MISSING
    if isinstance(value, int):
        return str(value)
    return f"{value:.{places}f}"


def _price(value: float | int | None) -> str:
    """A price at its own precision: 0.922 and 0.23 as listed, not 0.9220 and 0.2300."""
    if value is None:
        return MISSING
    text = f"{float(value):.4f}"
    return text.rstrip("0").rstrip(".")


def _scientific(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2e}"


def _instance(recommendation: Recommendation) -> str:
    if recommendation.instance_type:
        return f"{recommendation.instance_type} x{recommendation.initial_instance_count or 1}"
    if recommendation.serverless:
        return f"serverless {recommendation.serverless.get('memorySizeInMB')} MB"
    return recommendation.recommendation_id


def _verdict_row(verdict: Verdict, winner: Recommendation | None) -> _Row:
    recommendation, metrics = verdict.recommendation, verdict.recommendation.metrics
    is_winner = winner is not None and recommendation is winner
    cost = cost_per_inference(metrics)
    cells = (
        WINNER_MARK if is_winner else "",
        _instance(recommendation),
        describe_environment(recommendation.environment) or MISSING,
        _noisy(_fixed(metrics.get("maxInvocations"), 0), recommendation, "maxInvocations"),
        _noisy(_fixed(metrics.get("modelLatency"), 1), recommendation, "modelLatency"),
        _fixed(metrics.get("cpuUtilization"), 1),
        _fixed(metrics.get("memoryUtilization"), 2),
        _price(metrics.get("costPerHour")),
        _noisy(_scientific(cost), recommendation, "costPerInference"),
        _sla_cell(verdict),
    )
    return _Row(cells, is_winner, verdict.meets_sla, describe_configuration(recommendation), cost)


def _noisy(cell: str, recommendation: Recommendation, metric: str) -> str:
    """`112435 ± 4 %` when the figure's noise is known (status rows' uncertainty)."""
    percent = recommendation.uncertainty.percent(metric) if recommendation.uncertainty else None
    return cell if percent is None or cell == MISSING else f"{cell} ± {percent:.2g} %"


def _sla_cell(verdict: Verdict) -> str:
    if not verdict.meets_sla:
        return f"no: {verdict.message}"
    # "meets the SLA; P95 latency 97 ms against 100 ms (within noise: ± 3 %)": the qualification, after "yes".
    _, _, qualification = verdict.message.partition("; ")
    return f"yes: {qualification}" if qualification else "yes"


def _failure_row(failure: StepFailure) -> _Row:
    environment = describe_environment(failure.environment)
    label = failure.instance_type or MISSING
    cells = ("", label, environment or MISSING, *([MISSING] * 6), f"no: not measured: {failure.failure_reason}")
    return _Row(cells, False, False, f"{label} ({environment})" if environment else label, None)


def _rows(selection: Selection, unmeasured: Sequence[StepFailure]) -> list[_Row]:
    return ([_verdict_row(verdict, selection.best) for verdict in selection.verdicts]
            + [_failure_row(failure) for failure in unmeasured])


def _column_widths(table: Sequence[Sequence[str]], width: int | None) -> list[int]:
    natural = [max(len(row[column]) for row in table) for column in range(len(HEADERS))]
    if width is None:
        return natural
    widths = list(natural)
    minimum = {column: max(len(HEADERS[column]),
                           *(min(len(word), _LONGEST_UNBROKEN_WORD) for row in table for word in row[column].split()))
               for column in _WRAPPABLE}
    separators = 2 * (len(widths) - 1)
    # Take the excess from the widest wrappable column first, so that short environments stay on one line.
    while sum(widths) + separators > width:
        shrinkable = [column for column in _WRAPPABLE if widths[column] > minimum[column]]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda c: widths[c])
        widths[widest] -= 1
    return widths


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _format_lines(cells: Sequence[str], widths: Sequence[int]) -> list[str]:
    wrapped = [_wrap(cell, width) for cell, width in zip(cells, widths)]
    height = max(len(lines) for lines in wrapped)
    lines = []
    for line_number in range(height):
        parts = []
        for column, (cell_lines, width) in enumerate(zip(wrapped, widths)):
            text = cell_lines[line_number] if line_number < len(cell_lines) else ""
            parts.append(text.rjust(width) if column in _RIGHT_ALIGNED else text.ljust(width))
        lines.append("  ".join(parts))
    return lines


def _conclusion(selection: Selection) -> str:
    if selection.best is None and meets_sla(selection):
        return f"No winner: {selection.reason}."  # the SLA is met; the objective could not rank (no price)
    if selection.best is None:
        return f"No configuration qualifies: {selection.reason}."
    return f"Winner ({WINNER_MARK}): {selection.reason}."


def results_table(selection: Selection, *, width: int | None = None, unmeasured: Sequence[StepFailure] = ()) -> str:
    """One row per configuration, best first (selection.verdicts' order), then a line naming the winner.

    `width` (e.g. the terminal's columns) wraps the environment and SLA columns to fit, where they can shrink
    that far. `unmeasured` lists configurations that produced no measurements (failed or skipped), after the
    measured ones, so that none of the experiment silently disappears from its summary.
    """
    rows = _rows(selection, unmeasured)
    table = [HEADERS, *(row.cells for row in rows)]
    widths = _column_widths(table, width)
    lines = [line for cells in table for line in _format_lines(cells, widths)]
    if not rows:
        lines.append("(no configurations)")
    return "\n".join([*lines, "", _conclusion(selection)]) + "\n"


# -- the progress board -----------------------------------------------------------------------------------------------

QUEUED, RUNNING, DONE, FAILED, SKIPPED = "queued", "running", "done", "failed", "skipped"
STATES = (QUEUED, RUNNING, DONE, FAILED, SKIPPED)
# The state names a reason rather than a measurement, so it reads as "failed: <reason>".
_STATES_WITH_REASON = frozenset({FAILED, SKIPPED})
_ELLIPSIS = "..."


def progress_detail(progress: LoadProgress) -> str:
    """The running state's detail: where the traffic pattern is and what the server does right now."""
    p95 = MISSING if progress.p95_ms is None else f"{progress.p95_ms:.1f}"
    detail = f"{progress.stage}, {progress.users} user{'' if progress.users == 1 else 's'}, {progress.rps:.0f} req/s, p95 {p95} ms"
    if progress.failures:
        detail += f", {progress.failures} of {progress.requests} requests failed"
    return detail


def result_detail(result: LoadResult) -> str:
    """The done state's detail: the load test's maxInvocations and the latency in that window."""
    if result.max_invocations_per_minute is None:
        return f"no window held the latency threshold ({result.detail})"
    p95 = MISSING if result.model_latency_p95_ms is None else f"{result.model_latency_p95_ms:.1f}"
    return f"{result.max_invocations_per_minute:.0f} invocations/min at p95 {p95} ms"


def _truncate(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= len(_ELLIPSIS):
        return text[:width]
    return text[:width - len(_ELLIPSIS)] + _ELLIPSIS


def _bar(fraction: float, width: int) -> str:
    filled = round(fraction * width)
    return "[" + "=" * filled + " " * (width - filled) + "]"


@dataclasses.dataclass
class _Entry:
    state: str = QUEUED
    fraction: float | None = None
    detail: str = ""


def _terminal_size(stream: IO[str]) -> os.terminal_size:
    try:
        return os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        # Not a terminal (or a stream without a descriptor): COLUMNS/LINES or 80x24.
        return shutil.get_terminal_size()


class ProgressBoard:
    """One line per configuration: queued, running (a bar over the traffic pattern's elapsed/total time and a
    detail such as progress_detail()'s), done, failed: reason, skipped: reason.

    On a terminal, draw() rewrites the block in place. Anywhere else (CI logs, pipes) it appends a line when a
    configuration changes state, and otherwise at most one line per configuration every `interval_s`, because a
    redraw per second per configuration would bury everything else in the log.

    update() and draw() may be called from the load generator's reader threads. Anything else written to the
    stream while the block is on a terminal would be overwritten by the next draw: pass it through note().
    """

    def __init__(self, labels: Sequence[str], stream: IO[str], *, interactive: bool | None = None,
                 interval_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 terminal_size: Callable[[], os.terminal_size] | None = None):
        self.labels = list(labels)
        self.stream = stream
        if interactive is None:
            interactive = bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"
        self.interactive = interactive
        self.interval_s = interval_s
        self.clock = clock
        self.terminal_size = terminal_size or (lambda: _terminal_size(stream))
        self._entries = [_Entry() for _ in self.labels]
        self._lock = threading.RLock()
        self._drawn_lines = 0
        # Non-interactive bookkeeping: what was last printed for each configuration, and when.
        self._printed: list[tuple[str, str] | None] = [None] * len(self.labels)
        self._printed_at: list[float] = [-math.inf] * len(self.labels)

    def update(self, index: int, *, state: str, fraction: float | None = None, detail: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        if fraction is not None:
            fraction = min(1.0, max(0.0, float(fraction)))
        with self._lock:
            self._entries[index] = _Entry(state, fraction, detail)

    def render(self, width: int | None = None, height: int | None = None) -> str:
        """The block as a terminal shows it: every line shorter than `width` (a line that wraps would break the
        in-place redraw), and at most `height` - 1 lines, since lines scrolled off the top cannot be rewritten."""
        if width is None or height is None:
            size = self.terminal_size()
            width, height = width or size.columns, height or size.lines
        with self._lock:
            return "\n".join(self._lines(max(width, 20), max(height, 3)))

    def draw(self) -> None:
        with self._lock:
            if self.interactive:
                self._draw_in_place()
            else:
                self._append_changes()
            self.stream.flush()

    def note(self, message: str) -> None:
        """A message above the block, which then redraws below it."""
        with self._lock:
            if self.interactive and self._drawn_lines:
                self.stream.write(f"\x1b[{self._drawn_lines}A\r\x1b[J")
                self._drawn_lines = 0
            self.stream.write(message.rstrip("\n") + "\n")
            if self.interactive:
                self._draw_in_place()
            self.stream.flush()

    # -- drawing --

    def _label_width(self, width: int) -> int:
        longest = max((len(label) for label in self.labels), default=0)
        return min(longest, max(10, width // 3))

    def _line(self, index: int, label_width: int, bar_width: int) -> str:
        entry = self._entries[index]
        label = _truncate(self.labels[index], label_width).ljust(label_width)
        if entry.state in _STATES_WITH_REASON:
            status = f"{entry.state}: {entry.detail}" if entry.detail else entry.state
        elif entry.state == RUNNING and entry.fraction is not None:
            bar = f"{_bar(entry.fraction, bar_width)} " if bar_width else ""
            status = f"{RUNNING:<7} {bar}{entry.fraction:4.0%}  {entry.detail}"
        else:
            status = f"{entry.state:<7} {entry.detail}"
        return f"{label}  {status}".rstrip()

    def _lines(self, width: int, height: int) -> list[str]:
        # Terminals wrap a line that fills the last column on the next character: stay one short.
        usable = width - 1
        label_width = self._label_width(usable)
        bar_width = 20 if usable >= 100 else 10 if usable >= 60 else 0
        shown = self._visible(height - 1)
        lines = [_truncate(self._line(i, label_width, bar_width), usable) for i in shown]
        hidden = len(self.labels) - len(shown)
        if hidden:
            counts: dict[str, int] = {}
            for i in sorted(set(range(len(self.labels))) - set(shown)):
                counts[self._entries[i].state] = counts.get(self._entries[i].state, 0) + 1
            summary = ", ".join(f"{count} {state}" for state, count in counts.items())
            lines.append(_truncate(f"(+{hidden} more: {summary})", usable))
        return lines

    def _visible(self, room: int) -> list[int]:
        """Which configurations get a line when not all fit: the running ones first, then failures, then the
        rest in order, shown in their original order."""
        count = len(self.labels)
        if count <= room:
            return list(range(count))
        priority = {RUNNING: 0, FAILED: 1, DONE: 2, SKIPPED: 3, QUEUED: 4}
        ranked = sorted(range(count), key=lambda i: (priority[self._entries[i].state], i))
        return sorted(ranked[:max(room - 1, 0)])  # one line goes to the summary of the hidden ones

    def _draw_in_place(self) -> None:
        size = self.terminal_size()
        lines = self._lines(max(size.columns, 20), max(size.lines, 3))
        up = f"\x1b[{self._drawn_lines}A\r" if self._drawn_lines else ""
        # \x1b[K clears what a longer previous line left; \x1b[J clears lines left over from a taller block.
        self.stream.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self._drawn_lines = len(lines)

    def _append_changes(self) -> None:
        now = self.clock()
        count = len(self.labels)
        # Logs are read later, interleaved with other output: every line names its configuration in full.
        for index, entry in enumerate(self._entries):
            line = f"[{index + 1}/{count}] " + self._line(index, len(self.labels[index]), 0)
            printed = self._printed[index]
            changed_state = printed is None or printed[0] != entry.state
            due = now - self._printed_at[index] >= self.interval_s and printed is not None and printed[1] != line
            if changed_state or due:
                self.stream.write(line + "\n")
                self._printed[index] = (entry.state, line)
                self._printed_at[index] = now


# -- the HTML report --------------------------------------------------------------------------------------------------

# Okabe-Ito: distinguishable with the common colour-vision deficiencies. Yellow is left out (unreadable on white);
# beyond these, dash patterns tell the lines apart.
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000")
_DASHES = ("", "8 3", "2 3", "8 3 2 3")
_WINNER_COLOUR, _PASSING_COLOUR, _FAILING_COLOUR = "#009E73", "#0072B2", "#BBBBBB"

_CHART_WIDTH = 760
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_HEIGHT = 78, 20, 16, 260
_AXIS_SPACE = 58  # below the plot: tick labels and the axis title
_LEGEND_ROW = 18
_BAR_ROW, _BAR_LABEL_WIDTH = 26, 300

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
.meta { color: #666; } pre.spec { background: #f5f5f5; padding: .8em; overflow-x: auto; white-space: pre-wrap; }
.verdict { font-weight: 600; } .verdict.none { color: #b00; }
svg { max-width: 100%; height: auto; font-size: 12px; }
svg text { fill: #333; } svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #555; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border-bottom: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.winner td { font-weight: 700; background: #e8f6f0; } tr.failing td { color: #888; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nice_ticks(upper: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `upper`: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not upper > 0 or not math.isfinite(upper):
        upper = 1.0
    raw = upper / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    steps = math.ceil(upper / step - 1e-9)
    # Rounded to 12 significant digits: 3 x 0.1 is 0.30000000000000004 otherwise.
    return [float(f"{i * step:.12g}") for i in range(steps + 1)]


def _tick_label(value: float) -> str:
    return "0" if value == 0 else f"{value:g}"


def _svg_open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">',
            f"<title>{_e(title)}</title>"]


def _line_chart(title: str, y_title: str, series: Mapping[str, Sequence[tuple[float, float | None]]],
                styles: Mapping[str, tuple[str, str, float]], threshold: float | None = None,
                threshold_label: str = "threshold") -> str:
    """Polylines of (x = seconds, y) per series; a None y breaks the line rather than bridging a gap."""
    plot_width = _CHART_WIDTH - _PLOT_LEFT - _PLOT_RIGHT
    legend_top = _PLOT_TOP + _PLOT_HEIGHT + _AXIS_SPACE
    height = legend_top + _LEGEND_ROW * max(len(series), 1) + 8
    xs = [x for points in series.values() for x, _ in points]
    ys = [y for points in series.values() for _, y in points if y is not None]
    x_ticks = _nice_ticks(max(xs, default=0.0))
    y_ticks = _nice_ticks(max([*ys, *([threshold] if threshold is not None else [])], default=0.0))
    x_max, y_max = x_ticks[-1], y_ticks[-1]

    def px(x: float) -> float:
        return _PLOT_LEFT + plot_width * x / x_max

    def py(y: float) -> float:
        return _PLOT_TOP + _PLOT_HEIGHT * (1 - y / y_max)

    parts = _svg_open(_CHART_WIDTH, height, title)
    bottom = _PLOT_TOP + _PLOT_HEIGHT
    for y in y_ticks:
        parts.append(f'<line class="grid" x1="{_PLOT_LEFT}" y1="{py(y):.1f}" x2="{px(x_max):.1f}" y2="{py(y):.1f}"/>')
        parts.append(f'<text x="{_PLOT_LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_e(_tick_label(y))}</text>')
    for x in x_ticks:
        parts.append(f'<line class="axis" x1="{px(x):.1f}" y1="{bottom}" x2="{px(x):.1f}" y2="{bottom + 5}"/>')
        parts.append(f'<text x="{px(x):.1f}" y="{bottom + 18}" text-anchor="middle">{_e(_tick_label(x))}</text>')
    parts.append(f'<line class="axis" x1="{_PLOT_LEFT}" y1="{_PLOT_TOP}" x2="{_PLOT_LEFT}" y2="{bottom}"/>')
    parts.append(f'<line class="axis" x1="{_PLOT_LEFT}" y1="{bottom}" x2="{px(x_max):.1f}" y2="{bottom}"/>')
    parts.append(f'<text x="{_PLOT_LEFT + plot_width / 2:.1f}" y="{bottom + 38}" text-anchor="middle">'
                 f'time since the load test started (s)</text>')
    parts.append(f'<text transform="translate(16 {_PLOT_TOP + _PLOT_HEIGHT / 2:.1f}) rotate(-90)" '
                 f'text-anchor="middle">{_e(y_title)}</text>')
    if threshold is not None:
        parts.append(f'<line x1="{_PLOT_LEFT}" y1="{py(threshold):.1f}" x2="{px(x_max):.1f}" y2="{py(threshold):.1f}" '
                     f'stroke="#b00" stroke-width="1.5" stroke-dasharray="6 4"/>')
        parts.append(f'<text x="{px(x_max) - 4:.1f}" y="{py(threshold) - 5:.1f}" text-anchor="end" fill="#b00">'
                     f'{_e(threshold_label)} {_e(_tick_label(threshold))} ms</text>')
    if not xs:
        parts.append(f'<text x="{_PLOT_LEFT + plot_width / 2:.1f}" y="{_PLOT_TOP + _PLOT_HEIGHT / 2:.1f}" '
                     f'text-anchor="middle">no measurements</text>')
    for label, points in series.items():
        colour, dash, stroke_width = styles[label]
        dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g class="series"><title>{_e(label)}</title>')
        segment: list[tuple[float, float]] = []
        for x, y in [*points, (math.nan, None)]:  # the sentinel flushes the last segment
            if y is not None:
                segment.append((px(x), py(y)))
                continue
            if len(segment) == 1:  # a lone point draws no line
                parts.append(f'<circle cx="{segment[0][0]:.1f}" cy="{segment[0][1]:.1f}" r="2.5" fill="{colour}"/>')
            elif segment:
                coordinates = " ".join(f"{sx:.1f},{sy:.1f}" for sx, sy in segment)
                parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{colour}" '
                             f'stroke-width="{stroke_width}"{dash_attribute}/>')
            segment = []
        parts.append("</g>")
    for row, (label, (colour, dash, stroke_width)) in enumerate(styles.items()):
        y = legend_top + row * _LEGEND_ROW
        dash_attribute = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<line x1="{_PLOT_LEFT}" y1="{y}" x2="{_PLOT_LEFT + 28}" y2="{y}" stroke="{colour}" '
                     f'stroke-width="{stroke_width}"{dash_attribute}/>')
        parts.append(f'<text x="{_PLOT_LEFT + 36}" y="{y + 4}">{_e(label)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _cost_chart(rows: Sequence[_Row]) -> str:
    plot_width = _CHART_WIDTH - _BAR_LABEL_WIDTH - 90
    top = 10
    bottom = top + _BAR_ROW * max(len(rows), 1)
    height = bottom + _AXIS_SPACE + _LEGEND_ROW + 8
    costs = [row.cost_per_inference for row in rows if row.cost_per_inference is not None]
    ticks = _nice_ticks(max(costs, default=0.0), count=4)

    def px(cost: float) -> float:
        return _BAR_LABEL_WIDTH + plot_width * cost / ticks[-1]

    parts = _svg_open(_CHART_WIDTH, height, "Cost per inference per configuration")
    for tick in ticks:
        parts.append(f'<line class="grid" x1="{px(tick):.1f}" y1="{top}" x2="{px(tick):.1f}" y2="{bottom}"/>')
        parts.append(f'<text x="{px(tick):.1f}" y="{bottom + 16}" text-anchor="middle">{_e(_tick_label(tick))}</text>')
    parts.append(f'<text x="{px(ticks[-1] / 2):.1f}" y="{bottom + 34}" text-anchor="middle">'
                 f'cost per inference (USD)</text>')
    for index, row in enumerate(rows):
        y = top + index * _BAR_ROW
        name = f"{WINNER_MARK} {row.label}" if row.is_winner else row.label
        parts.append(f'<text x="{_BAR_LABEL_WIDTH - 8}" y="{y + _BAR_ROW / 2 + 4:.1f}" text-anchor="end">'
                     f'<title>{_e(row.label)}</title>{_e(_truncate(name, 46))}</text>')
        if row.cost_per_inference is None:
            parts.append(f'<text x="{_BAR_LABEL_WIDTH + 4}" y="{y + _BAR_ROW / 2 + 4:.1f}" fill="#888">'
                         f'no cost per inference</text>')
            continue
        colour = _WINNER_COLOUR if row.is_winner else _PASSING_COLOUR if row.meets_sla else _FAILING_COLOUR
        bar_width = max(px(row.cost_per_inference) - _BAR_LABEL_WIDTH, 1.0)
        parts.append(f'<rect x="{_BAR_LABEL_WIDTH}" y="{y + 4}" width="{bar_width:.1f}" height="{_BAR_ROW - 8}" '
                     f'fill="{colour}"><title>{_e(row.label)}: {_e(_scientific(row.cost_per_inference))}</title></rect>')
        parts.append(f'<text x="{_BAR_LABEL_WIDTH + bar_width + 4:.1f}" y="{y + _BAR_ROW / 2 + 4:.1f}">'
                     f'{_e(_scientific(row.cost_per_inference))}</text>')
    parts.append(f'<line class="axis" x1="{_BAR_LABEL_WIDTH}" y1="{top}" x2="{_BAR_LABEL_WIDTH}" y2="{bottom}"/>')
    legend_y = bottom + _AXIS_SPACE + 4
    for offset, (colour, text) in enumerate(((_WINNER_COLOUR, "winner"), (_PASSING_COLOUR, "meets the SLA"),
                                             (_FAILING_COLOUR, "fails the SLA"))):
        x = _BAR_LABEL_WIDTH + offset * 130
        parts.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 18}" y="{legend_y}">{text}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _html_table(rows: Sequence[_Row]) -> str:
    parts = ["<table>", "<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in HEADERS) + "</tr></thead>", "<tbody>"]
    for row in rows:
        css = "winner" if row.is_winner else "" if row.meets_sla else "failing"
        cells = "".join(f'<td class="number">{_e(cell)}</td>' if column in _RIGHT_ALIGNED else f"<td>{_e(cell)}</td>"
                        for column, cell in enumerate(row.cells))
        parts.append(f'<tr class="{css}">{cells}</tr>' if css else f"<tr>{cells}</tr>")
    parts.extend(["</tbody>", "</table>"])
    return "\n".join(parts)


def _series_styles(labels: Sequence[str], winner: str | None) -> dict[str, tuple[str, str, float]]:
    """A colour and dash per configuration, the same in both timeline charts; the winner's line is thicker."""
    return {label: (_PALETTE[i % len(_PALETTE)], _DASHES[(i // len(_PALETTE)) % len(_DASHES)],
                    3.0 if label == winner else 1.6)
            for i, label in enumerate(labels)}


def html_report(title: str, selection: Selection, timelines: Mapping[str, Sequence[TimelinePoint]], *,
                generated_at: str, spec_summary: str, latency_threshold: LatencyThreshold | None = None,
                unmeasured: Sequence[StepFailure] = ()) -> str:
    """A self-contained HTML page: throughput and latency over time per configuration, cost per inference per
    configuration, and the results table. The latency chart is of modelLatency's percentile (the threshold's,
    P95 without one), so that the threshold line is drawn against the latency it limits.

    `timelines` is keyed by configuration label; keying it by selection.describe_configuration() of each
    recommendation lets the winner's lines stand out.
    """
    rows = _rows(selection, unmeasured)
    winner = describe_configuration(selection.best) if selection.best is not None else None
    styles = _series_styles(list(timelines), winner)
    throughput = {label: [(p.elapsed_s, p.rps) for p in points] for label, points in timelines.items()}
    charted = reported_percentile(latency_threshold)  # modelLatency's, so that the chart shows what the table does
    latency = {label: [(p.elapsed_s, p.latency_ms(charted)) for p in points] for label, points in timelines.items()}
    verdict_class = "verdict" if selection.best is not None else "verdict none"
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">Generated {_e(generated_at)}</p>',
        f'<pre class="spec">{_e(spec_summary)}</pre>',
        f'<p class="{verdict_class}">{_e(_conclusion(selection))}</p>',
        "<h2>Throughput over time</h2>",
        _line_chart("Successful requests per second over time", "throughput (req/s)", throughput, styles),
        f"<h2>{charted.name} latency over time</h2>",
        _line_chart(f"{charted.name} latency over time", f"{charted.name} latency (ms)", latency, styles,
                    latency_threshold.milliseconds if latency_threshold else None,
                    f"{latency_threshold.percentile.name} threshold" if latency_threshold else "threshold"),
        "<h2>Cost per inference</h2>",
        _cost_chart(rows),
        "<h2>Results</h2>",
        _html_table(rows),
    ]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
    ]) + "\n"


def write_html(path: str | os.PathLike[str], document: str) -> Path:
    """Write the report whole or not at all: an interrupted run must not leave half a page behind."""
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text(document, encoding="utf-8")
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target
