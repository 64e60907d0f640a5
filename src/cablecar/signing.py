"""Signed stream names, byte-compatible with Rails' ``MessageVerifier``.

A page may subscribe to a stream only when the server signed its name: the name
travels as ``Base64(JSON(name)) + "--" + hex(HMAC-SHA256(key, base64))``, the format of
ActiveSupport's ``MessageVerifier(key, digest: "SHA256", serializer: JSON)``, which
AnyCable's ``$pubsub`` channel and turbo-rails' ``Turbo::StreamsChannel`` both use. A
name signed here verifies in Rails and AnyCable, and the reverse.

Example::

    >>> signer = StreamSigner("s3cr3t")
    >>> signer.sign("chat/2024")
    'ImNoYXQvMjAyNCI=--42d0afce518d9b9586c82df74dace6e0791f2559caf8f352747f98f8e2d7f56c'
    >>> signer.verify(signer.sign("chat/2024"))
    'chat/2024'
    >>> signer.verify("ImNoYXQvMjAyNCI=--0000") is None
    True

turbo-rails derives its key from the Rails app's ``secret_key_base``;
:func:`turbo_keys` derives the same keys, so names signed by a Rails app verify here
with no extra Rails configuration.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from . import _json

__all__ = [
    "MAX_SIGNED_NAME",
    "PUBSUB_CHANNEL",
    "TURBO_CHANNEL",
    "TURBO_KEY_SALT",
    "StreamSigner",
    "StreamSigners",
    "pubsub_signer",
    "turbo_keys",
    "turbo_signer",
]

#: The name clients subscribe to for signed and public streams (AnyCable's ``$pubsub``).
PUBSUB_CHANNEL = "$pubsub"
#: turbo-rails' channel, which ``<turbo-cable-stream-source>`` subscribes to.
TURBO_CHANNEL = "Turbo::StreamsChannel"

#: Longest signed name verified; longer ones are refused without hashing them.
MAX_SIGNED_NAME = 8 * 1024

#: The salt turbo-rails passes to ``Rails.application.key_generator.generate_key``.
TURBO_KEY_SALT = b"turbo/signed_stream_verifier_key"

_DIGEST_HEX = 64  # hex SHA-256
_SEPARATOR = "--"


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        return secret.encode()
    if isinstance(secret, bytes):
        return secret
    raise TypeError(f"a signing secret is str or bytes, not {type(secret).__name__}")


def turbo_keys(secret_key_base: str | bytes) -> tuple[bytes, bytes]:
    """turbo-rails' default verifier keys for a Rails ``secret_key_base``.

    ``Rails.application.key_generator.generate_key("turbo/signed_stream_verifier_key")``:
    64 bytes of PBKDF2-HMAC with 1,000 iterations, over SHA-256 (apps on Rails 7.0+
    framework defaults) and over SHA-1 (older apps); returned in that order.
    """
    base = _key(secret_key_base)
    return (
        hashlib.pbkdf2_hmac("sha256", base, TURBO_KEY_SALT, 1000, 64),
        hashlib.pbkdf2_hmac("sha1", base, TURBO_KEY_SALT, 1000, 64),
    )


class StreamSigner:
    """Signs stream names with one key and verifies them against one or more.

    Args:
        key: the signing key (``streams_secret``); also the first verifying key.
        also_verify: further keys a name may be signed with (rotation, or the SHA-1
            Turbo key of an older Rails app).
    """

    __slots__ = ("_keys",)

    def __init__(self, key: str | bytes, also_verify: Iterable[str | bytes] = ()) -> None:
        self._keys = [_key(key), *(_key(k) for k in also_verify)]
        if not self._keys[0]:
            raise ValueError("a signing secret must not be empty")

    def sign(self, name: str) -> str:
        """The signed form of ``name``, as Rails' ``MessageVerifier#generate`` makes it
        (UTF-8 JSON, standard Base64 with padding, lowercase hex digest)."""
        if not isinstance(name, str):
            raise TypeError(f"stream names are strings, not {type(name).__name__}")
        encoded = base64.b64encode(_json.dumps(name)).decode("ascii")  # UTF-8, as Ruby
        return f"{encoded}{_SEPARATOR}{self._digest(self._keys[0], encoded)}"

    def verify(self, signed: object) -> str | None:
        """The stream name inside ``signed``, or ``None`` when it is not a string
        signed by one of the keys, or does not carry a JSON string.

        Like Rails, the separator is found by position (so URL-safe Base64 containing
        ``--`` verifies) and both Base64 alphabets are accepted; digests are compared in
        constant time. Names longer than :data:`MAX_SIGNED_NAME` are refused unhashed.
        """
        if not isinstance(signed, str) or len(signed) > MAX_SIGNED_NAME:
            return None
        cut = len(signed) - _DIGEST_HEX - len(_SEPARATOR)
        if cut <= 0 or signed[cut : cut + len(_SEPARATOR)] != _SEPARATOR:
            return None
        encoded, digest = signed[:cut], signed[cut + len(_SEPARATOR) :]
        if not encoded.isascii() or not digest.isascii():
            return None
        if not any(hmac.compare_digest(self._digest(key, encoded), digest) for key in self._keys):
            return None
        try:
            text = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
            value = _json.loads(text)
        except (binascii.Error, ValueError):  # JSONDecodeError too (deep nesting included)
            return None
        return value if isinstance(value, str) else None

    @staticmethod
    def _digest(key: bytes, encoded: str) -> str:
        return hmac.new(key, encoded.encode("ascii"), hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return f"<StreamSigner keys={len(self._keys)}>"


def pubsub_signer(streams_secret: str | bytes | None) -> StreamSigner | None:
    """The signer of ``$pubsub`` names: ``streams_secret``, or none."""
    return StreamSigner(streams_secret) if streams_secret else None


def turbo_signer(
    turbo_streams_secret: str | bytes | None,
    secret_key_base: str | bytes | None,
    streams_secret: str | bytes | None,
) -> StreamSigner | None:
    """The signer of ``Turbo::StreamsChannel`` names.

    It signs with the first of: ``turbo_streams_secret`` (turbo-rails'
    ``config.turbo.signed_stream_verifier_key``), the SHA-256 key derived from
    ``secret_key_base``, ``streams_secret`` (AnyCable's fallback). It verifies against
    the explicit key and both keys derived from ``secret_key_base`` (SHA-256 and the
    older SHA-1), or ``streams_secret`` when neither is given.
    """
    keys: list[str | bytes] = []
    if turbo_streams_secret:
        keys.append(turbo_streams_secret)
    if secret_key_base:
        keys.extend(turbo_keys(secret_key_base))
    if not keys and streams_secret:
        keys.append(streams_secret)
    return StreamSigner(keys[0], keys[1:]) if keys else None


@dataclass(frozen=True, slots=True)
class StreamSigners:
    """A cable's signers: ``pubsub`` for ``$pubsub``, ``turbo`` for
    ``Turbo::StreamsChannel``; ``None`` where no secret is set."""

    pubsub: StreamSigner | None = None
    turbo: StreamSigner | None = None

    @classmethod
    def from_secrets(
        cls,
        streams_secret: str | bytes | None = None,
        turbo_streams_secret: str | bytes | None = None,
        secret_key_base: str | bytes | None = None,
    ) -> StreamSigners:
        """Both signers from the three secrets (see :func:`turbo_signer`)."""
        return cls(
            pubsub_signer(streams_secret),
            turbo_signer(turbo_streams_secret, secret_key_base, streams_secret),
        )
