"""The one base of every immutable model that crosses a task boundary (XCom) or a module boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable, and unknown fields are errors (a typo in XCom or config never passes silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
