"""The loop: sessions that run stages, events, run folders, checkpoints."""
from .events import (AdmmRound, BatchEnded, CandidatesRanked, EvaluationDone, Event, ModelShrunk, PurifyDone, RunFailed,
                     RunFinished, RunStarted, StageEnded, StageStarted)
from .run import run_recipe
from .session import Session, StageFailed

__all__ = ["AdmmRound", "BatchEnded", "CandidatesRanked", "EvaluationDone", "Event", "ModelShrunk", "PurifyDone", "RunFailed", "RunFinished",
           "RunStarted", "Session", "StageEnded", "StageFailed", "StageStarted", "run_recipe"]
