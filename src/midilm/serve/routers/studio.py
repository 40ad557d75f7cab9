"""The studio (`GET /` and its static files) and the API docs served from local files."""

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parents[1] / "static"


def swagger_assets() -> Path | None:
    """Swagger UI's files from the swagger-ui-bundle package (the `serve` extra), if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    path = Path(swagger_ui_path)
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def make_router(swagger: Path | None) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    if swagger:  # the API docs from local files: the default page loads Swagger UI from a CDN
        @router.get("/docs")
        async def docs():
            from fastapi.openapi.docs import get_swagger_ui_html

            return get_swagger_ui_html(openapi_url="/openapi.json", title="midilm API",
                                       swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-assets/swagger-ui.css",
                                       swagger_favicon_url="/docs-assets/favicon-32x32.png")

    @router.get("/")
    async def studio() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return router


def mount_files(app: FastAPI, swagger: Path | None) -> None:
    """The studio's static files, and Swagger UI's where installed."""
    if swagger:
        app.mount("/docs-assets", StaticFiles(directory=swagger), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
