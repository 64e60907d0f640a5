"""Template tags of :mod:`cablecar.contrib.django` (``{% load cablecar %}``)."""
