"""The pipeline layer: the stage registry, receipts and the one runner every adapter uses."""

from dedup.config import DedupStageConfig

from .registry import FACES_STAGES, LSUN_STAGES, STAGES, RunContext, Stage
from .runner import StageResult, receipt_path, run_stage, select_stages, stage_status, write_receipt

__all__ = ["FACES_STAGES", "LSUN_STAGES", "STAGES", "DedupStageConfig", "RunContext", "Stage", "StageResult",
           "receipt_path", "run_stage", "select_stages", "stage_status", "write_receipt"]
