"""The base of every response schema (`<Thing>Out`): a key the read model returns but the schema
does not declare is an error, so the OpenAPI contract and the wire cannot drift apart (FastAPI
answers 500 on a response that fails its model, and the API tests fail on any 5xx)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

# Times go on the wire as the ISO 8601 strings the read models have always returned; declaring
# them `datetime` would re-serialise them (and change their format).
Timestamp = str
Day = str  # an ISO 8601 date, e.g. an expiry


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")
