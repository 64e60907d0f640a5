"""Turn a run's JSON lines into markdown: absolute figures, ratios, and every target of issue 9.

    .venv/bin/python benchmarks/report.py benchmarks/results/run-20250101-120000.jsonl

Ratios compare servers measured in the same run (same machine, same load client). A target is
"met", "NOT met", or "n/a" with the reason (a server or size missing, or a run that did not
count every delivery: a figure from an incomplete run is never used to claim a target).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["NAMES", "Target", "load", "render", "targets"]

NAMES = {
    "cablecar": "cablecar (memory)",
    "cablecar-redis": "cablecar (Redis)",
    "cablecar-history": "cablecar, history=True",
    "cablecar-redis-history": "cablecar (Redis), history=True",
    "cablecar-nometrics": "cablecar, metrics_path=None",
    "cablecar-workers2-redis": "cablecar --workers 2 (Redis)",
    "floor": "Python floor (uvloop, frame once)",
    "node": "Node ws",
    "rails-async": "Rails 6.1 Action Cable (async)",
    "rails-redis": "Rails 6.1 Action Cable (Redis)",
    "django-memory": "Django Channels 4 (in-memory layer)",
    "django-redis": "Django Channels 4 (Redis layer)",
}
ORDER = list(NAMES)
# cablecar kind -> (its Rails peer, its Django peer): memory compares with memory, Redis with Redis
PEERS = {
    "cablecar": ("rails-async", "django-memory"),
    "cablecar-redis": ("rails-redis", "django-redis"),
    "cablecar-workers2-redis": ("rails-redis", "django-redis"),
}
TARGET_KINDS = ("cablecar", "cablecar-redis")
TIMES = "\N{MULTIPLICATION SIGN}"
RETAINED_MAX = 0.20  # "memory back near baseline": at most this share of the idle growth kept


def load(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read result records (one JSON object per line) from the given files."""
    out: list[dict[str, Any]] = []
    for p in paths:
        for line in Path(p).read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                out.append(json.loads(line))
    return out


class Table:
    """Results indexed by (scenario, server, size); repeated runs keep every record."""

    def __init__(self, records: Sequence[dict[str, Any]]) -> None:
        self.rows: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
        self.meta = [r for r in records if r.get("scenario") == "meta"]
        for r in records:
            if r.get("scenario") not in (None, "meta"):
                self.rows[(r["scenario"], r.get("server", "?"), int(r.get("clients") or 0))].append(
                    r
                )

    def get(self, scenario: str, server: str, size: int | None = None) -> list[dict[str, Any]]:
        """Records for this scenario and server (at ``size``, or at the largest size run)."""
        if size is None:
            sizes = self.sizes(scenario, server)
            if not sizes:
                return []
            size = sizes[-1]
        return self.rows.get((scenario, server, size), [])

    def sizes(self, scenario: str, server: str | None = None) -> list[int]:
        """Sizes run for a scenario (for one server, or any)."""
        return sorted({n for (s, k, n) in self.rows if s == scenario and server in (None, k)})

    def servers(self, scenario: str) -> list[str]:
        """Servers run for a scenario, in display order."""
        ks = {k for (s, k, _) in self.rows if s == scenario}
        return sorted(ks, key=lambda k: (ORDER.index(k) if k in ORDER else 99, k))


def med(rs: Sequence[dict[str, Any]], key: str, complete_only: bool = True) -> float | None:
    """Median of a numeric field over records (only complete runs, unless told otherwise)."""
    xs = [
        r[key]
        for r in rs
        if isinstance(r.get(key), (int, float)) and (r.get("complete") or not complete_only)
    ]
    return statistics.median(xs) if xs else None


def fmt(x: float | None, nd: int = 0) -> str:
    """A number with thousands separators, or '-'."""
    return "-" if x is None else f"{x:,.{nd}f}"


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def _complete(rs: Sequence[dict[str, Any]]) -> bool:
    return any(r.get("complete") for r in rs)


def _why_missing(t: Table, scenario: str, kind: str, size: int | None) -> str:
    rs = t.get(scenario, kind, size)
    where = f"{kind}" + (f" N={size:,}" if size else "")
    if not rs:
        return f"n/a: {where} not run"
    probs = "; ".join(p for r in rs for p in (r.get("problems") or [r.get("error", "failed")]))
    return f"n/a: {where} incomplete ({probs[:120]})"


@dataclass
class Target:
    """One target line: what, for which server and size, the figure, the threshold, status."""

    name: str
    kind: str
    size: str
    measured: str
    threshold: str
    status: str


def _check(
    t: Table,
    name: str,
    kind: str,
    scenario: str,
    size: int | None,
    value: float | None,
    *,
    threshold: float,
    at_most: bool,
    unit: str,
    needs: Sequence[tuple[str, str, int | None]],
    shown: str | None = None,
    thr_text: str | None = None,
) -> Target:
    thr = thr_text or _thr(threshold, at_most, unit)
    caveats = []
    for sc, k, n in needs:
        rs = t.get(sc, k, n)
        if not rs or (k in PEERS and not _complete(rs)):
            # cablecar's own figures count only from runs that delivered everything
            return Target(name, kind, _size(size), "-", thr, _why_missing(t, sc, k, n))
        if not _complete(rs):
            # an anchor that failed its own run still has a rate; say so beside the verdict
            caveats.append(f"{k} run incomplete")
    if value is None:
        return Target(name, kind, _size(size), "-", thr, "n/a: no figure")
    ok = value <= threshold if at_most else value >= threshold
    measured = shown if shown is not None else f"{value:,.2f}{unit}"
    status = "met" if ok else "NOT met"
    if caveats:
        status += f" ({'; '.join(caveats)})"
    return Target(name, kind, _size(size), measured, thr, status)


def _size(n: int | None) -> str:
    return "-" if not n else f"{n:,}"


def _thr(x: float, at_most: bool, unit: str) -> str:
    return ("≤ " if at_most else "≥ ") + f"{x:g}{unit}"


def _fig(t: Table, scenario: str, server: str, size: int | None, key: str) -> float | None:
    """A server's figure: cablecar's from complete runs only; an anchor's from any run."""
    return med(t.get(scenario, server, size), key, complete_only=server in PEERS)


def _last_size(t: Table, scenario: str, kind: str) -> int | None:
    sizes = t.sizes(scenario, kind)
    return sizes[-1] if sizes else None


def _fanout_targets(t: Table, kind: str) -> list[Target]:
    rails, django = PEERS[kind]
    out: list[Target] = []
    sizes = t.sizes("fanout")

    def fig(server: str, n: int, key: str) -> float | None:
        return _fig(t, "fanout", server, n, key)

    for n in sizes:
        cpu = ratio(
            fig(kind, n, "server_cpu_us_per_delivery"),
            fig("floor", n, "server_cpu_us_per_delivery"),
        )
        out.append(_check(
            t, "CPU per delivery ÷ floor", kind, "fanout", n, cpu, threshold=1.25, at_most=True,
            unit=TIMES, needs=[("fanout", kind, n), ("fanout", "floor", n)],
        ))  # fmt: skip
    for n in sizes:
        for peer, thr in (("floor", 0.8), (rails, 10.0), (django, 30.0)):
            tp = ratio(fig(kind, n, "deliveries_per_s"), fig(peer, n, "deliveries_per_s"))
            out.append(_check(
                t, f"fan-out throughput ÷ {peer}", kind, "fanout", n, tp, threshold=thr,
                at_most=False, unit=TIMES, needs=[("fanout", kind, n), ("fanout", peer, n)],
            ))  # fmt: skip
    for n in sizes:
        p99 = ratio(fig(kind, n, "p99_ms"), fig("floor", n, "p99_ms"))
        out.append(_check(
            t, "delivery p99 ÷ floor", kind, "fanout", n, p99, threshold=1.5, at_most=True,
            unit=TIMES, needs=[("fanout", kind, n), ("fanout", "floor", n)],
        ))  # fmt: skip
    return out


def _memory_targets(t: Table, kind: str) -> list[Target]:
    n = _last_size(t, "idle_memory", kind)
    rs = t.get("idle_memory", kind, n)
    note = "" if n == 10000 else " (run size, not 10,000)"
    out = [_check(
        t, "kB per idle subscribed connection" + note, kind, "idle_memory", n,
        med(rs, "kb_per_conn"), threshold=8, at_most=True, unit=" kB",
        needs=[("idle_memory", kind, n)],
    )]  # fmt: skip
    frac = med(rs, "retained_fraction")
    retained = med(rs, "retained_kb")
    shown = None
    if frac is not None and retained is not None:
        # context: a second wave tells reuse from a leak; the floor shows what CPython gives back
        shown = f"{frac:.0%} ({retained / 1024:,.1f} MB)"
        waves = [(r.get("second_wave") or {}).get("growth_over_first_kb") for r in rs]
        growths = [x for x in waves if isinstance(x, (int, float))]
        if growths:
            shown += f"; 2nd wave {statistics.median(growths) / 1024:+,.1f} MB"
        floor = _fig(t, "idle_memory", "floor", n, "retained_fraction")
        if floor is not None:
            shown += f"; floor {floor:.0%}"
    out.append(_check(
        t, "RSS kept after disconnect (share of idle growth)", kind, "idle_memory", n, frac,
        threshold=RETAINED_MAX, at_most=True, unit="", needs=[("idle_memory", kind, n)],
        shown=shown, thr_text=f"≤ {RETAINED_MAX:.0%}",
    ))  # fmt: skip
    return out


def _connect_target(t: Table, kind: str) -> Target:
    n = _last_size(t, "connect_storm", kind)
    rate = ratio(
        _fig(t, "connect_storm", kind, n, "connect_per_s"),
        _fig(t, "connect_storm", "floor", n, "connect_per_s"),
    )
    return _check(
        t, "connect+subscribe rate ÷ floor", kind, "connect_storm", n, rate, threshold=0.8,
        at_most=False, unit=TIMES,
        needs=[("connect_storm", kind, n), ("connect_storm", "floor", n)],
    )  # fmt: skip


def _scaleout_target(t: Table) -> Target:
    sizes = t.sizes("fanout")
    n = sizes[-1] if sizes else None
    two, one = "cablecar-workers2-redis", "cablecar-redis"
    gain = ratio(
        _fig(t, "fanout", two, n, "deliveries_per_s"),
        _fig(t, "fanout", one, n, "deliveries_per_s"),
    )
    shown = None
    if gain is not None:
        # What bounds it: the load client and the server share two cores. Show how busy
        # both were during the two-worker burst (100 % = one core).
        busy = [_fig(t, "fanout", two, n, k) for k in ("server_cpu_pct", "client_cpu_pct")]
        shown = f"{gain:.2f}{TIMES}"
        if None not in busy:
            shown += f" (burst CPU: server {busy[0]:.0f} % + client {busy[1]:.0f} % of 200 %)"
    return _check(
        t, "--workers 2 throughput ÷ 1 worker (Redis)", two, "fanout", n, gain, threshold=1.6,
        at_most=False, unit=TIMES, needs=[("fanout", two, n), ("fanout", one, n)],
        shown=shown,
    )  # fmt: skip


def _roundtrip_targets(t: Table, kind: str) -> list[Target]:
    rails = PEERS[kind][0]
    mine = _fig(t, "roundtrip", kind, None, "p99_ms")
    theirs = _fig(t, "roundtrip", rails, None, "p99_ms")
    shown = None if mine is None or theirs is None else f"{mine:.3f} / {theirs:.3f} ms"
    return [
        _check(
            t, f"action round trip p99 ÷ {rails}", kind, "roundtrip", None, ratio(mine, theirs),
            threshold=1.0, at_most=True, unit=TIMES,
            needs=[("roundtrip", kind, None), ("roundtrip", rails, None)], shown=shown,
        ),
        _check(
            t, "action round trip p99 (aim)", kind, "roundtrip", None, mine, threshold=1.0,
            at_most=True, unit=" ms", needs=[("roundtrip", kind, None)],
        ),
    ]  # fmt: skip


def targets(t: Table) -> list[Target]:
    """Every target of issue 9, evaluated on this run (memory adapter and Redis)."""
    out: list[Target] = []
    for kind in TARGET_KINDS:
        out += _fanout_targets(t, kind)
    for kind in TARGET_KINDS:
        out += _memory_targets(t, kind)
    out += [_connect_target(t, kind) for kind in TARGET_KINDS]
    out.append(_scaleout_target(t))
    for kind in TARGET_KINDS:
        out += _roundtrip_targets(t, kind)
    return out


def _mark(rs: Sequence[dict[str, Any]]) -> str:
    if not rs:
        return ""
    if _complete(rs):
        return "ok"
    probs = "; ".join(p for r in rs for p in (r.get("problems") or [r.get("error", "failed")]))
    return "INCOMPLETE: " + probs[:100]


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _m(rs: Sequence[dict[str, Any]], key: str, nd: int = 0) -> str:
    """Median of a field over every run, complete or not, formatted."""
    return fmt(med(rs, key, complete_only=False), nd)


def _fanout(t: Table) -> list[str]:
    rows = []
    for n in t.sizes("fanout"):
        for k in t.servers("fanout"):
            rs = t.get("fanout", k, n)
            if rs:
                rows.append([
                    NAMES.get(k, k), f"{n:,}", f"{_m(rs, 'p50_ms', 1)} / {_m(rs, 'p99_ms', 1)}",
                    _m(rs, "last_client_p50_ms", 1), _m(rs, "deliveries_per_s"),
                    _m(rs, "server_cpu_us_per_delivery", 1),
                    f"{_m(rs, 'server_cpu_pct')} / {_m(rs, 'client_cpu_pct')}",
                    _m(rs, "kb_per_conn", 1), _mark(rs),
                ])  # fmt: skip
    head = ["server", "N", "delivery p50 / p99 ms", "last client p50 ms", "deliveries/s",
            "server CPU µs/delivery", "burst CPU % server / client", "kB/conn",
            "run"]  # fmt: skip
    out = ["### Fan-out: N subscribers on one stream", "", *_table(head, rows)]
    out += ["Ratios, cablecar ÷ anchor in this run (throughput: higher is better; CPU per delivery "
            "and p99: lower is better):", ""]  # fmt: skip
    rows = []
    for k in [k for k in t.servers("fanout") if k in PEERS]:
        rails, django = PEERS[k]
        for n in t.sizes("fanout", k):
            c = t.get("fanout", k, n)

            def rr(peer: str, key: str, c: Sequence[dict[str, Any]] = c, n: int = n) -> str:
                x = ratio(med(c, key), _fig(t, "fanout", peer, n, key))
                return "-" if x is None else f"{x:.2f}{TIMES}"

            tp, cpu = "deliveries_per_s", "server_cpu_us_per_delivery"
            rows.append([
                NAMES[k], f"{n:,}", rr("floor", tp), rr(rails, tp), rr(django, tp),
                rr("floor", cpu), rr(rails, cpu), rr(django, cpu), rr("floor", "p99_ms"),
            ])  # fmt: skip
    head = ["cablecar", "N", "throughput ÷ floor", "÷ Rails", "÷ Django", "CPU/delivery ÷ floor",
            "÷ Rails", "÷ Django", "p99 ÷ floor"]  # fmt: skip
    return out + _table(head, rows)


def _many_streams(t: Table) -> list[str]:
    rows = []
    for n in t.sizes("many_streams"):
        for k in t.servers("many_streams"):
            rs = t.get("many_streams", k, n)
            if rs:
                shape = f"{fmt(rs[0].get('streams'))} x {rs[0].get('per_stream')}"
                lat = f"{_m(rs, 'p50_ms', 1)} / {_m(rs, 'p99_ms', 1)}"
                rows.append([
                    NAMES.get(k, k), f"{n:,}", shape, lat,
                    _m(rs, "deliveries_per_s"), _m(rs, "messages_per_s"),
                    _m(rs, "server_cpu_us_per_delivery", 1), _m(rs, "server_cpu_us_per_message", 1),
                    _mark(rs),
                ])  # fmt: skip
    head = ["server", "connections", "streams x members", "p50 / p99 ms", "deliveries/s",
            "speaks/s", "server CPU µs/delivery", "µs/speak", "run"]  # fmt: skip
    title = "### Many streams, few subscribers each (ChatChannel rooms; members get every speak)"
    return [title, "", *_table(head, rows)]


def _connect_storm(t: Table) -> list[str]:
    rows = []
    for n in t.sizes("connect_storm"):
        for k in t.servers("connect_storm"):
            rs = t.get("connect_storm", k, n)
            if rs:
                rows.append([
                    NAMES.get(k, k), f"{n:,}", _m(rs, "connect_per_s"),
                    _m(rs, "server_cpu_us_per_connect"), _m(rs, "kb_per_conn", 1), _mark(rs),
                ])  # fmt: skip
    head = ["server", "N", "connections/s", "server CPU µs/connection", "kB/conn", "run"]
    return ["### Connect storm (connect + subscribe)", "", *_table(head, rows)]


def _roundtrip(t: Table) -> list[str]:
    rows = []
    for k in t.servers("roundtrip"):
        rs = t.get("roundtrip", k)
        rows.append([
            NAMES.get(k, k), _m(rs, "count"), _m(rs, "p50_ms", 3), _m(rs, "p90_ms", 3),
            _m(rs, "p99_ms", 3), _m(rs, "max_ms", 2), _m(rs, "server_cpu_us_per_roundtrip"),
            _mark(rs),
        ])  # fmt: skip
    head = ["server", "round trips", "p50 ms", "p90 ms", "p99 ms", "max ms",
            "server CPU µs/round trip", "run"]  # fmt: skip
    title = "### Action round trip (perform echo → transmit back; one client, no other load)"
    return [title, "", *_table(head, rows)]


def _idle_memory(t: Table) -> list[str]:
    rows = []
    for n in t.sizes("idle_memory"):
        for k in t.servers("idle_memory"):
            rs = t.get("idle_memory", k, n)
            if not rs:
                continue
            r0 = rs[0]
            frac = r0.get("retained_fraction")
            kept = "-" if frac is None else f"{frac:.0%}"
            w2 = (r0.get("second_wave") or {}).get("rss_after_disconnect_kb")
            rows.append([
                NAMES.get(k, k), f"{n:,}", fmt(_mb(r0.get("rss_baseline_kb")), 1),
                fmt(_mb(r0.get("rss_idle_kb")), 1), fmt(r0.get("kb_per_conn"), 2),
                f"{fmt(_mb(r0.get('rss_after_disconnect_kb')), 1)} ({kept})", fmt(_mb(w2), 1),
                _mark(rs),
            ])  # fmt: skip
    head = ["server", "N", "baseline MB", "idle MB", "kB/conn", "after disconnect MB (kept)",
            "after a 2nd wave MB", "run"]  # fmt: skip
    return ["### Idle memory (RSS of the server's processes)", "", *_table(head, rows)]


def render(records: Sequence[dict[str, Any]]) -> str:
    """The whole markdown report: one table per scenario, then the targets."""
    t = Table(records)
    lines: list[str] = []
    for m in t.meta[:1]:
        mi = m.get("machine") or {}
        lines += [
            f"Run {m.get('started', '?')}, commit {m.get('commit', '?')}: {mi.get('cores')} cores "
            f"({mi.get('cpu')}), kernel {mi.get('kernel')}, Python {mi.get('python')}; "
            "the load client and the servers share the cores.",
            "",
        ]
    if t.sizes("fanout"):
        lines += _fanout(t)
    if t.sizes("many_streams"):
        lines += _many_streams(t)
    if t.sizes("connect_storm"):
        lines += _connect_storm(t)
    if t.servers("roundtrip"):
        lines += _roundtrip(t)
    if t.sizes("idle_memory"):
        lines += _idle_memory(t)
    ts = targets(t)
    if ts:
        met = sum(1 for x in ts if x.status.startswith("met"))
        miss = sum(1 for x in ts if x.status.startswith("NOT met"))
        lines += [
            f"### Targets (issue 9): {met} met, {miss} not met, {len(ts) - met - miss} n/a",
            "",
        ]
        rows = [
            [x.name, NAMES.get(x.kind, x.kind), x.size, x.measured, x.threshold,
             x.status.replace("NOT met", "**NOT met**", 1)]
            for x in ts
        ]  # fmt: skip
        lines += _table(["target", "cablecar", "N", "measured", "target", "status"], rows)
    return "\n".join(lines).rstrip() + "\n"


def _mb(kb: Any) -> float | None:
    return kb / 1024 if isinstance(kb, (int, float)) else None


def main(argv: list[str] | None = None) -> int:
    """Print the markdown report for the given JSON-lines files."""
    paths = (argv if argv is not None else sys.argv[1:]) or sorted(
        str(p) for p in (Path(__file__).parent / "results").glob("run-*.jsonl")
    )[-1:]
    if not paths:
        print("no results: run benchmarks/run_all.py first", file=sys.stderr)
        return 1
    print(render(load(paths)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
