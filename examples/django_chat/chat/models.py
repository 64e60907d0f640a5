from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models


class Message(models.Model):
    room = models.SlugField(max_length=50)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    body = models.TextField(max_length=1000)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["room", "id"])]

    def as_json(self) -> dict[str, Any]:
        """What subscribers receive (``author`` must be loaded: select_related)."""
        return {
            "id": self.pk,
            "room": self.room,
            "author": self.author.get_username(),
            "body": self.body,
            "created": self.created.isoformat(),
        }
