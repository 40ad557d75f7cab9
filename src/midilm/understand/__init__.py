"""MIDI understanding (MIDI-LLaMA): captions and answers about MIDI pieces from a local model directory.

    from midilm.understand import load_understanding_model
    model = load_understanding_model()            # the shipped midilm-understand-tiny
    model.describe(piece)                         # a caption
    model.ask(piece, "What key is this piece in?")

See `midilm.understand.model` for the API and `midilm.models.midi_llama` for the model itself.
"""

from midilm.understand.model import (
    UnderstandingModel,
    default_understand_model_path,
    load_understanding_model,
    register_kind,
)

__all__ = ["UnderstandingModel", "default_understand_model_path", "load_understanding_model", "register_kind"]
