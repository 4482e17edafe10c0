"""The values that flow down a camera's chain, one type per arrow, and nothing else.

source --Frame--> sampler --Frame--> classifier --Prediction--> decision --Transition--> events --Output--> sink
   \\--SourceState (OfflineReason)--> pipeline.gap()

They live apart from the stages that make them so that any stage, tool or test can name them
without importing OpenCV or a TFLite runtime (a frame is a numpy array; an event is a message model).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np

from edge.core.messages import EndReason, Event, EventType

# Where the hysteresis stands: no qualifying run, a run building up to start_windows, an incident
# open, or an incident just ended and the cooldown not yet over.
Phase = Literal["idle", "pending", "open", "cooldown"]


@dataclass(frozen=True)
class Frame:
    """One captured image with its stream time (monotonic per source) and wall time (UTC)."""

    # BGR uint8 as OpenCV delivers it, or shrunk to SNAPSHOT_MAX for a large camera; None when the
    # source did not decode the frame because the sampler could not take it (``Sampler.could_take``).
    image: np.ndarray | None
    ts: float
    wall: datetime
    # The image already shrunk to the model's input size (still BGR uint8) when ``image`` was
    # reduced: the classifier prepares this one, which gives exactly the input the full frame would.
    model_image: np.ndarray | None = None
    # An MJPEG camera's frame as its JPEG, decoded only if sampled (``edge.preprocess.decode_jpeg``).
    encoded: bytes | None = None
    # Frames the source read just before this one and did not deliver, because the sampler passes over
    # them (``Sampler.passes_over``): counted as frames in, and nothing else.
    passed_over: int = 0


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for the window ending at ``ts`` / ``wall`` (the newest sampled frame's times).

    No pixels: hours of predictions are kept by replay and calibration, and the decision needs none.
    """

    probs: np.ndarray
    labels: list[str]
    top_label: str
    anomaly_score: float  # probability mass on the manifest's anomaly labels
    ts: float
    wall: datetime
    anomaly_label: str | None = None  # the most probable of the anomaly labels; None when there are none


@dataclass(frozen=True)
class Transition:
    """One step of an incident's lifecycle with its running statistics at that moment."""

    kind: EventType
    incident_id: str  # uuid4, stable for the incident's whole life
    seq: int  # 0, 1, 2 ... per incident so consumers can order messages
    started_at: datetime
    ended_at: datetime | None
    peak_score: float
    mean_score: float
    top_label: str
    windows: int
    score: float  # the current window's score
    peak_ts: float
    emitted_at: datetime  # wall time of the window (or frame) that caused this transition
    ts: float
    end_reason: EndReason | None = None


@dataclass(frozen=True)
class Output:
    """What a camera's chain hands to its sink: an event, the transition it describes, and on an
    incident's end the frame of its peak window (for the optional snapshot)."""

    event: Event
    transition: Transition
    peak_frame: np.ndarray | None = None


class OfflineReason(enum.Enum):
    """Why a source stopped delivering frames; only a loss says nothing is known about the scene."""

    END_OF_FILE = "end of file"
    STOPPED = "stopped"
    LOST = "lost"

    @property
    def orderly(self) -> bool:
        return self is not OfflineReason.LOST


@dataclass(frozen=True)
class SourceState:
    """A source coming online or going offline; ``text`` is what the camera's status message says."""

    online: bool
    text: str  # 'streaming', 'end of file', 'stopped', or the source's error line
    reason: OfflineReason | None = None  # None while online

    @classmethod
    def streaming(cls) -> SourceState:
        return cls(True, "streaming")

    @classmethod
    def offline(cls, reason: OfflineReason, text: str | None = None) -> SourceState:
        return cls(False, text or reason.value, reason)
