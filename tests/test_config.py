"""Cable settings: every ``CableConfig`` field is a typed keyword of ``Cable(...)``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from cablecar import Cable, CableConfig
from cablecar.cable import CableSettings


def test_every_config_field_is_a_typed_cable_keyword() -> None:
    """CableSettings (the type of Cable's keywords) lists exactly CableConfig's fields,
    with the same types."""
    fields = {f.name: f.type for f in dataclasses.fields(CableConfig)}
    hints = typing.get_type_hints(CableSettings)
    config_hints = typing.get_type_hints(CableConfig)
    assert set(hints) == set(fields)
    assert {name: hints[name] for name in fields} == {name: config_hints[name] for name in fields}


def test_a_misspelt_setting_is_a_type_error_naming_the_valid_ones() -> None:
    """Cable(max_mesage_size=...) raises TypeError listing the settings there are."""
    with pytest.raises(TypeError, match="unknown Cable setting: max_mesage_size") as info:
        Cable(max_mesage_size=1024)  # type: ignore[call-arg]
    assert "max_message_size" in str(info.value)


def test_settings_override_a_config() -> None:
    """Keyword settings override the fields of a given config; the rest is kept."""
    cable = Cable(config=CableConfig(max_subscriptions=3, ping_interval=9.0), ping_interval=1.0)
    assert (cable.config.max_subscriptions, cable.config.ping_interval) == (3, 1.0)


def test_mypy_rejects_a_misspelt_or_mistyped_setting(tmp_path: Path) -> None:
    """A user's type checker catches a wrong setting name or value type."""
    user = tmp_path / "user_app.py"
    user.write_text(
        "from cablecar import Cable\n"
        "Cable(max_mesage_size=1024)\n"
        'Cable(max_message_size="1MB")\n'
        "Cable(max_message_size=1024, ping_interval=2.5)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(user)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = result.stdout
    assert 'Unexpected keyword argument "max_mesage_size"' in out, out
    assert 'Argument "max_message_size" to "Cable" has incompatible type "str"' in out, out
    assert "user_app.py:4" not in out, out
