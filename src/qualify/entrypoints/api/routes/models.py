"""Scoring models over HTTP: read the active one, validate a candidate, activate it."""

from __future__ import annotations

from fastapi import APIRouter

from qualify.domain.access import Permission
from qualify.domain.model_loader import load_model
from qualify.entrypoints.api.deps import ModelReader, ModelWriter, WorkspaceDep, permission_doc
from qualify.entrypoints.api.schemas import ModelIn, ModelOut
from qualify.entrypoints.problems import PROBLEM_RESPONSES
from qualify.service.lifecycle.scoring_models import activate_model, active_document
from qualify.service.unit_of_work import retrying

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get(
    "/active",
    response_model=ModelOut,
    responses=PROBLEM_RESPONSES,
    openapi_extra=permission_doc(Permission.READ_MODELS),
)
def get_active_model(workspace: WorkspaceDep, caller: ModelReader) -> ModelOut:
    """The active scoring model's YAML exactly as activated."""
    with workspace.unit_of_work(read_only=True) as uow:
        version, document = active_document(uow)
        model = uow.active_model()
    return ModelOut(name=model.name, version=version, document=document)


@router.post(
    "/validate",
    response_model=ModelOut,
    responses=PROBLEM_RESPONSES,
    openapi_extra=permission_doc(Permission.READ_MODELS),
)
def post_validate(body: ModelIn, caller: ModelReader) -> ModelOut:
    """Validate a candidate; problems come back as problem+json with line and field of each."""
    model = load_model(body.document, "request body")
    return ModelOut(name=model.name, version=model.version)


@router.post(
    "/active",
    response_model=ModelOut,
    responses=PROBLEM_RESPONSES,
    openapi_extra=permission_doc(Permission.WRITE_MODELS),
)
def post_activate(body: ModelIn, workspace: WorkspaceDep, caller: ModelWriter) -> ModelOut:
    """Store a model version and make it active (leads are rescored by `qualify score`)."""
    model, changed = retrying(
        workspace,
        lambda uow: activate_model(uow, body.document, "request body", by=caller.acts_as, key_id=caller.key_id),
    )
    return ModelOut(name=model.name, version=model.version, changed=changed)
