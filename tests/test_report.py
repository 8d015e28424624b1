"""The local run's presentation: the results table over the seed's Advanced results, the progress board in a
terminal and in a log, and the self-contained HTML report."""

from __future__ import annotations

import dataclasses
import io
import os
import re
from html.parser import HTMLParser

import pytest

from rightsizer.tools import report
from rightsizer.backends.base import Recommendation, StepFailure
from rightsizer.loadtest.load_generator import LoadProgress, LoadResult, StopReason, TimelinePoint
from rightsizer.tools.report import (DONE, FAILED, RUNNING, SKIPPED, ProgressBoard, html_report, progress_detail,
                               result_detail, results_table, write_html)
from rightsizer.selection import Constraints, describe_configuration, select
from rightsizer.spec import LatencyThreshold, Percentile
from seed import ADVANCED_RESULTS

SLA = Constraints(max_model_latency_ms=100, min_invocations_per_minute=30000)
P95_100_MS = LatencyThreshold(Percentile.parse("P95"), 100)


def advanced_recommendations() -> list[Recommendation]:
    return [Recommendation(f"fraud-advanced/{instance_type}-omp{omp}", instance_type, 2, {"OMP_NUM_THREADS": omp},
                           {"costPerHour": cost, "maxInvocations": invocations, "modelLatency": latency,
                            "cpuUtilization": cpu, "memoryUtilization": memory})
            for instance_type, omp, cost, invocations, latency, cpu, memory in ADVANCED_RESULTS]


def table_block(text: str) -> list[str]:
    """The header and data lines: everything before the blank line that precedes the conclusion."""
    return text.split("\n\n")[0].split("\n")


# -- results table ----------------------------------------------------------------------------------------------------

def test_seed_table_puts_the_cheapest_qualifying_configuration_first_and_marks_it():
    selection = select(advanced_recommendations(), "CostPerInference", SLA)
    text = results_table(selection)
    header, *rows = table_block(text)

    assert header.split() == ["instance", "environment", "maxInvocations/min", "modelLatency", "ms", "CPU", "%",
                              "memory", "%", "cost/h", "cost/inference", "meets", "SLA"]
    # 0.922 / (42604 x 60) = 3.61e-07: the 2xlarge pair with four OpenMP threads.
    assert rows[0].split() == ["*", "ml.m5.2xlarge", "x2", "OMP_NUM_THREADS=4", "42604", "6", "177.2", "3.05",
                               "0.922", "3.61e-07", "yes"]
    assert [row.split()[2] for row in rows[1:]] == ["OMP_NUM_THREADS=3", "OMP_NUM_THREADS=5", "OMP_NUM_THREADS=5",
                                                    "OMP_NUM_THREADS=4", "OMP_NUM_THREADS=3"]
    assert [row.split()[0] for row in rows[1:]] == ["ml.m5.2xlarge", "ml.m5.2xlarge", "ml.m5.4xlarge",
                                                    "ml.m5.4xlarge", "ml.m5.4xlarge"]
    assert [row.startswith("*") for row in rows] == [True] + [False] * 5
    assert rows[-1].split()[-2] == "8.05e-07"  # 1.844 / (38174 x 60)
    assert text.rstrip("\n").endswith(f"Winner (*): {selection.reason}.")
    assert "ml.m5.2xlarge x2 (OMP_NUM_THREADS=4): lowest cost per inference" in selection.reason


def test_columns_are_aligned_and_numbers_right_aligned():
    text = results_table(select(advanced_recommendations(), "CostPerInference", SLA))
    lines = table_block(text)
    assert len({len(line) for line in lines}) == 1
    # Right-aligned columns end in the same place: the header's "cost/inference" and every row's value.
    end = lines[0].index("cost/inference") + len("cost/inference")
    assert all(re.fullmatch(r"\d\.\d\de-0\d", line[end - 8:end]) for line in lines[1:])


def test_missing_metrics_show_as_a_dash():
    measured_without_cost = Recommendation("local/a", "local-2cpu", 1, {}, {"maxInvocations": 31000.4,
                                                                              "modelLatency": 12.46})
    selection = select([*advanced_recommendations(), measured_without_cost], "CostPerInference", SLA)
    rows = table_block(results_table(selection))[1:]
    (line,) = [row for row in rows if "local-2cpu" in row]
    assert line.split() == ["local-2cpu", "x1", "-", "31000", "12.5", "-", "-", "-", "-", "yes"]
    assert len({len(row) for row in rows}) == 1


def test_none_qualifies_names_no_winner_and_says_why_each_fails():
    selection = select(advanced_recommendations(), "CostPerInference",
                       Constraints(max_model_latency_ms=100, min_invocations_per_minute=100000))
    text = results_table(selection)
    rows = table_block(text)[1:]

    assert selection.best is None
    assert not any(row.startswith("*") for row in rows)
    # Throughput is the recommended endpoint's (two instances together), compared as it is: never doubled again.
    assert all(re.search(r"no: \d+ invocations/min on 2 instances < 100000\s*$", row) for row in rows)
    assert text.rstrip("\n").endswith("No configuration qualifies: none of the 6 configurations meets "
                                      "latency <= 100 ms and >= 100000 invocations/min.")


def test_unmeasured_configurations_follow_the_measured_ones():
    failure = StepFailure("ml.m5.large", {"OMP_NUM_THREADS": "3"}, "the model server exited during start-up")
    text = results_table(select(advanced_recommendations(), "CostPerInference", SLA), unmeasured=[failure])
    rows = table_block(text)[1:]
    assert rows[-1].split()[:9] == ["ml.m5.large", "OMP_NUM_THREADS=3", "-", "-", "-", "-", "-", "-", "no:"]
    assert rows[-1].rstrip().endswith("not measured: the model server exited during start-up")


def test_a_width_wraps_the_long_text_columns_without_losing_words():
    reason = "the model server exited during start-up because the host ran out of memory while loading"
    failure = StepFailure("ml.m5.large", {"OMP_NUM_THREADS": "3", "SAGEMAKER_MODEL_SERVER_WORKERS": "2"}, reason)
    selection = select(advanced_recommendations(), "CostPerInference", SLA)
    wide = results_table(selection, unmeasured=[failure])
    narrow = results_table(selection, width=150, unmeasured=[failure])
    lines = table_block(narrow)

    assert max(len(line) for line in table_block(wide)) > 150
    assert len({len(line) for line in lines}) == 1 and len(lines[0]) <= 150
    assert len(lines) > 1 + 7  # the failure's row took several lines
    failure_start = next(i for i, line in enumerate(lines) if "ml.m5.large" in line)
    sla_column = lines[0].index("meets SLA")
    assert reason not in narrow  # wrapped across lines...
    words_in_cells = " ".join(line[sla_column:].strip() for line in lines[failure_start:])
    assert words_in_cells == f"no: not measured: {reason}"  # ...yet every word is there, in order
    # Keys stay whole: "OMP_NUM_THREADS=3," is never split.
    assert "OMP_NUM_THREADS=3," in narrow


def test_an_empty_selection_still_renders():
    text = results_table(select([], "CostPerInference", SLA))
    assert "(no configurations)" in text
    assert text.rstrip("\n").endswith("No configuration qualifies: the job produced no recommendations.")


# -- progress board ---------------------------------------------------------------------------------------------------

LABELS = ["ml.m5.2xlarge x2 (OMP_NUM_THREADS=3)", "ml.m5.2xlarge x2 (OMP_NUM_THREADS=4)",
          "ml.m5.4xlarge x2 (OMP_NUM_THREADS=3)", "ml.m5.4xlarge x2 (OMP_NUM_THREADS=4)",
          "ml.m5.4xlarge x2 (OMP_NUM_THREADS=5)"]


def board_in_every_state(stream=None, **options) -> ProgressBoard:
    board = ProgressBoard(LABELS, stream or io.StringIO(), **options)
    board.update(1, state=RUNNING, fraction=0.42, detail="phase 1/2, 4 users, 512 req/s, p95 8.1 ms")
    board.update(2, state=DONE, detail="39688 invocations/min at p95 6.0 ms")
    board.update(3, state=FAILED, detail="the server stopped answering")
    board.update(4, state=SKIPPED, detail="maxNumberOfTests reached")
    return board


def test_board_renders_every_state():
    lines = board_in_every_state().render(width=120, height=40).split("\n")
    assert lines == [
        "ml.m5.2xlarge x2 (OMP_NUM_THREADS=3)  queued",
        "ml.m5.2xlarge x2 (OMP_NUM_THREADS=4)  running [========            ]  42%  "
        "phase 1/2, 4 users, 512 req/s, p95 8.1 ms",
        "ml.m5.4xlarge x2 (OMP_NUM_THREADS=3)  done    39688 invocations/min at p95 6.0 ms",
        "ml.m5.4xlarge x2 (OMP_NUM_THREADS=4)  failed: the server stopped answering",
        "ml.m5.4xlarge x2 (OMP_NUM_THREADS=5)  skipped: maxNumberOfTests reached",
    ]


def test_running_without_a_fraction_has_no_bar_and_fractions_are_clamped():
    board = ProgressBoard(["a", "b"], io.StringIO())
    board.update(0, state=RUNNING, detail="starting the server")
    board.update(1, state=RUNNING, fraction=1.7)
    first, second = board.render(width=120, height=10).split("\n")
    assert first.split() == ["a", "running", "starting", "the", "server"]
    assert "[" not in first
    assert second.endswith("100%")


@pytest.mark.parametrize("width", [1, 20, 40, 70, 99, 100])
def test_board_lines_never_reach_the_terminal_width(width):
    lines = board_in_every_state().render(width=width, height=40).split("\n")
    assert len(lines) == len(LABELS)
    assert all(len(line) < max(width, 20) for line in lines)
    if width < 60:
        assert all("[" not in line for line in lines)  # no room for a bar
        assert lines[0].startswith("ml.m5.2") and "..." in lines[0]


def test_a_short_terminal_shows_the_running_configurations_and_counts_the_rest():
    board = ProgressBoard([f"configuration {n}" for n in range(10)], io.StringIO())
    for done in range(6):
        board.update(done, state=DONE, detail="ok")
    board.update(8, state=RUNNING, fraction=0.5)
    lines = board.render(width=80, height=5).split("\n")
    assert len(lines) == 4
    # Three lines and a summary: the running one first, then the finished ones in order.
    assert [line.split()[1] for line in lines[:3]] == ["0", "1", "8"]
    assert lines[-1] == "(+7 more: 4 done, 3 queued)"


def test_unknown_state_is_refused():
    with pytest.raises(ValueError, match="running"):
        ProgressBoard(["a"], io.StringIO()).update(0, state="finished")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def new_output(stream: io.StringIO, start: int) -> tuple[list[str], int]:
    text = stream.getvalue()
    return [line for line in text[start:].split("\n") if line], len(text)


def test_a_log_gets_state_changes_at_once_and_progress_at_most_every_five_seconds():
    stream, clock = io.StringIO(), FakeClock()
    board = ProgressBoard(["a", "b"], stream, clock=clock)  # StringIO is no terminal
    assert not board.interactive

    board.draw()
    lines, seen = new_output(stream, 0)
    assert lines == ["[1/2] a  queued", "[2/2] b  queued"]

    clock.now = 1.0
    board.update(0, state=RUNNING, fraction=0.1, detail="phase 1/2")
    board.draw()
    lines, seen = new_output(stream, seen)
    assert lines == ["[1/2] a  running  10%  phase 1/2"]

    for now, fraction in ((2.0, 0.2), (3.0, 0.3), (5.9, 0.4)):  # a redraw per second, as the caller does
        clock.now = now
        board.update(0, state=RUNNING, fraction=fraction, detail="phase 1/2")
        board.draw()
    lines, seen = new_output(stream, seen)
    assert lines == []

    clock.now = 6.0
    board.update(0, state=RUNNING, fraction=0.5, detail="phase 2/2")
    board.draw()
    lines, seen = new_output(stream, seen)
    assert lines == ["[1/2] a  running  50%  phase 2/2"]

    clock.now = 6.5
    board.update(0, state=DONE, detail="42604 invocations/min at p95 6.0 ms")
    board.update(1, state=RUNNING, fraction=0.0)
    board.draw()
    lines, seen = new_output(stream, seen)
    assert lines == ["[1/2] a  done    42604 invocations/min at p95 6.0 ms", "[2/2] b  running   0%"]

    clock.now = 60.0  # nothing changed: nothing to say, however long it has been
    board.draw()
    lines, seen = new_output(stream, seen)
    assert lines == []


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_block_rewritten_in_place(monkeypatch):
    monkeypatch.delenv("TERM", raising=False)
    stream = FakeTerminal()
    board = board_in_every_state(stream, terminal_size=lambda: os.terminal_size((120, 40)))
    assert board.interactive

    board.draw()
    first = stream.getvalue()
    assert not first.startswith("\x1b[")
    assert first.count("\x1b[K\n") == len(LABELS)

    board.update(0, state=RUNNING, fraction=0.05, detail="phase 1/2")
    board.draw()
    second = stream.getvalue()[len(first):]
    assert second.startswith(f"\x1b[{len(LABELS)}A\r")
    assert "running [=                   ]   5%  phase 1/2\x1b[K\n" in second
    assert second.endswith("\x1b[J")

    board.note("warning: the load generator's CPU passed 90 %")
    third = stream.getvalue()[len(first) + len(second):]
    # Up over the block, clear it, the message, then the block again below it.
    assert third.startswith(f"\x1b[{len(LABELS)}A\r\x1b[Jwarning: the load generator's CPU passed 90 %\n")
    assert third.count("\x1b[K\n") == len(LABELS)


def test_a_dumb_terminal_is_treated_as_a_log(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    assert not ProgressBoard(["a"], FakeTerminal()).interactive


def test_details_from_the_load_generator():
    progress = LoadProgress(elapsed_s=61.2, users=4, stage="phase 1/2", rps=511.6, p95_ms=8.14, requests=30000,
                            failures=0)
    assert progress_detail(progress) == "phase 1/2, 4 users, 512 req/s, p95 8.1 ms"
    failing = LoadProgress(elapsed_s=1.0, users=2, stage="phase 1/2", rps=0.0, p95_ms=None, requests=40, failures=40)
    assert progress_detail(failing) == "phase 1/2, 2 users, 0 req/s, p95 - ms, 40 of 40 requests failed"

    measured = dataclasses.replace(LoadResult.without_measurements(StopReason.TRAFFIC_PATTERN_COMPLETE, "done"),
                                 max_invocations_per_minute=39688.2, model_latency_p95_ms=6.04)
    assert result_detail(measured) == "39688 invocations/min at p95 6.0 ms"
    nothing = LoadResult.without_measurements(StopReason.LATENCY_THRESHOLD, "P95 latency 140 ms exceeded 100 ms")
    assert result_detail(nothing) == "no window held the latency threshold (P95 latency 140 ms exceeded 100 ms)"


# -- HTML report ------------------------------------------------------------------------------------------------------

HOSTILE = '<script>alert("x")</script>'
VOID_ELEMENTS = {"meta", "br", "img", "hr", "input", "link"}


class Structure(HTMLParser):
    """Checks that every element is closed in order, and records the charts' series and bars."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.errors: list[str] = []
        self.svgs: list[dict] = []
        self.series_title: str | None = None
        self.in_series = False
        self.capture_title = False
        self.rows: list[tuple[str, list[str]]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag not in VOID_ELEMENTS:
            self.open.append(tag)
        if tag == "svg":
            self.svgs.append({"series": {}, "bars": [], "dashed": []})
        elif tag == "g" and attributes.get("class") == "series":
            self.in_series, self.series_title = True, None
        elif tag == "title" and self.in_series and self.series_title is None:
            self.capture_title = True
        elif tag == "tr":
            self.rows.append((attributes.get("class", ""), []))
        self.record_leaf(tag, attributes)

    def handle_startendtag(self, tag, attrs):
        self.record_leaf(tag, dict(attrs))

    def record_leaf(self, tag, attributes):
        if tag == "polyline" and self.in_series:
            series = self.svgs[-1]["series"]
            series[self.series_title] = series.get(self.series_title, 0) + 1
        elif tag == "rect" and self.svgs:
            self.svgs[-1]["bars"].append(attributes["fill"])
        elif tag == "line" and "stroke-dasharray" in attributes and self.svgs:
            self.svgs[-1]["dashed"].append(attributes["stroke-dasharray"])

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
            return
        self.open.pop()
        if tag == "g":
            self.in_series = False
        elif tag == "title":
            self.capture_title = False

    def handle_data(self, data):
        if self.capture_title:
            self.series_title = (self.series_title or "") + data
        elif self.open and self.open[-1] == "td":
            self.rows[-1][1].append(data)


def timeline(rates: list[float], latencies: list[float | None]) -> list[TimelinePoint]:
    return [TimelinePoint(elapsed_s=float(second + 1), duration_s=1.0, users=2, stage="phase 1/2", requests=int(rps),
                          failures=0, rps=rps, p50_ms=None if p95 is None else p95 / 2, p95_ms=p95,
                          p99_ms=None if p95 is None else p95 * 1.5)
            for second, (rps, p95) in enumerate(zip(rates, latencies))]


def report_html(constraints: Constraints = SLA, **options) -> tuple[str, list[Recommendation]]:
    recommendations = advanced_recommendations()
    selection = select(recommendations, "CostPerInference", constraints)
    timelines = {
        describe_configuration(recommendations[1]): timeline([400, 650, 710, 705], [5.0, 6.2, 7.9, 8.1]),
        describe_configuration(recommendations[0]): timeline([380, 600, 660, 661], [5.5, None, 7.0, 9.3]),
        HOSTILE: timeline([100, 120, 118, 119], [40.0, 80.0, 120.0, 160.0]),
    }
    document = html_report(f"fraud-advanced & {HOSTILE}", selection, timelines,
                           generated_at="2026-01-02T03:04:05Z", spec_summary=f"trafficPattern: PHASES\n{HOSTILE}",
                           **options)
    return document, recommendations


def parse(document: str) -> Structure:
    structure = Structure()
    structure.feed(document)
    structure.close()
    return structure


def test_report_is_well_formed_with_three_charts_and_a_table():
    document, _ = report_html(latency_threshold=P95_100_MS)
    structure = parse(document)
    assert structure.errors == []
    assert structure.open == []
    assert len(structure.svgs) == 3
    assert document.startswith("<!DOCTYPE html>")
    assert len(structure.rows) == 1 + 6  # header and one row per configuration


def test_timeline_charts_draw_a_line_per_configuration_and_break_it_at_a_gap():
    document, recommendations = report_html(latency_threshold=P95_100_MS)
    throughput, latency, _ = parse(document).svgs
    best, runner_up = (describe_configuration(recommendations[i]) for i in (1, 0))
    assert throughput["series"] == {best: 1, runner_up: 1, HOSTILE: 1}
    # The runner-up's second interval had no successful request: its latency line is broken there, not bridged.
    # The part before the gap is a single point, drawn as a dot rather than a polyline.
    assert latency["series"] == {best: 1, runner_up: 1, HOSTILE: 1}
    assert document.count("<circle") == 1
    assert latency["dashed"] == ["6 4"] and throughput["dashed"] == []
    assert "threshold 100 ms" in document
    assert "throughput (req/s)" in document and "P95 latency (ms)" in document
    assert "time since the load test started (s)" in document


def test_the_latency_chart_is_of_the_thresholds_percentile():
    # The timelines' P99 is 1.5 x their P95: the hostile configuration's P99 reaches 240 ms, its P95 160 ms.
    document, _ = report_html(latency_threshold=LatencyThreshold(Percentile.parse("P99"), 100))
    latency_chart = document.split("<svg")[2]
    assert "P99 latency (ms)" in latency_chart and "P95" not in latency_chart
    assert "P99 threshold 100 ms" in latency_chart
    assert ">250</text>" in latency_chart  # the y axis covers the P99 line, not the P95 one (ticks up to 160)
    default, _ = report_html()
    assert "P95 latency (ms)" in default and ">250</text>" not in default.split("<svg")[2]


def test_without_a_threshold_there_is_no_dashed_line():
    document, _ = report_html()
    assert all(svg["dashed"] == [] for svg in parse(document).svgs)
    assert "threshold" not in document


def test_cost_chart_highlights_the_winner_and_greys_the_configurations_failing_the_sla():
    document, _ = report_html(constraints=Constraints(max_model_latency_ms=100, min_invocations_per_minute=40000))
    structure = parse(document)
    bars = structure.svgs[2]["bars"]
    # Best first: the winner (42604/min), the other one above 40000 (40472/min), four below; the legend.
    assert bars[:6] == ["#009E73", "#0072B2", "#BBBBBB", "#BBBBBB", "#BBBBBB", "#BBBBBB"]
    assert bars[6:] == ["#009E73", "#0072B2", "#BBBBBB"]
    assert "3.61e-07" in document
    classes = [css for css, _ in structure.rows[1:]]
    assert classes == ["winner", "", "failing", "failing", "failing", "failing"]
    assert structure.rows[1][1][:3] == ["*", "ml.m5.2xlarge x2", "OMP_NUM_THREADS=4"]


def test_report_escapes_every_label_and_loads_nothing():
    document, _ = report_html(latency_threshold=P95_100_MS)
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in document
    assert "fraud-advanced &amp; " in document
    assert "<script" not in document.lower()
    assert "http" not in document.lower()
    assert not re.search(r"\b(src|href)=", document)


def test_a_report_without_timelines_still_has_its_charts():
    selection = select(advanced_recommendations(), "CostPerInference", SLA)
    document = html_report("empty", selection, {}, generated_at="now", spec_summary="")
    structure = parse(document)
    assert structure.errors == [] and len(structure.svgs) == 3
    assert document.count("no measurements") == 2


def test_nice_ticks_are_round_and_cover_the_data():
    assert report._nice_ticks(710) == [0, 200, 400, 600, 800]
    assert report._nice_ticks(100) == [0, 20, 40, 60, 80, 100]
    assert report._nice_ticks(8.05e-07, count=4) == [0, 2.5e-07, 5e-07, 7.5e-07, 1e-06]
    assert report._nice_ticks(0) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]


def test_write_html_replaces_the_file_whole(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    document, _ = report_html()
    assert write_html(target, document) == target
    assert target.read_text(encoding="utf-8") == document
    assert [path.name for path in tmp_path.iterdir()] == ["report.html"]


def test_a_met_sla_without_a_price_is_no_winner_rather_than_no_qualifier():
    from rightsizer.selection import Constraints, select

    unpriced = Recommendation("r", "local-1cpu", 1, {}, {"maxInvocations": 9000, "modelLatency": 8})
    table = report.results_table(select([unpriced], "CostPerInference", Constraints(max_model_latency_ms=100)))
    assert "No winner: 1 of 1 configurations meet latency <= 100 ms, but lowest cost per inference" in table
    assert "No configuration qualifies" not in table
    slow = Recommendation("s", "local-1cpu", 1, {}, {"maxInvocations": 9000, "modelLatency": 800})
    table = report.results_table(select([slow], "CostPerInference", Constraints(max_model_latency_ms=100)))
    assert "No configuration qualifies: none of the 1 configurations meets latency <= 100 ms." in table
