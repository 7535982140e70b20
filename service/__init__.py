"""humwatch service: FastAPI app, database, API (see ``service.app.create_app``)."""

__version__ = "0.1.0"
