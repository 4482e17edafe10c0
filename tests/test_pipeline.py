"""A camera's whole chain on a real video file and the real demo bundle: one fight in, one incident out."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest

from edge.adapters.runtime import BundleModel
from edge.adapters.sources import CameraSource
from edge.core.config import CameraConfig, ClassifierConfig, DecisionConfig
from edge.core.messages import Event, message_json, schema
from edge.core.values import Frame, OfflineReason, Output
from edge.preprocess import SNAPSHOT_MAX
from edge.stages.pipeline import CameraPipeline
from edge.synthetic import render_clip, write_stream
from edge.tools.scan import scan
from tests.media import retime_mp4

START = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


class Sink:
    """Collects what the chain returns."""

    def __init__(self) -> None:
        self.outputs: list[Output] = []

    def __call__(self, outputs: list[Output]) -> None:
        self.outputs += outputs

    @property
    def events(self) -> list[Event]:
        return [o.event for o in self.outputs]


def pipeline(model: BundleModel, camera: CameraConfig | None = None, scene_cut: float = 0.6,
             keep_size: tuple[int, int] | None = None) -> CameraPipeline:
    camera = camera or CameraConfig(id="door", source="unused.mp4")
    return CameraPipeline(camera, DecisionConfig(), ClassifierConfig(scene_cut=scene_cut), model, "pi-7", "store 12",
                          keep_size=keep_size)


def synthetic_frames(kind: str, seconds: float, fps: float = 25.0, t0: float = 0.0, seed: int = 0) -> list[Frame]:
    images = render_clip(kind, round(seconds * fps), 160, 120, np.random.default_rng(seed))  # type: ignore[arg-type]
    return [
        Frame(img, t0 + i / fps, START + timedelta(seconds=t0 + i / fps)) for i, img in enumerate(images)
    ]


def test_video_with_one_fight_gives_one_incident_overlapping_it(tmp_path: Path, demo_model: BundleModel) -> None:
    video = tmp_path / "stream.mp4"
    spans = write_stream(video, [("calm", 8), ("fight", 5), ("calm", 8)])
    camera = CameraConfig(id="door", source=str(video), realtime=False)
    sink = Sink()
    chain = pipeline(demo_model, camera, keep_size=SNAPSHOT_MAX)  # as with snapshots on
    frames: list[Frame] = []
    for frame in CameraSource(camera).frames(threading.Event()):
        frames.append(frame)
        sink(chain.process(frame))
    sink(chain.finish())
    first = frames[:1]

    kinds = [e.type for e in sink.events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("start") == 1 and kinds.count("end") == 1
    assert len({e.event_id for e in sink.events}) == 1
    assert [e.seq for e in sink.events] == list(range(len(sink.events)))
    end = sink.events[-1]
    # Frame times are file positions on the wall clock of the first frame: compare with the fight segment.
    origin = first[0].wall - timedelta(seconds=first[0].ts)
    _, fight_start, fight_end = spans[1]
    assert end.started_at < origin + timedelta(seconds=fight_end)
    assert end.ended_at is not None and end.ended_at > origin + timedelta(seconds=fight_start)
    assert end.started_at <= end.ended_at
    assert end.label == "fight" and end.peak_score >= 0.5 and end.windows >= 2
    assert (end.device_id, end.camera_id, end.site) == ("pi-7", "door", "store 12")
    assert end.model.sha256 == demo_model.manifest.sha256
    validator = jsonschema.Draft202012Validator(schema("event"), format_checker=jsonschema.FormatChecker())
    for event in sink.events:
        validator.validate(json.loads(message_json(event)))
    # The end carries the frame of the incident's peak window (for a snapshot); nothing else carries pixels.
    last = sink.outputs[-1]
    peak = next(f for f in frames if f.ts == last.transition.peak_ts)
    assert last.peak_frame is not None and np.array_equal(last.peak_frame, peak.image)
    assert all(o.peak_frame is None for o in sink.outputs[:-1])

    stats = chain.stats()
    assert stats.frames_in == 21 * 25
    interval = demo_model.manifest.sampling.frame_interval_s
    assert abs(stats.frames_sampled - 21 / interval) <= 2
    assert stats.incidents == 1 and stats.events == len(sink.events) and not stats.incident_open
    assert stats.windows > 0 and stats.inference_ms > 0


def test_calm_video_gives_no_event(demo_model: BundleModel) -> None:
    sink = Sink()
    chain = pipeline(demo_model)
    for frame in synthetic_frames("calm", 10, seed=4):
        sink(chain.process(frame))
    sink(chain.finish())
    assert sink.events == []
    assert chain.stats().windows > 0


def test_finish_closes_an_incident_still_open_at_the_end(demo_model: BundleModel) -> None:
    sink = Sink()
    chain = pipeline(demo_model)
    frames = synthetic_frames("fight", 6, seed=2)
    for frame in frames:
        sink(chain.process(frame))
    assert sink.events[0].type == "start" and chain.stats().incident_open
    sink(chain.finish())
    assert sink.events[-1].type == "end" and sink.events[-1].end_reason == "stopped"
    assert sink.events[-1].emitted_at == frames[-1].wall
    assert chain.finish() == []  # nothing left to close
    assert [e.type for e in sink.events].count("end") == 1


def test_a_light_switched_on_and_off_is_a_scene_cut_not_an_anomaly(demo_model: BundleModel) -> None:
    """A calm scene whose lights switch every 3 s (or a camera's day/night switch)."""
    calm = synthetic_frames("calm", 30, seed=3)
    switched = [Frame((f.image * (0.25 if int(f.ts // 3) % 2 else 1.0)).astype(np.uint8), f.ts, f.wall) for f in calm]
    peak = {}
    for scene_cut in (1.0, 0.6):  # off, then the default
        scores: list[float] = []
        chain = pipeline(demo_model, scene_cut=scene_cut)
        chain.on_window = lambda p, scores=scores: scores.append(p.anomaly_score)
        for frame in switched:
            chain.process(frame)
        peak[scene_cut] = max(scores)
        cuts = chain.stats().scene_cuts
    # Across a switch the difference image is one bright frame the model never saw: it reads it as
    # violent movement. Counted as a cut, the difference reads as none and the scene stays calm.
    assert peak[1.0] > 0.9 and peak[0.6] < 0.1, peak
    assert cuts == 9  # switches at 3, 6, ... 27 s


@pytest.mark.parametrize(("reason", "end_reason"), [(OfflineReason.END_OF_FILE, "stopped"),
                                                   (OfflineReason.STOPPED, "stopped"),
                                                   (OfflineReason.LOST, "camera_lost")])
def test_going_offline_ends_the_incident_as_a_stop_or_a_loss(demo_model: BundleModel, reason: OfflineReason,
                                                            end_reason: str) -> None:
    sink = Sink()
    chain = pipeline(demo_model)
    for frame in synthetic_frames("fight", 4, seed=2):
        sink(chain.process(frame))
    sink(chain.gap(reason))
    assert sink.events[-1].type == "end" and sink.events[-1].end_reason == end_reason


def test_gap_closes_the_incident_and_needs_a_fresh_window(demo_model: BundleModel) -> None:
    sink = Sink()
    chain = pipeline(demo_model)
    before = synthetic_frames("fight", 4, seed=2)
    for frame in before:
        sink(chain.process(frame))
    assert chain.stats().incident_open
    windows_before = chain.stats().windows
    sink(chain.gap(OfflineReason.LOST))
    assert sink.events[-1].type == "end" and sink.events[-1].emitted_at == before[-1].wall
    assert sink.events[-1].end_reason == "camera_lost"
    assert not chain.stats().incident_open
    # After the gap a whole new window of sampled frames is needed before the next classification.
    window_s = demo_model.manifest.sampling.frame_interval_s * demo_model.manifest.input.frames
    after = synthetic_frames("fight", window_s * 0.9, t0=100.0, seed=8)
    for frame in after:
        sink(chain.process(frame))
    assert chain.stats().windows == windows_before


@pytest.mark.parametrize("steps", [[1], [1, 1, 2, 1, 3, 1, 1]])
def test_decoding_only_sampled_frames_gives_the_same_events(tmp_path: Path, demo_model: BundleModel,
                                                            steps: list[int]) -> None:
    """The daemon's chain decodes only the frames its sampler may take; replay (a frame hook) decodes all.

    On a constant-rate and a re-timed variable-rate encoding of a fight, both give the same events:
    everything but the incident's id and the wall clock the file is anchored to at the start of reading.
    """
    video = tmp_path / "stream.mp4"
    write_stream(video, [("calm", 6), ("fight", 5), ("calm", 6)])
    retime_mp4(video, steps)
    camera = CameraConfig(id="door", source=str(video), kind="file", realtime=False)
    runs = []
    for hook in (lambda *_: None, None):
        result = scan(camera, DecisionConfig(), ClassifierConfig(), demo_model, "pi-7", "store 12", on_frame=hook)
        runs.append((
            [e.model_dump(exclude={"event_id", "started_at", "ended_at", "emitted_at"}) for e in result.events],
            [(t.kind, t.ts, t.peak_ts) for t in result.transitions],
            [(w.ts, w.score) for w in result.windows], result.frames, result.scene_cuts,
        ))
    assert runs[0] == runs[1]
    kinds = [e["type"] for e in runs[0][0]]
    assert kinds[0] == "start" and kinds[-1] == "end"


def test_mjpeg_frames_are_decoded_once_sampled_at_a_reduced_size(demo_model: BundleModel) -> None:
    """An MJPEG camera's JPEGs reach the chain undecoded; it decodes the sampled ones at the smallest size the
    model's input allows (here half), and finds the same incident as full-size decoding of the same JPEGs."""
    frames = synthetic_frames("calm", 4, seed=1) + synthetic_frames("fight", 5, t0=4.0, seed=2)
    jpegs = [cv2.imencode(".jpg", cv2.resize(f.image, (320, 240)))[1].tobytes() for f in frames]
    runs = []
    for reduced in (False, True):
        sink, scores, shapes = Sink(), [], set()
        chain = pipeline(demo_model)
        chain.on_window = lambda p, scores=scores: scores.append(p.anomaly_score)
        chain.on_sampled = lambda f, shapes=shapes: shapes.add(f.image.shape)
        for frame, jpeg in zip(frames, jpegs, strict=True):
            if reduced:
                sink(chain.process(Frame(None, frame.ts, frame.wall, encoded=jpeg)))
            else:
                sink(chain.process(Frame(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), frame.ts,
                                         frame.wall)))
        sink(chain.finish())
        runs.append(([e.type for e in sink.events], scores, shapes))
    (kinds, full_scores, full_shapes), (reduced_kinds, reduced_scores, reduced_shapes) = runs
    assert kinds == reduced_kinds and kinds[0] == "start" and kinds[-1] == "end"
    assert np.abs(np.array(full_scores) - reduced_scores).max() < 0.1
    assert (full_shapes, reduced_shapes) == ({(240, 320, 3)}, {(120, 160, 3)})


def test_a_chain_keeps_camera_pictures_only_for_what_uses_them(demo_model: BundleModel) -> None:
    """Without snapshots or clips (no keep_size) no peak picture is kept, and the events are the same."""
    frames = synthetic_frames("calm", 4, seed=1) + synthetic_frames("fight", 5, t0=4.0, seed=2)
    runs = []
    for keep_size in (SNAPSHOT_MAX, None):
        sink = Sink()
        chain = pipeline(demo_model, keep_size=keep_size)
        for frame in frames:
            sink(chain.process(frame))
        sink(chain.finish())
        runs.append(sink.outputs)
    kept, bare = runs
    assert [o.event.model_dump(exclude={"event_id"}) for o in kept] == \
        [o.event.model_dump(exclude={"event_id"}) for o in bare]
    assert kept[-1].event.type == "end" and kept[-1].peak_frame is not None
    assert all(o.peak_frame is None for o in bare)
