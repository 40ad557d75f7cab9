"""HTTP serving of midilm's models (FastAPI) and the web studio: `midilm serve`."""
