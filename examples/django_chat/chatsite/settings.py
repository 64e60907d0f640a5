"""Settings of the chat example (development values; read the environment for the rest).

CHAT_DB                the sqlite file (default: db.sqlite3 beside manage.py)
CABLE_PUBSUB           the cable's pub/sub URL: memory:// (default: the cable runs inside
                       this process, mounted in asgi.py) or redis://... (the cable may run
                       beside the app: `cablecar serve chatsite.cable:cable`)
CABLE_URL              where pages connect (default /cable)
CABLE_ALLOWED_ORIGINS  page origins a cable on another host or port accepts
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "dev-only-not-secret-change-me-in-production")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "chat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CABLE_PUBSUB = os.environ.get("CABLE_PUBSUB", "memory://")
#: Where pages connect: the mount in asgi.py, or a standalone server's ws://host:port/cable.
CABLE_URL = os.environ.get("CABLE_URL", "/cable")
#: Page origins a standalone server on another port must accept (comma-separated).
CABLE_ALLOWED_ORIGINS = [o for o in os.environ.get("CABLE_ALLOWED_ORIGINS", "").split(",") if o]
