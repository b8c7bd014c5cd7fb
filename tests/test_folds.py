"""The one split every cross-fitted loop uses (train/fit/folds.py)."""

import numpy as np

from ttsopt.train.fit.folds import fold_means, fold_splits, outer_folds


def test_each_fold_trains_on_the_others_and_never_on_itself():
    fold = np.array([0, 1, 2, 0, 1, 2, 2])
    seen = []
    for f, train, test in outer_folds(fold):
        assert set(fold[test]) == {f} and f not in set(fold[train])
        assert len(train) + len(test) == len(fold)
        seen.append(f)
    assert seen == [0, 1, 2]


def test_rows_outside_every_fold_are_on_no_side():
    fold = np.array([0, -1, 1, 1, -1])
    for _, train, test in outer_folds(fold):
        assert 1 not in train and 4 not in train and 1 not in test and 4 not in test
    assert [f for f, _, _ in outer_folds(fold)] == [0, 1]


def test_splits_keep_an_empty_fold_in_its_place():
    splits = fold_splits(np.array([0, 0, 2]), 3)
    assert [t.tolist() for _, t in splits] == [[0, 1], [], [2]]


def test_fold_means_are_what_the_training_side_knows():
    fold = np.array([0, 0, 1, 1])
    values = np.array([[1.0], [3.0], [10.0], [30.0]])
    assert fold_means(fold, values)[:, 0].tolist() == [20.0, 20.0, 2.0, 2.0]
