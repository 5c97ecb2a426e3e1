"""Qualify: an open-source lead qualification engine.

Fit, engagement and lifecycle scoring from a scoring model written as YAML; every
score explains itself and every stage change is recorded.
"""

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
