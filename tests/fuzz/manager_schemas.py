"""Fuzz target: the manager's request schemas (difs.manager.schemas, the ``*Create`` /
``*Update`` / request models and the advertisement nodes send), validated the way FastAPI
does: JSON decoded with the standard decoder, then ``model_validate``.

Knobs: byte 0 picks the schema (``SCHEMAS[byte % len]``). The rest is the request body.

Oracles: a decoded body validates or raises pydantic's ValidationError (FastAPI answers it
422), nothing else; an accepted body dumps to JSON that validates back to an equal model
(what the manager stores is what it was given).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ValidationError

from difs.manager import schemas

from fuzz import knobs

MAX_INPUT = 1 << 14


def _request_models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [schemas.AdvertisementIn]
    todo = list(schemas._In.__subclasses__())
    while todo:
        model = todo.pop(0)
        if model not in found:
            found.append(model)
            todo.extend(model.__subclasses__())
    return sorted(found, key=lambda m: m.__name__)


SCHEMAS = _request_models()


def TestOneInput(data: bytes) -> None:
    (which,), body = knobs(data[:MAX_INPUT], 1)
    model = SCHEMAS[which % len(SCHEMAS)]
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # FastAPI answers an undecodable body 422/400
        return
    try:
        parsed = model.model_validate(value)
    except ValidationError:
        return
    again = model.model_validate(json.loads(parsed.model_dump_json()))
    assert again == parsed, (model.__name__, again, parsed)
