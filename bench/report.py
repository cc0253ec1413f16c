"""The benchmark's report: the targets of issues 7 and 15 checked against the figures, a table
printed, and what ordering and rate limiting cost next to the plain burst."""

TARGETS = (
    # (scenario, description, figure getter, predicate)
    ("burst", "burst >= 400 deliveries/s, zero lost", lambda r: r["deliveries_per_second"], lambda v, r: v >= 400),
    ("steady", "steady p50 <= 30 ms", lambda r: r["latency_ms"]["p50"], lambda v, r: v <= 30),
    ("steady", "steady p99 <= 150 ms", lambda r: r["latency_ms"]["p99"], lambda v, r: v <= 150),
    ("slow", "100 ms receiver >= 250 deliveries/s", lambda r: r["deliveries_per_second"], lambda v, r: v >= 250),
    ("hol", "timing-out endpoint: healthy p99 <= 2x", lambda r: r["healthy_p99_ratio"], lambda v, r: v <= 2),
    ("fanout", "fan-out: rows committed <= 1 s", lambda r: r["rows_committed_s"], lambda v, r: v <= 1),
    ("fanout", "fan-out: first send started <= 1 s", lambda r: r["first_send_started_s"], lambda v, r: v <= 1),
    ("burst", "<= 4 SQL statements per delivery", lambda r: r["sql_per_delivery"], lambda v, r: v <= 4),
    # Against the worker after the first chunk: its first thousands of deliveries fill each
    # thread's connections, sessions and caches (rss_growth_percent counts from before them).
    (
        "soak",
        "worker RSS within 10 % (after the first chunk)",
        lambda r: r["rss_growth_after_first_chunk_percent"],
        lambda v, r: v <= 10,
    ),
    # Issue 15: correctness under load, not speed (the overhead is reported, not bounded).
    (
        "ordered",
        "ordered: first receipts in publish order per key",
        lambda r: r["order_violations"],
        lambda v, r: v == 0,
    ),
    (
        "limited",
        "binding rate limit: busiest second at the receiver <= limit",
        lambda r: r["binding"]["busiest_window"],
        lambda v, r: v <= r["binding"]["rate_limit"] and not r["binding"]["lost"],
    ),
)


def check_targets(scenarios: dict) -> list[dict]:
    checks = []
    for scenario, description, figure, predicate in TARGETS:
        result = scenarios.get(scenario)
        if result is None:
            continue
        try:
            value = figure(result)
        except (KeyError, TypeError):
            value = None
        met = value is not None and predicate(value, result) and not result.get("lost")
        checks.append({"scenario": scenario, "target": description, "value": value, "met": met})
    return checks


COLUMNS = (
    ("scenario", 22),
    ("deliv", 6),
    ("per s", 7),
    ("p50 ms", 7),
    ("p95 ms", 7),
    ("p99 ms", 8),
    ("SQL/d", 6),
    ("conn/d", 6),
    ("tasks/d", 7),
    ("cpu ms/d", 8),
    ("pg ms/d", 7),
    ("RSS MB", 13),
    ("lost", 5),
    ("dup", 4),
)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def row(name: str, r: dict) -> str:
    latency = r.get("latency_ms") or {}
    rss = r.get("worker_rss_mb") or {}
    values = (
        name,
        r.get("deliveries"),
        r.get("deliveries_per_second"),
        latency.get("p50"),
        latency.get("p95"),
        latency.get("p99"),
        r.get("sql_per_delivery"),
        r.get("db_connections_per_delivery"),
        r.get("tasks_per_delivery"),
        r.get("worker_cpu_ms_per_delivery"),
        (r.get("server_cpu_ms_per_delivery") or {}).get("postgres"),
        f"{_fmt(rss.get('before'))}->{_fmt(rss.get('after'))}",
        r.get("lost"),
        r.get("duplicated"),
    )
    return " ".join(
        _fmt(v).rjust(width) if i else _fmt(v).ljust(width)
        for i, (v, (_, width)) in enumerate(zip(values, COLUMNS, strict=True))
    )


def rows(scenarios: dict) -> list[tuple[str, dict]]:
    """Flattened: hol's two phases and each worker count of compare_workers get a row each."""
    found = []
    for name, result in scenarios.items():
        if name == "hol":
            found += [
                (f"hol {phase.split('_')[0]} bad", result[phase])
                for phase in ("without_bad_endpoint", "with_bad_endpoint")
            ]
        elif name == "compare_workers":
            found += [(f"burst, {count} worker(s)", r) for count, r in result.items()]
        elif name == "limited" and "binding" in result:
            found += [("limited", result), (f"limited {result['binding']['rate_limit']}/s", result["binding"])]
        else:
            found.append((name, result))
    return found


def table(scenarios: dict) -> str:
    header = " ".join(title.rjust(width) if i else title.ljust(width) for i, (title, width) in enumerate(COLUMNS))
    lines = [header, "-" * len(header)]
    lines += [row(name, result) for name, result in rows(scenarios)]
    extras = []
    if "fanout" in scenarios:
        f = scenarios["fanout"]
        extras.append(
            f"fan-out to {f['endpoints']}: fan-out task started {_fmt(f['fanout_task_started_s'])} s, rows committed "
            f"{_fmt(f['rows_committed_s'])} s, first send started {_fmt(f['first_send_started_s'])} s, first receipt "
            f"{_fmt(f['first_receipt_s'])} s, all received {_fmt(f['all_received_s'])} s after the event (median of "
            f"{len(f['rounds'])})"
        )
    if "hol" in scenarios:
        h = scenarios["hol"]
        bad = h["with_bad_endpoint"].get("bad_endpoint", {})
        extras.append(
            f"head-of-line: healthy p99 x{_fmt(h['healthy_p99_ratio'])} with one endpoint timing out after "
            f"{_fmt(h['request_timeout_s'])} s ({bad.get('attempts')} attempts on it, breaker open: "
            f"{bad.get('breaker_open')})"
        )
    if "ordered" in scenarios:
        o = scenarios["ordered"]
        extras.append(
            f"ordered: {o['ordering_keys']} ordering keys in turn ({_fmt(o['events_per_key'])} events each), "
            f"{o['order_violations']} order violations (first receipts out of publish order within a key)"
        )
    if "limited" in scenarios:
        lim = scenarios["limited"]
        line = (
            f"limited: {lim['rate_limit']} per {lim['rate_limit_period_s']} s, not binding (busiest second "
            f"{lim['busiest_window']} requests)"
        )
        if "binding" in lim:
            b = lim["binding"]
            line += (
                f"; binding, {b['events']} events at {b['rate_limit']} per {b['rate_limit_period_s']} s: busiest "
                f"second {b['busiest_window']} requests, {_fmt(b['achieved_rate_per_s'])} requests/s reached "
                f"({_fmt(100 * b['achieved_rate_per_s'] / b['rate_limit'] if b['achieved_rate_per_s'] else None)} "
                f"% of the limit), longest pause between requests {_fmt(b['longest_pause_s'])} s"
            )
        extras.append(line)
    extras += [overhead_text(name, figures) for name, figures in overhead_vs_burst(scenarios).items()]
    if "soak" in scenarios:
        s = scenarios["soak"]
        extras.append(
            f"soak: worker RSS {s['rss_mb_series'][0]} -> {s['rss_mb_series'][1]} MB after the first chunk -> "
            f"{s['rss_mb_series'][-1]} MB ({_fmt(s['rss_growth_percent'])} % in all, "
            f"{_fmt(s['rss_growth_after_first_chunk_percent'])} % after the first chunk)"
        )
    return "\n".join(lines + extras)


# (key, label) of the figures compared with the burst; the latency ones are in latency_ms.
OVERHEAD_FIGURES = (
    ("deliveries_per_second", "deliveries/s"),
    ("p50", "p50"),
    ("p99", "p99"),
    ("sql_per_delivery", "SQL/delivery"),
    ("worker_cpu_ms_per_delivery", "worker CPU ms/delivery"),
)


def overhead_vs_burst(scenarios: dict) -> dict:
    """For ordered and limited (its non-binding run), each figure of OVERHEAD_FIGURES beside the
    burst's of the same run: both values, the difference and the difference in percent."""
    burst = scenarios.get("burst")
    if not burst:
        return {}
    found = {}
    for name in ("ordered", "limited"):
        if name not in scenarios:
            continue
        figures = {}
        for key, _ in OVERHEAD_FIGURES:
            base, value = _figure(burst, key), _figure(scenarios[name], key)
            known = base is not None and value is not None
            figures[key] = {
                "burst": base,
                name: value,
                "difference": round(value - base, 2) if known else None,
                "percent": round((value - base) / base * 100, 1) if known and base else None,
            }
        found[name] = figures
    return found


def _figure(result: dict, key: str):
    if key in ("p50", "p99"):
        return (result.get("latency_ms") or {}).get(key)
    return result.get(key)


def overhead_text(name: str, figures: dict) -> str:
    parts = []
    for key, label in OVERHEAD_FIGURES:
        f = figures[key]
        if f["percent"] is None:
            parts.append(f"{label} -")
            continue
        difference = f" ({f['difference']:+.2f})" if key in ("sql_per_delivery", "worker_cpu_ms_per_delivery") else ""
        parts.append(f"{label} {f['percent']:+.1f} %{difference}")
    return f"{name} vs burst: " + ", ".join(parts)


def targets_text(checks: list[dict]) -> str:
    return "\n".join(f"  [{'met' if c['met'] else 'MISSED'}] {c['target']}: {_fmt(c['value'])}" for c in checks)
