"""Event-level scoring: would the daemon have raised an incident, clip by clip (or span by span)?

A user sees incidents, not window scores, so each test clip is played to the model as the device
would see it: frames sampled on a fixed grid at the device's interval (nearest frame by timestamp),
a window every ``hop`` sampled frames, scene cuts read as no movement (``classifier.scene_cut``), and
the window scores replayed through the daemon's decision rule (converter.device_rule). A clip is an
alarm if an incident opened.

An incident needs one window plus ``start_windows - 1`` hops of video (2.8 s at 0.1 s, 20 frames,
hop 4, 3 windows), longer than fight-surv's 2 s clips. For a source whose median clip is shorter
than that, the test streams are *spliced*: each group's clips (one camera or scene) are decoded,
put in a seeded random order and concatenated into one stream, and every clip's time range is a
span. Rules, with an incident placed at the middle of the window that opened it (``alert_ts -
window_s / 2``, so a window straddling a splice is attributed to the side it mostly saw):

- an anomalous span is *found* if an incident is open at any time in it (placed start <= span end
  and close >= span start);
- a calm span is a *false alarm* if an incident's placed start falls in it, or if an incident is
  open over all of it although the last anomalous span before it ended more than ``tail_s`` earlier
  (a window plus ``end_windows`` hops: the longest an incident rightly outlives what opened it). So an
  incident that never closes is a false alarm on every calm span it swallows, not a free pass.

A stream of a single clip has one span, and the rules reduce to "an incident opened". The units
(clip or span) then get the same scores and group bootstrap as clips do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from converter import dataset as ds
from converter.device_rule import incident_times
from converter.sampling import nearest
from edge.core.config import ClassifierConfig, DecisionConfig
from edge.preprocess import SCALE, Representation, changed_fraction, model_input

CHUNK = 32  # windows predicted at a time


@dataclass(frozen=True)
class Span:
    clip: str
    start: float
    end: float
    anomalous: bool


@dataclass
class Stream:
    """Prepared frames (uint8, model size) with their timestamps, and which clip each time range came from."""

    name: str
    group: str
    source: str
    frames: np.ndarray
    timestamps: np.ndarray
    spans: list[Span]
    spliced: bool = False


def clip_stream(item: ds.Decoded, anomalous: bool) -> Stream:
    times = np.arange(len(item.frames)) / item.fps
    return Stream(item.clip.name, item.clip.group, item.clip.source, item.frames, times,
                  [Span(item.clip.name, 0.0, len(item.frames) / item.fps, anomalous)])


def spliced_streams(items: Sequence[ds.Decoded], anomalous: Sequence[bool], seed: int) -> list[Stream]:
    """One stream per group: its clips in a seeded random order, back to back."""
    by_group: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        by_group.setdefault(item.clip.group, []).append(i)
    rng = np.random.default_rng(seed)
    streams = []
    for group in sorted(by_group):
        order = [by_group[group][j] for j in rng.permutation(len(by_group[group]))]
        offset, times, spans = 0.0, [], []
        for i in order:
            item = items[i]
            duration = len(item.frames) / item.fps
            times.append(offset + np.arange(len(item.frames)) / item.fps)
            spans.append(Span(item.clip.name, offset, offset + duration, bool(anomalous[i])))
            offset += duration
        streams.append(Stream(f"{group} ({len(order)} clips)", group, items[order[0]].clip.source,
                              np.concatenate([items[i].frames for i in order]), np.concatenate(times), spans, True))
    return streams


def needs_splice(
    items: Sequence[ds.Decoded], interval: float, frames: int, settings: DecisionConfig, hop: int
) -> bool:
    """True when a source's median clip is shorter than the video one incident needs."""
    needed = interval * (frames + (settings.start_windows - 1) * hop)
    return float(np.median([(len(d.frames) - 1) / d.fps for d in items])) < needed


@dataclass(frozen=True)
class Player:
    """How the device plays a stream to a model: its input, sampling interval, classifier and decision settings."""

    predict: Callable[[np.ndarray], np.ndarray]
    representation: Representation
    frames: int
    interval: float
    settings: DecisionConfig
    anomaly_index: tuple[int, ...]
    classifier: ClassifierConfig

    @property
    def window_s(self) -> float:
        return self.frames * self.interval

    @property
    def tail_s(self) -> float:
        return incident_tail_s(self.window_s, self.settings.end_windows, self.classifier.hop, self.interval)


def incident_tail_s(window_s: float, end_windows: int, hop: int, interval: float) -> float:
    """How long an incident may rightly stay open after what opened it has ended.

    Windows keep overlapping the anomaly for one window length; then ``end_windows`` windows, ``hop``
    sampled frames apart, must score below the threshold before the incident closes.
    """
    return window_s + end_windows * hop * interval


def stream_scores(player: Player, stream: Stream) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps and anomaly scores of the windows the device would classify over a stream."""
    frames, classifier = player.frames, player.classifier
    targets = np.arange(stream.timestamps[0], stream.timestamps[-1] + 1e-9, player.interval)
    samples = nearest(stream.timestamps, targets)
    prepared = stream.frames[samples].astype(np.float32) * np.float32(SCALE)
    inputs = []
    for k in range(1, len(prepared)):
        previous: np.ndarray | None = prepared[k - 1]
        if changed_fraction(prepared[k], previous) > classifier.scene_cut:
            previous = None  # the daemon reads a cut as no movement
        inputs.append(model_input(prepared[k], previous, player.representation))
    starts = list(range(0, len(inputs) - frames + 1, classifier.hop))
    if not starts:
        return np.empty(0), np.empty(0)
    scores = []
    for first in range(0, len(starts), CHUNK):
        batch = np.stack([np.stack(inputs[s:s + frames]) for s in starts[first:first + CHUNK]])
        scores.append(np.asarray(player.predict(batch))[:, list(player.anomaly_index)].sum(axis=1))
    ts = np.array([stream.timestamps[samples[s + frames]] for s in starts])
    return ts, np.clip(np.concatenate(scores), 0.0, 1.0)


def span_alarms(
    spans: Sequence[Span], incidents: Sequence[tuple[float, float]], window_s: float, tail_s: float
) -> list[bool]:
    """Per span: found (anomalous span) or false alarm (calm span), by the rules in the module docstring."""
    placed = [(alert - window_s / 2, closed) for alert, closed in incidents]
    anomalous_ends = [span.end for span in spans if span.anomalous]
    out = []
    for span in spans:
        if span.anomalous:
            out.append(any(start <= span.end and closed >= span.start for start, closed in placed))
            continue
        started_here = any(span.start <= start < span.end for start, _ in placed)
        last_anomaly = max((end for end in anomalous_ends if end <= span.start), default=-np.inf)
        held_open = span.start - last_anomaly > tail_s and any(
            start <= span.start and closed >= span.end for start, closed in placed)
        out.append(started_here or held_open)
    return out


def score_streams(
    player: Player, streams: Sequence[Stream]
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """One unit per span (its clip, group, source, truth, whether the daemon alarmed, the incidents), and
    per stream its window times and scores, so other decision settings can be replayed without the model."""
    units: list[dict[str, object]] = []
    windows: list[dict[str, object]] = []
    for stream in streams:
        ts, scores = stream_scores(player, stream)
        windows.append({"stream": stream.name, "source": stream.source, "ts": [round(float(t), 3) for t in ts],
                        "scores": [round(float(s), 4) for s in scores]})
        found = incident_times(ts, scores, player.settings)
        alarms = span_alarms(stream.spans, found, player.window_s, player.tail_s)
        for span, alarm in zip(stream.spans, alarms, strict=True):
            units.append({"stream": stream.name, "clip": span.clip, "group": stream.group, "source": stream.source,
                          "start_s": round(span.start, 3), "end_s": round(span.end, 3), "anomalous": span.anomalous,
                          "alarm": alarm, "spliced": stream.spliced, "windows": len(ts),
                          "incidents": [[round(a, 3), round(c, 3)] for a, c in found]})
    return units, windows
