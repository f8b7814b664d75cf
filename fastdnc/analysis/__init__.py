"""The DNC lens for any trained network: per-layer and per-model results used by everything above.

:func:`analyze` (``fd.analyze``) takes any ``nn.Module`` classifier with its data and loss, or a
DeepUFM / MLPHead, and returns an :class:`Analysis`; :class:`Tracker` records analyses over a user's
own training loop. Modules: :mod:`.sources` (where the layers come from), :mod:`.analyze`,
:mod:`.result` (the typed results), :mod:`.report` (report.md, JSON, figures), :mod:`.tracker`.
"""

from .analyze import analyze, analyze_layer, analyze_source
from .result import Analysis, LayerAnalysis, ModelCurvature
from .sources import LayeredSource, LayerSource, ModuleSource, ShardedSource
from .tracker import Tracker

__all__ = [
    "Analysis",
    "LayerAnalysis",
    "LayerSource",
    "LayeredSource",
    "ModelCurvature",
    "ModuleSource",
    "ShardedSource",
    "Tracker",
    "analyze",
    "analyze_layer",
    "analyze_source",
]
