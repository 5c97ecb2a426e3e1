"""Qualify: an open-source lead qualification engine.

Fit, engagement and lifecycle scoring from a scoring model written as YAML; every
score explains itself and every stage change is recorded.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qualify.domain.errors import IllegalTransition, InvalidInput, ModelError, NotFound, QualifyError
    from qualify.domain.lifecycle import Stage
    from qualify.domain.model_loader import load_default_model, load_model
    from qualify.domain.records import Account, Event, Lead, make_event
    from qualify.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "Account",
    "Event",
    "IllegalTransition",
    "InvalidInput",
    "Lead",
    "ModelError",
    "NotFound",
    "QualifyError",
    "Settings",
    "Stage",
    "load_default_model",
    "load_model",
    "make_event",
]

# Where each public name lives: imported when first asked for, so that `import qualify.x` (and so
# `qualify --help`) does not load the settings' and the model loader's libraries.
_HOMES = {
    "IllegalTransition": "qualify.domain.errors",
    "InvalidInput": "qualify.domain.errors",
    "ModelError": "qualify.domain.errors",
    "NotFound": "qualify.domain.errors",
    "QualifyError": "qualify.domain.errors",
    "Stage": "qualify.domain.lifecycle",
    "load_default_model": "qualify.domain.model_loader",
    "load_model": "qualify.domain.model_loader",
    "Account": "qualify.domain.records",
    "Event": "qualify.domain.records",
    "Lead": "qualify.domain.records",
    "make_event": "qualify.domain.records",
    "Settings": "qualify.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'qualify' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
