"""One pipeline from data to a served model: `sm70 run PIPELINE.yaml` and `sm70 demo`."""

from sm70.pipeline.config import DemoConfig, PipelineConfig
from sm70.pipeline.run import demo, run_pipeline

__all__ = ["DemoConfig", "PipelineConfig", "demo", "run_pipeline"]
