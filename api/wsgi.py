"""gunicorn api.wsgi:app"""

from api import create_app
from predictions.infra import configure_logging
from predictions.settings import Settings

settings = Settings.from_env()
configure_logging(settings.log_level, settings.log_format)
app = create_app(settings)
