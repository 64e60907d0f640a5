"""Django app config: ``INSTALLED_APPS = [..., "cablecar.contrib.django"]`` makes the
``{% load cablecar %}`` template tags available."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]


class CablecarConfig(AppConfig):  # type: ignore[misc]
    name = "cablecar.contrib.django"
    label = "cablecar"
    verbose_name = "cablecar"
