"""Profile cablecar's fan-out with py-spy: where the server's time goes at N subscribers.

Starts a fresh cablecar server (or the floor, ``--server floor``, for comparison), drives a fan-out with the anchors' load client (10,000
subscribers by default), and samples the server with ``py-spy record`` during the
back-to-back burst only (from the client's "latency:" line to its "throughput:" line).
Writes to ``benchmarks/results/``:

- ``profile-fanout-<time>.collapsed``: collapsed stacks (one ``frame;frame;... count`` per line;
  open in https://www.speedscope.app or feed to flamegraph.pl / inferno),
- ``profile-fanout-<time>.svg``: a flame graph rendered from them,
- ``profile-fanout-<time>-top.txt``: the top functions by own and by inclusive samples,

and prints the top table. py-spy comes with the ``dev`` extra (``make setup``).

    .venv/bin/python benchmarks/profile_fanout.py --clients 10000 --burst 50 [--native]

``--native`` adds C frames (uvloop, the ``write`` syscall); py-spy then pauses the server for
each sample, so throughput in that run is lower.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import (
    CABLECAR_KINDS,
    REPO,
    RESULTS_DIR,
    Server,
    anchors_home,
    last_json_line,
    node_env,
    raise_nofile_limit,
    run_streaming,
)

__all__ = ["flamegraph_svg", "main", "parse_collapsed", "top_table"]


_LINENO = re.compile(r"^(.*) \((.*?):\d+\)$")


def parse_collapsed(text: str, lines: bool = True) -> Counter[tuple[str, ...]]:
    """Collapsed stacks (``a;b;c 12`` per line) -> Counter of stack tuples (root first).

    Args:
        text: py-spy's ``--format raw`` output.
        lines: keep line numbers in frame names; without them, samples from different lines
            of one function (py-spy reports C frames by line even with ``--function``) merge.
    """
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if not lines:
            frames = [_LINENO.sub(r"\1 (\2)", f) for f in frames]
        stacks[tuple(frames)] += int(count)
    return stacks


def _short(frame: str) -> str:
    # py-spy frames look like "send_frame (cablecar/transports/standalone/server.py:123)"
    return frame.replace(str(REPO) + "/", "").replace("/src/cablecar/", "/cablecar/")


def top_table(stacks: Counter[tuple[str, ...]], limit: int = 30) -> str:
    """The top functions by own samples (the leaf) and by inclusive samples (anywhere on stack)."""
    total = sum(stacks.values()) or 1
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for st, n in stacks.items():
        if not st:
            continue
        own[st[-1]] += n
        for f in set(st):
            incl[f] += n
    lines = [
        f"{total} samples",
        "",
        "own %   incl %  function (own time: the frame on top of the stack)",
    ]
    for f, n in own.most_common(limit):
        lines.append(f"{100 * n / total:5.1f}  {100 * incl[f] / total:6.1f}   {_short(f)}")
    lines += ["", "incl %  own %   function (inclusive: anywhere on the stack)"]
    for f, n in incl.most_common(limit):
        lines.append(f"{100 * n / total:5.1f}  {100 * own[f] / total:6.1f}   {_short(f)}")
    return "\n".join(lines)


def flamegraph_svg(stacks: Counter[tuple[str, ...]], title: str, width: int = 1400) -> str:
    """A plain SVG flame graph (root at the bottom; hover a box for its name and share)."""
    tree: dict[str, Any] = {"n": 0, "c": {}}
    for st, n in stacks.items():
        node = tree
        node["n"] += n
        for f in st:
            node = node["c"].setdefault(f, {"n": 0, "c": {}})
            node["n"] += n
    total = tree["n"] or 1

    def depth(node: dict[str, Any]) -> int:
        return 1 + max((depth(c) for c in node["c"].values()), default=0)

    row = 16
    levels = depth(tree)
    height = row * levels + 40
    boxes: list[str] = []

    def walk(node: dict[str, Any], x: float, level: int) -> None:
        for name, child in sorted(node["c"].items()):
            w = child["n"] / total * width
            if w >= 0.5:
                y = height - 10 - row * (level + 1)
                hue = 10 + (hash(name) % 50)
                label = html.escape(_short(name))
                tip = f"{label} ({child['n']} samples, {100 * child['n'] / total:.1f}%)"
                text = label[: int(w / 7)] if w > 25 else ""
                boxes.append(
                    f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y}" width="{w:.1f}" '
                    f'height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
                    f'<text x="{x + 3:.1f}" y="{y + 11}">{text}</text></g>'
                )
                walk(child, x, level + 1)
            x += w

    walk(tree, 0.0, 0)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="monospace" font-size="11">'
        f'<text x="4" y="16" font-size="14">{html.escape(title)}</text>' + "".join(boxes) + "</svg>"
    )


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--server",
        default="cablecar",
        choices=(*CABLECAR_KINDS, "floor"),
        help="cablecar kind to profile (or the floor, for comparison)",
    )
    ap.add_argument("--clients", type=int, default=10000)
    ap.add_argument("--broadcasts", type=int, default=5)
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--lines", action="store_true", help="keep line numbers (default: functions)")
    ap.add_argument("--native", action="store_true", help="include C frames (uvloop, orjson)")
    a = ap.parse_args(argv)
    pyspy = shutil.which("py-spy", path=str(REPO / ".venv" / "bin")) or shutil.which("py-spy")
    if not pyspy:
        print("py-spy not found: .venv/bin/pip install py-spy", file=sys.stderr)
        return 2
    raise_nofile_limit()
    A = anchors_home()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = RESULTS_DIR / f"profile-fanout-{stamp}"
    raw = base.with_suffix(".collapsed")
    spy: list[subprocess.Popen[bytes]] = []
    with Server(a.server) as srv:
        time.sleep(1)

        def on_line(line: str) -> None:
            if "] latency:" in line and not spy:
                cmd = [pyspy, "record", "--pid", str(srv.pids()[0]), "--rate", str(a.rate)]
                cmd += ["--format", "raw", "--output", str(raw)]
                if not a.lines:
                    cmd.append("--function")
                # --native needs to pause the process for each sample; otherwise don't
                cmd.append("--native" if a.native else "--nonblocking")
                if "workers" in srv.kind:
                    cmd.append("--subprocesses")
                spy.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            elif "] throughput:" in line and spy:
                spy[0].send_signal(signal.SIGINT)

        out = run_streaming(
            [
                str(A / "bench" / "run.sh"),
                "--url",
                srv.url,
                "--clients",
                str(a.clients),
                "--broadcasts",
                str(a.broadcasts),
                "--burst",
                str(a.burst),
                "--concurrency",
                "50",
                "--sources",
                "8",
                "--server-pid",
                ",".join(map(str, srv.pids())),
            ],
            on_line,
            timeout=1200,
            env=node_env(),
            prefix=f"[profile {a.server} N={a.clients}] ",
        )
        if spy:
            try:
                _, err = spy[0].communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy[0].kill()
                _, err = spy[0].communicate()
            if err:
                sys.stderr.write(err.decode(errors="replace")[-2000:])
    h = last_json_line(out)
    if not raw.exists():
        print("py-spy wrote no profile (ptrace not permitted?)", file=sys.stderr)
        return 1
    stacks = parse_collapsed(raw.read_text(), lines=a.lines)
    thr = h.get("throughput") or {}
    title = (
        f"{a.server} fan-out burst, {h.get('subscribed')} subscribers, "
        f"{thr.get('delivered')} deliveries at {thr.get('deliveries_per_s')}/s ({stamp})"
    )
    base.with_suffix(".svg").write_text(flamegraph_svg(stacks, title))
    top = title + "\n" + top_table(stacks)
    Path(str(base) + "-top.txt").write_text(top + "\n")
    summary = {"profile": str(raw), "svg": str(base.with_suffix(".svg")), "harness": h}
    Path(str(base) + ".json").write_text(json.dumps(summary) + "\n")
    print(top)
    print(f"\nwrote {raw}, {base.with_suffix('.svg')}, {base}-top.txt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
