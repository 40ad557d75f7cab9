"""The understanding models' conversation template (public names; it lives in `midilm.models.conversation`,
below the models that use it)."""

from midilm.models.conversation import (
    ASSISTANT,
    DESCRIBE_INSTRUCTION,
    IGNORE,
    SYSTEM,
    USER,
    Encoded,
    encode_conversation,
    text_only,
    uses_chat_template,
)

__all__ = ["ASSISTANT", "DESCRIBE_INSTRUCTION", "IGNORE", "SYSTEM", "USER", "Encoded", "encode_conversation",
           "text_only", "uses_chat_template"]
