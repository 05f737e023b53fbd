"""Base for every recipe table: unknown keys are errors, never silently ignored."""
from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
