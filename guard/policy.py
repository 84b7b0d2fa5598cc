"""What a tenant's guardrails do with each category of finding, on the way in and out.

Defaults: PII and secrets in the model's output are redacted; secrets in the caller's input
are redacted before anything is sent to a vendor; PII in the input is allowed (callers share
their own details with the assistant on purpose). Text matching a blocked pattern is always
refused on the way in and stops the answer on the way out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from guard.detectors import Category

InputAction = Literal["allow", "redact", "refuse"]
OutputAction = Literal["allow", "redact", "block"]
INPUT_ACTIONS: tuple[InputAction, ...] = ("allow", "redact", "refuse")
OUTPUT_ACTIONS: tuple[OutputAction, ...] = ("allow", "redact", "block")


@dataclass(frozen=True, slots=True)
class GuardPolicy:
    input_pii: InputAction = "allow"
    input_secrets: InputAction = "redact"
    output_pii: OutputAction = "redact"
    output_secrets: OutputAction = "redact"

    def on_input(self, category: Category) -> InputAction:
        if category == "pii":
            return self.input_pii
        return self.input_secrets if category == "secret" else "refuse"

    def on_output(self, category: Category) -> OutputAction:
        if category == "pii":
            return self.output_pii
        return self.output_secrets if category == "secret" else "block"
