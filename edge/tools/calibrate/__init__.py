"""Per-camera threshold from evidence: the lowest one that keeps false alarms at or under a target.

Usage::

    rclstm-edge calibrate --config /etc/rclstm-edge/config.toml --camera door day1.mp4 day2.mp4 \\
        [--max-false-alarms-per-day 1] [--labelled DIR | --intervals FILE] [--write] [--out DIR]

The recordings are that camera's ordinary days, with no incident in them: every incident the
decision logic opens on them is a false alarm, and false alarms per day = incidents / recorded
hours * 24. Each recording goes once through the daemon's own chain (``edge.tools.scan.scan``, with the
camera's settings, hop included); the sweep then replays only the ``Decider`` over the cached window
scores for every threshold and ``start_windows`` in 1..4 (end_windows, cooldown and classifier.hop
stay as configured: changing hop would need the model again).

For each ``start_windows`` the threshold chosen is the lowest one from which every higher threshold
also meets the target (a threshold that passes only because a cooldown happened to merge two false
alarms is not a safe setting). Thresholds are searched on a 0.01 grid and then to 4 decimals just
under the lowest passing grid point, at the scores where the count can change. The margin is how
far the chosen threshold is above the highest run of ``start_windows`` no-incident windows that
stays under it: how much the scores of an ordinary day would have to rise to raise an alarm.

Labelled recordings (``--labelled DIR`` with a folder per label, where folders named for one of the
model's anomaly labels hold incidents from start to end and the others none; or ``--intervals FILE``
with lines ``path start_s end_s``, paths relative to the file) give the recall of incidents and the
detection delay (from the labelled start to the start event) at each setting; the ``start_windows``
with the best recall is chosen then. Without labels the camera's own ``start_windows`` (the model's
recommended one unless the config sets it) is kept, or a smaller one reaching the same threshold
(``sweep.unlabelled_choice`` says why). Incidents in labelled recordings outside
the labelled intervals are reported, not counted in the rate: those recordings are not ordinary days.

Writes ``calibration.json`` and ``calibration.png`` (the curve; needs the ``plots`` extra, or pass
``--no-plots``) to ``--out``; ``--write`` sets ``threshold`` and ``start_windows`` in the camera's
``[cameras.decision]`` table with a minimal text edit, so comments and the rest of the file survive,
and refuses to write when the edit would change anything else or the result does not validate.
"""

from edge.tools.calibrate.inputs import calibrate
from edge.tools.calibrate.report import report, write_outputs
from edge.tools.calibrate.sweep import Calibration, InputError, Recording, sweep

__all__ = ["Calibration", "InputError", "Recording", "calibrate", "report", "sweep", "write_outputs"]
