"""Pipelines: ``@step`` and ``@pipeline`` decorators, the ``Model`` asset that registers what a
step returns, and the run records kept under ``.uniflow/runs/`` (docs/pipelines.md).

The package is named ``pipelines`` (plural) because ``uniflow.pipeline`` is the decorator,
exported by ``uniflow`` itself.
"""

from ._runs import PipelineRun, StepRun, current_run, get_run, list_runs
from ._steps import Model, pipeline, step

__all__ = ["Model", "PipelineRun", "StepRun", "current_run", "get_run", "list_runs", "pipeline", "step"]
