"""Signed streams: names signed like Rails' MessageVerifier (checked against Ruby's
ActiveSupport), the ``$pubsub`` and ``Turbo::StreamsChannel`` channels, and what forged
or hostile names get: a rejection, one log line, a server that goes on."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import shutil
import subprocess
from typing import Any

import orjson
import pytest

from cablecar import Cable, Connection, turbo
from cablecar.errors import ConfigurationError
from cablecar.signing import MAX_SIGNED_NAME, StreamSigner, turbo_keys

from .conftest import ConnectWS
from .test_history import ext_connect

SECRET = "s3cr3t"
SKB = "secret_key_base_value"
NAMES = [
    "chat/2024",
    "room:1:messages",
    "чат/1",
    'quote"and\\slash',
    "Z2lkOi8vYXBwL1Jvb20vMQ:messages",
]

RUBY = r"""
require "json"; require "openssl"
require "active_support"; require "active_support/message_verifier"; require "active_support/key_generator"
secret, skb, mine = ARGV[0], ARGV[1], JSON.parse(ARGV[2])
names = JSON.parse(STDIN.read)
salt = "turbo/signed_stream_verifier_key"
# Rails 7's KeyGenerator (hash_digest_class SHA256, the 7.0+ default) is this call;
# Debian's ActiveSupport 6.1 KeyGenerator always uses SHA1.
k256 = OpenSSL::PKCS5.pbkdf2_hmac(skb, salt, 1000, 64, OpenSSL::Digest::SHA256.new)
k1 = ActiveSupport::KeyGenerator.new(skb, iterations: 1000).generate_key(salt)
verifiers = {
  "pubsub" => ActiveSupport::MessageVerifier.new(secret, digest: "SHA256", serializer: JSON),
  "turbo_sha256" => ActiveSupport::MessageVerifier.new(k256, digest: "SHA256", serializer: JSON),
  "turbo_sha1" => ActiveSupport::MessageVerifier.new(k1, digest: "SHA256", serializer: JSON),
}
out = {}
verifiers.each do |kind, v|
  out[kind] = names.map { |n| v.generate(n) }
  out[kind + "_verified"] = mine[kind].map { |s| v.verified(s) }
end
puts JSON.generate(out)
"""


def signers() -> dict[str, StreamSigner]:
    k256, k1 = turbo_keys(SKB)
    return {
        "pubsub": StreamSigner(SECRET),
        "turbo_sha256": StreamSigner(k256),
        "turbo_sha1": StreamSigner(k1),
    }


@pytest.mark.skipif(shutil.which("ruby") is None, reason="ruby is not installed (make sysdeps)")
def test_signatures_match_ruby_activesupport() -> None:
    """Fixtures generated afresh by ActiveSupport's MessageVerifier and KeyGenerator
    (``$pubsub`` names, turbo-rails' SHA-256 and SHA-1 keys) equal cablecar's bytes,
    cablecar verifies Ruby's, and Ruby verifies cablecar's."""
    mine = {kind: [s.sign(n) for n in NAMES] for kind, s in signers().items()}
    result = subprocess.run(
        ["ruby", "-e", RUBY, SECRET, SKB, json.dumps(mine)],
        input=json.dumps(NAMES), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    ruby = json.loads(result.stdout)
    for kind, signer in signers().items():
        assert ruby[kind] == mine[kind], kind
        assert ruby[kind + "_verified"] == NAMES, kind
        assert [signer.verify(s) for s in ruby[kind]] == NAMES
    # the documented fixtures (reference §7.3, §7.4)
    assert mine["pubsub"][0] == (
        "ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c"
    )
    assert mine["turbo_sha256"][4].endswith(
        "--88be5f3b4150d14fb46fd9c71c980a0e2967418aca9e69ec1cca8e05a6397469"
    )
    assert mine["turbo_sha1"][4].endswith(
        "--ff053d8ce29ba1b39b0e0af6fddc669c3083927b803fce60a07cf8a3fd447334"
    )


def resign(encoded: str) -> str:
    """``encoded`` with a valid ``SECRET`` signature, whatever it holds."""
    return encoded + "--" + hmac.new(SECRET.encode(), encoded.encode(), hashlib.sha256).hexdigest()


def forged(secret: str = SECRET) -> dict[str, str]:
    """Names that must not verify with ``SECRET``."""
    good = StreamSigner(secret).sign("room/1")
    payload, digest = good.split("--")

    def signed_raw(raw: bytes) -> str:  # a valid signature over a payload that is no name
        return resign(base64.b64encode(raw).decode())

    return {
        "tampered": payload[:-2] + "yI=--" + digest,
        "truncated": good[:-1],
        "wrong_secret": StreamSigner("another secret").sign("room/1"),
        "uppercase_digest": payload + "--" + digest.upper(),
        "not_json": signed_raw(b"room/1"),
        "a_number": signed_raw(b"42"),
        "deep_json": signed_raw(b"[" * 100_000 + b"]" * 100_000),
        "empty_name": signed_raw(b'""'),
        "no_separator": payload + digest,
        "huge": "A" * (MAX_SIGNED_NAME + 1) + "--" + digest,
    }


def test_verify_refuses_every_forgery() -> None:
    """Tampered, truncated, wrong-secret, re-cased, non-JSON, non-string, deeply nested,
    empty, unseparated and over-long names all verify to ``None``; URL-safe Base64 of a
    real signature (Rails accepts it) verifies."""
    signer = StreamSigner(SECRET)
    for kind, name in forged().items():
        assert not signer.verify(name), kind
    for value in (None, 42, ["room/1"], {"a": 1}):
        assert signer.verify(value) is None
    name = "ü>?~" * 4  # Base64 of its JSON has "+" and "/"
    good = signer.sign(name)
    payload = good.split("--")[0]
    assert "+" in payload or "/" in payload
    urlsafe = payload.replace("+", "-").replace("/", "_")
    assert signer.verify(resign(urlsafe)) == name
    assert signer.verify(good) == name


def test_cable_needs_a_secret_to_sign() -> None:
    """Without ``streams_secret`` signing is a configuration error and ``$pubsub`` is not
    registered; with it (or ``public_streams``) it is; the secret never shows in repr."""
    with pytest.raises(ConfigurationError, match="streams_secret"):
        Cable().signed_stream_name("x")
    assert "$pubsub" not in Cable().channels
    assert "$pubsub" in Cable(public_streams=True).channels
    cable = Cable(streams_secret=SECRET, secret_key_base=SKB)
    assert set(cable.channels) == {"$pubsub", "Turbo::StreamsChannel"}
    assert SECRET not in repr(cable.config) and SKB not in repr(cable.config)
    assert cable.signed_stream_name("chat/2024").startswith("ImNoYXQvMjAyNCI=--42d0")


def ident(channel: str, **params: str) -> str:
    return orjson.dumps({"channel": channel, **params}).decode()


async def test_pubsub_signed_and_public_streams(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """A signed name confirms and receives broadcasts on the name; every forgery is
    rejected; ``stream_name`` is rejected unless ``public_streams``; a sorted-key and an
    insertion-order identifier are echoed byte for byte."""
    cable = Cable(Connection, streams_secret=SECRET)
    server = await cablecar_server(cable)
    ws = await ws_connect(server.url)
    signed = cable.signed_stream_name("room/1")
    good = ident("$pubsub", signed_stream_name=signed)
    assert (await ws.subscribe(good))["type"] == "confirm_subscription"
    for kind, name in forged().items():
        reply = await ws.subscribe(ident("$pubsub", signed_stream_name=name))
        assert reply["type"] == "reject_subscription", kind
    public = ident("$pubsub", stream_name="room/1")
    assert (await ws.subscribe(public))["type"] == "reject_subscription"
    await cable.broadcast("room/1", {"body": "hi"})
    assert await ws.recv_data() == {"identifier": good, "message": {"body": "hi"}}

    open_cable = Cable(Connection, streams_secret=SECRET, public_streams=True)
    open_server = await cablecar_server(open_cable)
    ws2 = await ws_connect(open_server.url)
    backwards = '{"stream_name":"room/2","channel":"$pubsub"}'
    for identifier in (public.replace("room/1", "room/2"), backwards):
        assert await ws2.subscribe(identifier) == {
            "identifier": identifier,
            "type": "confirm_subscription",
        }
    await open_cable.broadcast("room/2", "x")
    got = {(await ws2.recv_data())["identifier"] for _ in range(2)}
    assert got == {public.replace("room/1", "room/2"), backwards}


async def test_turbo_streams_channel_with_rails_keys(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """``Turbo::StreamsChannel`` accepts names signed with either key turbo-rails derives
    from ``secret_key_base`` (and not the ``$pubsub`` secret's); Turbo HTML broadcast
    with ``turbo.broadcast`` arrives as a JSON string."""
    cable = Cable(Connection, streams_secret=SECRET, secret_key_base=SKB)
    server = await cablecar_server(cable)
    ws = await ws_connect(server.url)
    k256, k1 = turbo_keys(SKB)
    name = "Z2lkOi8vYXBwL1Jvb20vMQ:messages"
    idents = [ident("Turbo::StreamsChannel", signed_stream_name=StreamSigner(k).sign(name))
              for k in (k256, k1)]  # fmt: skip
    for identifier in idents:
        assert (await ws.subscribe(identifier))["type"] == "confirm_subscription"
    foreign = ident("Turbo::StreamsChannel", signed_stream_name=cable.signed_stream_name(name))
    assert (await ws.subscribe(foreign))["type"] == "reject_subscription"
    await turbo.broadcast(
        cable, ("Z2lkOi8vYXBwL1Jvb20vMQ", "messages"), turbo.append("messages", "<b>hi</b>")
    )
    html = '<turbo-stream action="append" target="messages"><template>&lt;b&gt;hi&lt;/b&gt;</template></turbo-stream>'
    frames = [await ws.recv_data() for _ in idents]
    assert sorted(f["identifier"] for f in frames) == sorted(idents)
    assert all(f["message"] == html for f in frames)


async def test_signed_stream_presence_and_whisper_flags(
    cablecar_server: Any, ws_connect: ConnectWS
) -> None:
    """Signed ``$pubsub`` streams carry presence, whisper only with ``streams_whisper``;
    public streams carry both (AnyCable's defaults)."""
    for whisper in (False, True):
        cable = Cable(
            Connection, streams_secret=SECRET, public_streams=True, streams_whisper=whisper,
            history=True,
        )  # fmt: skip
        server = await cablecar_server(cable)
        a, _ = await ext_connect(ws_connect, server.url)
        b, _ = await ext_connect(ws_connect, server.url)
        signed = ident("$pubsub", signed_stream_name=cable.signed_stream_name("s"))
        public = ident("$pubsub", stream_name="p")
        for ws in (a, b):
            for identifier in (signed, public):
                assert (await ws.subscribe(identifier))["type"] == "confirm_subscription"
        for identifier in (signed, public):
            await a.send({"command": "whisper", "identifier": identifier, "data": {"w": 1}})
            await a.send({
                "command": "join", "identifier": identifier,
                "presence": {"id": "u1", "info": {"name": "A"}},
            })  # fmt: skip
        got = await b.quiet(0.5)
        whispers = {f["identifier"] for f in got if f.get("message") == {"w": 1}}
        joins = {f["identifier"] for f in got if f.get("message", {}).get("type") == "join"}
        assert whispers == ({signed, public} if whisper else {public})
        assert joins == {signed, public}


async def test_forged_name_flood_is_bounded(
    cablecar_server: Any, ws_connect: ConnectWS, caplog: pytest.LogCaptureFixture
) -> None:
    """300 subscribes with bad and huge (~900 KB) names are each rejected, one with a deeply
    nested identifier ignored, all logged in at most two lines; the same connection then subscribes with a good name
    and another client is served."""
    cable = Cable(Connection, streams_secret=SECRET, max_commands_per_second=10_000,
                  command_burst=10_000)  # fmt: skip
    server = await cablecar_server(cable)
    ws = await ws_connect(server.url)
    bad = list(forged().values())
    huge = ident("$pubsub", signed_stream_name="A" * 900_000 + "--" + "0" * 64)
    deep = '{"channel":"$pubsub","signed_stream_name":' + "[" * 5000 + "]" * 5000 + "}"
    caplog.set_level(logging.WARNING, logger="cablecar")
    identifiers = [
        ident("$pubsub", signed_stream_name=bad[i % len(bad)] if i % 3 else f"{i}--{'0' * 64}")
        for i in range(300)
    ]
    for batch in (identifiers[i : i + 50] for i in range(0, 300, 50)):
        # in batches: the client reads its replies (its library stops reading at 16)
        for identifier in batch:
            await ws.send({"command": "subscribe", "identifier": identifier})
        for identifier in batch:
            frame = await ws.recv_data()
            assert frame == {"identifier": identifier, "type": "reject_subscription"}
    assert (await ws.subscribe(huge))["type"] == "reject_subscription"
    await ws.send({"command": "subscribe", "identifier": deep})  # not JSON we decode
    good = ident("$pubsub", signed_stream_name=cable.signed_stream_name("ok"))
    assert (await ws.subscribe(good))["type"] == "confirm_subscription"
    other = await ws_connect(server.url)
    assert (await other.subscribe(good))["type"] == "confirm_subscription"
    lines = [r for r in caplog.records if "subscription rejected" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
