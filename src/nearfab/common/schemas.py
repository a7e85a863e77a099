"""The base of every response schema (`<Thing>Out`): a key the read model returns but the schema
does not declare is an error, so the OpenAPI contract and the wire cannot drift apart (FastAPI
answers 500 on a response that fails its model, and the API tests fail on any 5xx)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from pydantic import BaseModel, ConfigDict, TypeAdapter

P = ParamSpec("P")
R = TypeVar("R")

# Times go on the wire as the ISO 8601 strings the read models have always returned; declaring
# them `datetime` would re-serialise them (and change their format).
Timestamp = str
Day = str  # an ISO 8601 date, e.g. an expiry


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


def shaped(declared: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A read model whose dict (or list of dicts) goes through its `<Thing>Out` contract: the
    API, the pages and the CLI `--json` then show one validated shape, and a key the read
    model adds without declaring it fails here, loudly, wherever it is read."""
    adapter: TypeAdapter[Any] = TypeAdapter(declared)

    def wrap(build: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(build)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            return cast(R, adapter.dump_python(adapter.validate_python(build(*args, **kwargs))))

        return checked

    return wrap
