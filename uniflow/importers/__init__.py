"""Importers: bring the models of another registry (MLflow, GTO) into this one, with their
history. See docs/migrate.md. Each importer is handed the :class:`~uniflow._repo.Repository`
and ``ModelRegistry.register`` by the registry facade (``import_mlflow``, ``import_gto``).
"""

from __future__ import annotations

from ._common import EmptiedStage, EventResult, ImportReport, VersionResult, map_model_name

__all__ = ["EmptiedStage", "EventResult", "ImportReport", "VersionResult", "map_model_name"]
