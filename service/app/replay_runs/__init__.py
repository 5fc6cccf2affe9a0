"""Replay runs: a recorded path sent again, turn by turn, to another model, its replies kept in the
same tree beside the originals they replace (plan.py says which turns and where; start.py queues
them; runner.py how they run and resume; tools.py the tool rule; runs.py and report.py what is
reported). The composition root (service/app/services.py) builds the Runner and the service."""

from __future__ import annotations

from service.app.replay_runs.plan import Target, TurnRef
from service.app.replay_runs.report import ReplayBatch, ReplayDiff, ReplayRun, ReplayRunPage
from service.app.replay_runs.runner import Runner
from service.app.replay_runs.runs import batch, cancel, diff, get, of_conversation
from service.app.replay_runs.start import Limits, NewBatch, NewReplay, start, start_batch

__all__ = [
    "Limits", "NewBatch", "NewReplay", "ReplayBatch", "ReplayDiff", "ReplayRun", "ReplayRunPage", "Runner", "Target",
    "TurnRef", "batch", "cancel", "diff", "get", "of_conversation", "start", "start_batch",
]  # fmt: skip
