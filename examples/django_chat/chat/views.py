from __future__ import annotations

from importlib import resources

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from .broadcasting import publish
from .channels import room_stream
from .models import Message


@login_required
def index(request: HttpRequest) -> HttpResponse:
    room = request.GET.get("room", "lobby")
    return render(request, "chat/index.html", {"room": room, "cable_url": settings.CABLE_URL})


@login_required
@require_POST
def post_message(request: HttpRequest, room: str) -> JsonResponse:
    """A message posted over plain HTTP reaches the room's WebSocket subscribers."""
    body = request.POST.get("body", "").strip()[:1000]
    if not body:
        return JsonResponse({"error": "empty message"}, status=400)
    message = Message.objects.create(room=room, author=request.user, body=body)
    publish(room_stream(room), message.as_json())
    return JsonResponse(message.as_json(), status=201)


def cablecar_js(request: HttpRequest) -> HttpResponse:
    """cablecar's browser client (same API as @rails/actioncable), from the package."""
    source = (resources.files("cablecar") / "static" / "cablecar.js").read_bytes()
    return HttpResponse(source, content_type="text/javascript")
