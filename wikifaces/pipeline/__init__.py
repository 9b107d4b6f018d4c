"""The pipeline layer: the stage registry, receipts and the one runner every adapter uses."""

from .runner import (
    FACES_STAGES,
    LSUN_STAGES,
    STAGES,
    DedupStageConfig,
    Stage,
    StageResult,
    dedup_dataset,
    receipt_path,
    run_stage,
    select_stages,
    stage_status,
    write_receipt,
)

__all__ = ["FACES_STAGES", "LSUN_STAGES", "STAGES", "DedupStageConfig", "Stage", "StageResult", "dedup_dataset",
           "receipt_path", "run_stage", "select_stages", "stage_status", "write_receipt"]
