"""The status rule every part reads (leaderboard, MLflow callback, Optuna study, run_search.py --sync)."""
from __future__ import annotations

import pytest

from tuner.core import metrics as M


@pytest.mark.parametrize("errored, diverged, epochs_run, planned, ended, status", [
    (True, True, 5, 5, True, M.ERRORED),  # an error wins over everything
    (False, True, 5, 5, True, M.DIVERGED),  # a non-finite loss wins over having run every epoch
    (False, False, 5, 5, False, M.FINISHED),  # every planned epoch: finished, whatever Tune says
    (False, False, 6, 5, True, M.FINISHED),
    (False, False, 2, 5, True, M.STOPPED_EARLY),  # Tune ended it early: the scheduler's cut
    (False, False, 2, 5, False, M.INTERRUPTED),  # the driver stopped mid-trial: --resume continues it
    (False, False, 0, 5, False, M.PENDING),
    (False, False, 9, None, False, M.INTERRUPTED),  # planned unknown: never "finished"
    (False, False, 9, None, True, M.STOPPED_EARLY),
])
def test_trial_status(errored, diverged, epochs_run, planned, ended, status):
    assert M.trial_status(errored, diverged, epochs_run, planned, ended) == status


def test_ended_statuses_are_the_ones_resume_leaves_alone():
    assert set(M.ENDED_STATUSES) | {M.INTERRUPTED} == set(M.TRIAL_STATUSES)
    assert M.PENDING not in M.TRIAL_STATUSES and M.INTERRUPTED not in M.ENDED_STATUSES
