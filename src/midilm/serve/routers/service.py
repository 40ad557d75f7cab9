"""The service endpoints: `GET /healthz`, `GET /v1/models` and `GET /v1/instruments`."""

from pathlib import Path

from fastapi import APIRouter

from midilm.serve.state import State, model_name

STUDIO_INSTRUMENTS = (
    "piano", "electric piano", "organ", "harpsichord", "acoustic guitar", "electric guitar", "bass",
    "upright bass", "violin", "viola", "cello", "strings", "harp", "choir", "trumpet", "trombone", "french horn",
    "saxophone", "clarinet", "flute", "oboe", "bassoon", "vibraphone", "marimba", "synth lead", "synth pad",
    "drums",
)


def make_router() -> APIRouter:
    router = APIRouter(tags=["service"])

    @router.get("/healthz")
    async def healthz(state: State) -> dict:
        """Liveness and queue depth."""
        models = state.models
        return {"status": "ok", "text_to_midi": models.t2m is not None,
                "understanding": models.understanding is not None,
                "queues": {name: w.stats() for name, w in state.workers.items()}}

    @router.get("/v1/models")
    async def list_models(state: State) -> dict:
        """The models loaded (with the device each runs on), and the limits requests must keep to. The analysis
        answerer (`model=analysis` on /v1/describe and /v1/ask) is always available."""
        models = state.models
        out = []
        if models.t2m is not None:
            out.append({"id": model_name(models.t2m), "task": "text-to-midi", "backend": models.t2m_backend,
                        "path": str(getattr(models.t2m, "path", "")), "device": models.t2m_device or "cpu",
                        "available": True})
        else:
            out.append({"id": None, "task": "text-to-midi", "available": False, "reason": "not loaded"})
        out.append({"id": Path(models.understanding_path).name if models.understanding_path else None,
                    "task": "understanding", "available": models.understanding is not None,
                    **({"device": models.understanding_device or "cpu"} if models.understanding is not None
                       else {"reason": models.understanding_error})})
        out.append({"id": "analysis", "task": "understanding", "available": True, "device": "cpu"})
        return {"models": out, "limits": state.limits.as_dict()}

    @router.get("/v1/instruments")
    async def instruments() -> dict:
        """Instrument words the `instruments` fields accept (a selection; any General MIDI name works), and the
        General MIDI name of each program number the notes carry (128 = drums)."""
        from midilm.music.gm import program_name

        return {"instruments": list(STUDIO_INSTRUMENTS), "program_names": [program_name(p) for p in range(129)]}

    return router
