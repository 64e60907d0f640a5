"""`cablecar serve --static DIR`'s handler (:mod:`cablecar.static_files`): the files of DIR,
the package's cablecar.js, and nothing outside DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cablecar.http import Request
from cablecar.static_files import static_handler


async def test_serves_the_folder_and_the_client_and_nothing_outside(tmp_path: Path) -> None:
    """/ is index.html, nested files are served with their type, /cablecar.js is the
    package's client; ../, absolute paths, symlinks out of the folder, folders and other
    methods get nothing (404 from the server)."""
    public = tmp_path / "public"
    (public / "js").mkdir(parents=True)
    (public / "index.html").write_text("<p>hi</p>")
    (public / "js" / "app.js").write_text("export {}")
    (tmp_path / "secret.txt").write_text("key")
    os.symlink(tmp_path / "secret.txt", public / "link.txt")
    handler = static_handler(public)

    async def get(path: str, method: str = "GET") -> tuple[int, bytes, str] | None:
        response = await handler(Request(method, path))
        return None if response is None else (response.status, response.body, response.content_type)

    assert await get("/") == (200, b"<p>hi</p>", "text/html; charset=utf-8")
    served = await get("/js/app.js")
    assert served is not None and served[1] == b"export {}" and "javascript" in served[2]
    client = await get("/cablecar.js")
    assert client is not None and b"export function createConsumer" in client[1]
    for path in ("/../secret.txt", "/js/../../secret.txt", "//etc/passwd", "/link.txt", "/js",
                 "/missing.html", "/a\x00b", "/" + "x" * 5000):  # fmt: skip
        assert await get(path) is None, path
    assert await get("/", "POST") is None
    with pytest.raises(NotADirectoryError):
        static_handler(tmp_path / "secret.txt")
