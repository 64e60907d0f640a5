"""Turbo Stream builders: escaping user content cannot break out of an attribute or the
template; the stream source element for Jinja2 and Django templates verifies."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from cablecar import Cable, turbo
from cablecar.errors import ConfigurationError
from cablecar.signing import StreamSigner

HOSTILE = '"><script>alert(1)</script></template></turbo-stream><img src=x onerror=alert(2)>'


def test_every_action_builds_its_element() -> None:
    """The eight actions, ``targets``, extra attributes (``method="morph"``,
    ``request_id`` → ``request-id``) and content-less actions."""
    for action in ("append", "prepend", "replace", "update", "before", "after"):
        built = getattr(turbo, action)("list", turbo.HTML("<li>x</li>"))
        assert built == (
            f'<turbo-stream action="{action}" target="list"><template><li>x</li></template>'
            "</turbo-stream>"
        )
    assert turbo.replace(targets=".row", content="t", method="morph") == (
        '<turbo-stream action="replace" targets=".row" method="morph"><template>t</template>'
        "</turbo-stream>"
    )
    assert turbo.remove("m_1") == '<turbo-stream action="remove" target="m_1"></turbo-stream>'
    assert turbo.refresh(request_id="abc") == (
        '<turbo-stream action="refresh" request-id="abc"></turbo-stream>'
    )


def test_user_content_cannot_break_out() -> None:
    """Text content and every attribute value are escaped: the hostile string yields no
    tag of its own, in content, target, targets or extra attributes."""
    for built in (
        turbo.append("list", HOSTILE),
        turbo.append(HOSTILE, "x"),
        turbo.remove(targets=HOSTILE),
        turbo.update("list", "x", data_note=HOSTILE),
    ):
        assert built.count("<") == built.count("<turbo-stream") + built.count("<template") + \
            built.count("</")  # fmt: skip
        assert "<script" not in built and "<img" not in built and "</turbo-stream>" in built
        assert built.endswith("</turbo-stream>") and built.count("</turbo-stream>") == 1
    # Markup objects (Jinja2, Django, turbo.HTML) are trusted, a str is not
    assert "<b>" in turbo.append("l", turbo.HTML("<b>x</b>"))
    assert "<b>" not in turbo.append("l", "<b>x</b>")


def test_bad_calls_are_refused() -> None:
    """Unknown-shaped actions, a missing or double target, content on remove, bad
    attribute names: ``ValueError``."""
    for call in (
        lambda: turbo.turbo_stream("Append!", "x"),
        lambda: turbo.append(),
        lambda: turbo.append("a", "x", targets=".b"),
        lambda: turbo.turbo_stream("remove", "a", "content"),
        lambda: turbo.append("a", "x", **{"on click": "y"}),
    ):
        with pytest.raises(ValueError):
            call()


def test_stream_names_and_the_jinja2_global() -> None:
    """Parts join like turbo-rails' (GlobalID params included); the Jinja2 global renders
    a stream source whose name verifies with the cable's Turbo key, unescaped by
    autoescape; a cable with no key refuses."""
    jinja2 = pytest.importorskip("jinja2")
    assert turbo.stream_name(turbo.gid_param("app", "Room", 1), "messages") == (
        "Z2lkOi8vYXBwL1Jvb20vMQ:messages"
    )
    cable = Cable(streams_secret="s3cr3t")
    env = jinja2.Environment(autoescape=True)
    env.globals.update(turbo.template_globals(cable))
    html = env.from_string('{{ turbo_stream_from("room", 1, user_id=7) }}').render()
    signed = re.fullmatch(
        r'<turbo-cable-stream-source channel="Turbo::StreamsChannel" '
        r'signed-stream-name="([^"]+)" data-user-id="7"></turbo-cable-stream-source>',
        html,
    )
    assert signed is not None
    assert cable.stream_signers.turbo is not None
    assert cable.stream_signers.turbo.verify(signed.group(1)) == "room:1"
    with pytest.raises(ConfigurationError):
        turbo.template_globals(Cable())


DJANGO_SCRIPT = textwrap.dedent(
    """
    import django
    from django.conf import settings
    settings.configure(
        INSTALLED_APPS=["cablecar.contrib.django"],
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
        CABLECAR_SECRET_KEY_BASE="secret_key_base_value",
    )
    django.setup()
    from django.template import engines
    t = engines["django"].from_string('{% load cablecar %}{% turbo_stream_from "a" name %}')
    print(t.render({"name": "<b>&"}))
    """
)


def test_django_template_tag() -> None:
    """``{% load cablecar %}{% turbo_stream_from ... %}`` in a Django project signs with
    turbo-rails' key from ``CABLECAR_SECRET_KEY_BASE``, as a cable with the same
    ``secret_key_base`` verifies."""
    pytest.importorskip("django")
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_SCRIPT], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    signed = re.search(r'signed-stream-name="([^"]+)"', result.stdout)
    assert signed is not None, result.stdout
    verifier = Cable(secret_key_base="secret_key_base_value").stream_signers.turbo
    assert isinstance(verifier, StreamSigner)
    assert verifier.verify(signed.group(1)) == "a:<b>&"
