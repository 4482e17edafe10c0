"""Train/test splits: by source group (default) or by clip (the paper's), stratified by class.

A group split keeps every clip of a source on one side; it is stratified "as far as groups allow":
among many random orders of the groups, the one whose test side comes closest to the wanted share
of every class wins. Everything is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # (train indices, test indices) into the clip list
_TRIALS = 300


def _group_counts(labels: Sequence[str], groups: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = sorted(set(groups))
    classes = sorted(set(labels))
    group_of = np.array([names.index(g) for g in groups])
    counts = np.zeros((len(names), len(classes)))
    for g, label in zip(group_of, labels, strict=True):
        counts[g, classes.index(label)] += 1
    return names, counts, group_of


def group_split(labels: Sequence[str], groups: Sequence[str], test_fraction: float, seed: int) -> Split:
    """Hold out whole groups so that about ``test_fraction`` of every class is in the test side."""
    names, counts, group_of = _group_counts(labels, groups)
    if len(names) < 2:
        raise ValueError(f"a group split needs at least two source groups, found {len(names)}")
    target = counts.sum(axis=0) * test_fraction
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray] | None = None
    for _ in range(_TRIALS):
        chosen = np.zeros(len(names), bool)
        current = np.zeros(counts.shape[1])
        order = rng.permutation(len(names))
        for g in order:
            before = np.square(current - target).sum()
            after = np.square(current + counts[g] - target).sum()
            if after < before:
                chosen[g] = True
                current += counts[g]
        if not chosen.any():  # every group overshoots a small stratum's share: hold out one anyway
            chosen[order[0]] = True
            current += counts[order[0]]
        if not chosen.any() or chosen.all():
            continue
        cost = float(np.square(current - target).sum())
        if best is None or cost < best[0]:
            best = (cost, chosen)
    if best is None:
        raise ValueError("could not split the groups into two non-empty sides")
    test_mask = best[1][group_of]
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def random_split(labels: Sequence[str], test_fraction: float, seed: int) -> Split:
    """The paper's split: a stratified random share of the clips of each class, ignoring sources."""
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    test: list[int] = []
    for label in sorted(set(labels)):
        members = rng.permutation(np.flatnonzero(labels_arr == label))
        take = round(len(members) * test_fraction)
        take = min(max(take, 1), len(members) - 1) if len(members) > 1 else 0
        test.extend(members[:take].tolist())
    test_mask = np.zeros(len(labels), bool)
    test_mask[test] = True
    return np.flatnonzero(~test_mask), np.flatnonzero(test_mask)


def group_kfold(labels: Sequence[str], groups: Sequence[str], folds: int, seed: int) -> list[Split]:
    """K folds of whole groups, each fold's class mix as close to the overall mix as groups allow."""
    names, counts, group_of = _group_counts(labels, groups)
    if folds < 2:
        raise ValueError("--folds needs at least 2")
    if len(names) < folds:
        raise ValueError(f"{folds} folds need at least {folds} source groups, found {len(names)}")
    target = counts.sum(axis=0) / folds
    rng = np.random.default_rng(seed)
    # Big groups first (random order among equals): they are the hard ones to balance.
    order = sorted(rng.permutation(len(names)), key=lambda g: -counts[g].sum())
    fold_counts = np.zeros((folds, counts.shape[1]))
    fold_of = np.zeros(len(names), int)
    for g in order:
        growth = np.square(fold_counts + counts[g] - target).sum(axis=1) - np.square(fold_counts - target).sum(axis=1)
        f = int(np.argmin(growth))
        fold_of[g] = f
        fold_counts[f] += counts[g]
    clip_fold = fold_of[group_of]
    return [(np.flatnonzero(clip_fold != f), np.flatnonzero(clip_fold == f)) for f in range(folds)]


# crosseval's protocols: leave one source out (the headline: cameras never seen in training), and one
# group split over every source pooled (the in-source figure: other scenes of the same cameras were seen).
PROTOCOLS = ("loso", "group")


def leave_one_source_out(sources: Sequence[str], held: str) -> Split:
    """Train on every clip of the other sources, test on every clip of ``held``."""
    sources_arr = np.asarray(sources)
    if not (sources_arr == held).any() or (sources_arr == held).all():
        raise ValueError(f"leave-one-source-out needs clips of {held!r} and of at least one other source")
    return np.flatnonzero(sources_arr != held), np.flatnonzero(sources_arr == held)
