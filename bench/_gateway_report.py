"""Targets and Markdown tables of ``gateway_overhead.py``'s results."""

from __future__ import annotations

from _common import JSONDict, markdown_table, ms, percentile

# The targets ("Gateway at production scale").
P50_ADDED_MS = {"non_streaming": 0.5, "streaming": 1.0}
VS_PORTKEY = 1.0
VS_LITELLM = 5.0
MEMORY_GROWTH_PCT = 5.0
KINDS = (("non_streaming", "non-streaming"), ("streaming", "streaming"))
LABELS = {"atrium": "Atrium", "portkey": "Portkey", "litellm": "LiteLLM",
          "atrium-noaudit": "Atrium, inference audit off"}  # fmt: skip


def _rps(data: JSONDict, gateway: str, kind: str, conc: str) -> float | None:
    run = data["gateways"].get(gateway, {}).get("wrk", {}).get(kind, {}).get(conc)
    return run["requests_per_s"] if run else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def throughput_ratios(data: JSONDict) -> JSONDict:
    """Atrium's requests/s over each peer's, per kind of request and concurrency."""
    ratios: JSONDict = {}
    for kind, _ in KINDS:
        for conc in data["settings"]["wrk"]["connections"]:
            atrium = _rps(data, "atrium", kind, f"c{conc}")
            ratios[f"{kind}_c{conc}"] = {
                peer: _ratio(atrium, _rps(data, peer, kind, f"c{conc}"))
                for peer in ("portkey", "litellm")
            }
    return ratios


def added_p50_ratios(data: JSONDict) -> JSONDict:
    """Atrium's added p50 over each peer's, per kind of request (below 1: Atrium adds less)."""

    def p50(gateway: str, kind: str) -> float | None:
        result = data["gateways"].get(gateway, {}).get("sequential", {}).get(kind)
        return result["added"]["p50"] if result else None

    return {
        kind: {
            peer: _ratio(p50("atrium", kind), p50(peer, kind))
            for peer in LABELS
            if peer != "atrium"
        }
        for kind, _ in KINDS
    }


def ratios(data: JSONDict) -> JSONDict:
    """Atrium against each peer: requests/s and added p50."""
    return {"throughput": throughput_ratios(data), "added_p50": added_p50_ratios(data)}


def memory_growth(memory: JSONDict) -> JSONDict:
    """Growth between soak rounds (the target) and from fresh, in percent."""
    rounds = [r["rss"]["total_mib"] for r in memory.get("rounds", [])]
    fresh = memory.get("fresh", {}).get("total_mib")
    result: JSONDict = {"fresh_mib": fresh, "after_rounds_mib": rounds}
    if len(rounds) >= 2 and rounds[0]:
        result["first_to_last_round_pct"] = round((rounds[-1] / rounds[0] - 1) * 100, 2)
    if rounds and fresh:
        result["fresh_to_last_round_pct"] = round((rounds[-1] / fresh - 1) * 100, 2)
    return result


def _verdict(value: float | None, limit: float, *, at_most: bool) -> bool | None:
    if value is None:
        return None
    return value <= limit if at_most else value >= limit


def targets(data: JSONDict) -> JSONDict:
    """Each target of the issue with Atrium's value and whether it is met (None: no data)."""
    atrium = data["gateways"].get("atrium", {})
    result: JSONDict = {}
    for kind, label in KINDS:
        value = atrium.get("sequential", {}).get(kind, {}).get("added", {}).get("p50")
        limit = P50_ADDED_MS[kind]
        result[f"p50_added_{kind}"] = {
            "target": f"added p50, sequential {label}: at most {limit:g} ms",
            "value": value,
            "met": _verdict(value, limit, at_most=True),
        }
    ratios = throughput_ratios(data)
    for peer, factor in (("portkey", VS_PORTKEY), ("litellm", VS_LITELLM)):
        values = [r[peer] for r in ratios.values()]
        worst = min(values) if values and None not in values else None
        result[f"throughput_vs_{peer}"] = {
            "target": f"requests/s at least {factor:g}x {LABELS[peer]}'s, every wrk run",
            "value": worst,
            "per_run": {k: r[peer] for k, r in ratios.items()},
            "met": _verdict(worst, factor, at_most=False),
        }
    growth = memory_growth(atrium.get("memory", {}))
    value = growth.get("first_to_last_round_pct")
    result["memory_growth"] = {
        "target": f"resident memory growth under {MEMORY_GROWTH_PCT:g}% over the soak "
        "(after round 1 -> after the last round)",
        "value": value,
        "fresh_to_last_round_pct": growth.get("fresh_to_last_round_pct"),
        "met": None if value is None else value < MEMORY_GROWTH_PCT,
    }
    limits = data.get("rate_limits", {}).get("atrium", {})
    admitted = limits.get("admitted")
    result["admitted_exactly_n"] = {
        "target": f"two replicas admit exactly N = {limits.get('rpm', '?')} of 3N",
        "value": admitted,
        "met": None if admitted is None else admitted == limits.get("rpm"),
    }
    return result


# -- Markdown -----------------------------------------------------------------------


def _mark(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "not measured"}[met]


def _wrk_cell(run: JSONDict | None) -> str:
    if not run or run.get("requests_per_s") is None:
        return "-"
    errors = run["non_2xx"]
    if run.get("socket_errors"):
        counts = (n.strip(",") for n in run["socket_errors"].split()[1::2])
        errors += sum(int(n) for n in counts if n.isdigit())
    text = f"{run['requests_per_s']:,.0f} (p50 {ms(run['latency_ms'].get('p50'), 1)} ms"
    if run.get("gateway_cores") is not None:
        text += f", {run['gateway_cores']:.2f} cores"
    return text + ")" + (f", {errors:,} errors" if errors else "")


def latency_table(data: JSONDict) -> str:
    """Sequential latency per gateway and kind: through, direct and added."""
    rows = []
    for _, gateway in data["gateways"].items():
        for kind, label in KINDS:
            result = gateway.get("sequential", {}).get(kind)
            if result is None:
                continue
            through, direct, add = result["gateway"], result["direct"], result["added"]
            rows.append(
                [
                    gateway["label"],
                    label,
                    ms(direct["p50"], 3),
                    *(ms(through[p], 3) for p in ("p50", "p95", "p99")),
                    *(f"**{ms(add[p], 3)}**" for p in ("p50", "p95", "p99")),
                    ms(result.get("gateway_cpu_ms_per_request"), 3),
                ]
            )
    headers = ["gateway", "request", "direct p50", "through p50", "p95", "p99"]
    added = ["added p50", "added p95", "added p99", "gateway CPU per request"]
    return markdown_table([*headers, *added], rows)


def throughput_table(data: JSONDict) -> str:
    """requests/s (and wrk's p50) per target, with Atrium's ratios to the peers."""
    names = list(data["gateways"])
    ratios = throughput_ratios(data)
    rows = []
    for kind, label in KINDS:
        for conc in data["settings"]["wrk"]["connections"]:
            direct = (data.get("direct_wrk") or {}).get(kind, {}).get(f"c{conc}")
            cells = [
                _wrk_cell(data["gateways"][n].get("wrk", {}).get(kind, {}).get(f"c{conc}"))
                for n in names
            ]
            ratio = ratios[f"{kind}_c{conc}"]
            rows.append(
                [
                    label,
                    str(conc),
                    _wrk_cell(direct),
                    *cells,
                    ms(ratio["portkey"]),
                    ms(ratio["litellm"]),
                ]
            )
    headers = ["request", "connections", "nginx direct", *(LABELS[n] for n in names)]
    return markdown_table([*headers, "Atrium / Portkey", "Atrium / LiteLLM"], rows)


def memory_table(data: JSONDict) -> str:
    """Resident memory of each gateway's process tree, fresh and after each soak round."""
    rows = []
    for _, gateway in data["gateways"].items():
        memory = gateway.get("memory")
        if not memory:
            continue
        growth = memory_growth(memory)
        rounds = [
            f"{r['rss']['total_mib']:,.1f} ({r['wrk']['requests'] or 0:,} at "
            f"{r['wrk']['requests_per_s'] or 0:,.0f}/s)"
            for r in memory.get("rounds", [])
        ]
        processes = memory["rounds"][-1]["rss"] if memory.get("rounds") else memory["fresh"]
        parts = ", ".join(f"{p['name']} {p['rss_mib']:,.0f}" for p in processes["processes"])
        rows.append(
            [
                gateway["label"],
                ms(memory["fresh"]["total_mib"], 1),
                " / ".join(rounds) or "-",
                _pct(growth.get("first_to_last_round_pct")),
                _pct(growth.get("fresh_to_last_round_pct")),
                parts,
            ]
        )
    headers = ["gateway", "fresh", "after each soak round (requests, requests/s)"]
    return markdown_table([*headers, "round 1 -> last", "fresh -> last", "processes"], rows)


def logs_table(data: JSONDict) -> str:
    """How much each gateway logged per run, and its most frequent lines."""
    rows = []
    for gateway in data["gateways"].values():
        for phase, log in gateway.get("logs", {}).items():
            top = [
                f"{n['count']:,}x `{n['line'][:100].replace('|', '/')}`" for n in log["most_common"]
            ]
            rows.append([gateway["label"], phase, f"{log['lines']:,}", "<br>".join(top) or "-"])
    return markdown_table(["gateway", "run", "log lines", "most frequent lines"], rows)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


def limits_table(data: JSONDict) -> str:
    """Per-key RPM limit across two replicas: admitted and refused, or why not."""
    rows = []
    for name, result in data.get("rate_limits", {}).items():
        label = LABELS[name]
        if "admitted" in result:
            per = result["admitted_per_replica"]
            other = ", ".join(f"{k}: {v}" for k, v in result["other"].items()) or "0"
            rows.append(
                [
                    label,
                    f"{result['replicas']} (Redis + PostgreSQL)",
                    str(result["rpm"]),
                    str(result["requests"]),
                    f"{result['admitted']} ({per[0]} + {per[1]})",
                    str(result["refused_429"]),
                    other,
                    f"burst {result['burst_s']:.2f} s; "
                    + ("exactly N" if result["exact"] else "**not exactly N**"),
                ]
            )
        else:
            why = result.get("error") or result.get("result", "-")
            rows.append([label, "-", "-", "-", "-", "-", "-", why])
    headers = ["gateway", "replicas", "N (RPM)", "sent", "admitted (200)", "refused (429)"]
    return markdown_table([*headers, "other", "result"], rows)


def targets_table(data: JSONDict) -> str:
    """The issue's targets, Atrium's value and the verdict."""
    rows = []
    for key, target in data["targets"].items():
        value = target["value"]
        if value is None:
            shown = "-"
        elif key.startswith("p50"):
            shown = f"{value:.3f} ms"
        elif key.startswith("throughput"):
            shown = f"{value:.2f}x (worst run)"
        elif key == "memory_growth":
            shown = f"{value:+.2f}% (fresh -> last: {_pct(target['fresh_to_last_round_pct'])})"
        else:
            shown = str(value)
        rows.append([target["target"], shown, _mark(target["met"])])
    return markdown_table(["target", "Atrium", "verdict"], rows)


def _header(data: JSONDict) -> list[str]:
    machine, settings = data["machine"], data["settings"]
    commit = (machine["atrium"]["commit"] or "unknown")[:12]
    dirty = " (with local edits in atrium/)" if machine["atrium"]["atrium_dirty"] else ""
    versions = []
    for name, gateway in data["gateways"].items():
        if name != "atrium":
            package = gateway.get("install", {}).get("package", LABELS[name])
            versions.append(f"{package}" + (" (failed)" if "error" in gateway else ""))
    quick = (
        " **Quick run** (`--quick`): short samples, not for comparison."
        if settings["quick"]
        else ""
    )
    wrk, soak = settings["wrk"], settings["soak"]
    return [
        f"Gateway benchmark, {machine['timestamp_utc']}: {machine['cpu_model']}, "
        f"{machine['cpu_count']} cores, Python {machine['python']}, Node {machine['node']}, "
        f"atrium {commit}{dirty}; peers {', '.join(versions) or 'none'}; "
        f"{data['runtime_s'] / 60:.1f} min.{quick}",
        "",
        "One gateway at a time in front of the same nginx mock (the others stopped), "
        "each with what it needs to authenticate: "
        + "; ".join(f"{g['label']}: {g['auth']}" for g in data["gateways"].values())
        + ".",
        "",
        f"**Added latency** (ms): sequential requests on one keep-alive connection "
        f"(stdlib http.client), {settings['requests']:,} timed per target after "
        f"{settings['warmup']:,} warm-up, in {settings['blocks']} blocks alternating direct "
        "and through the gateway; added = percentile through minus the same percentile direct; "
        "gateway CPU = CPU time of its process tree (/proc) per request through it.",
        "",
        latency_table(data),
        "",
        _added_ratio_line(data),
        "",
        f"**Throughput**: requests/s with `wrk -t{wrk['threads']} -d{wrk['duration_s']}s` "
        "and the peers' chat.lua at each number of connections (wrk's p50 latency, the "
        "cores the gateway's process tree used; errors are wrk's, timeouts are answers "
        "slower than its 2 s).",
        "",
        throughput_table(data),
        "",
        f"**Resident memory** (MiB, sum of VmRSS over the gateway's process tree) of a "
        f"second, fresh process: fresh, then after each of {soak['rounds']} soak rounds of "
        f"up to {soak['requests_per_round']:,} non-streaming requests (wrk "
        f"-c{soak['connections']}, at most {soak['max_s_per_round']} s per round).",
        "",
        memory_table(data),
        "",
        "**Logs** of each run (numbers and ids masked as #):",
        "",
        logs_table(data),
        "",
        "**Per-key rate limit across two replicas**: a key limited to N requests/minute gets "
        "3N concurrent requests spread over both replicas.",
        "",
        limits_table(data),
    ]


def _added_ratio_line(data: JSONDict) -> str:
    parts = []
    for kind, label in KINDS:
        for peer, value in added_p50_ratios(data)[kind].items():
            if value is not None:
                parts.append(f"{label} {value:.2f}x {LABELS[peer]}'s")
    if not parts:
        return ""
    return "Atrium's added p50 against the peers' (below 1: Atrium adds less): " + (
        "; ".join(parts) + "."
    )


def render_markdown(data: JSONDict) -> str:
    """The results as Markdown: tables per measurement, then the targets."""
    parts = _header(data)
    parts += ["", "**Targets** (from the issue):", "", targets_table(data)]
    failures = [f"- {g['label']}: {g['error']}" for g in data["gateways"].values() if "error" in g]
    if failures:
        parts += ["", "Failures (details in the JSON):", "", *failures]
    noise = _noise(data)
    if noise:
        parts += ["", noise]
    return "\n".join(parts)


def _noise(data: JSONDict) -> str:
    loads: list[float] = []
    for gateway in data["gateways"].values():
        for result in gateway.get("sequential", {}).values():
            loads += [b["foreign_cores_during"] for b in result["blocks"]]
        for runs in gateway.get("wrk", {}).values():
            loads += [r["foreign_cores_during"] for r in runs.values()]
    if not loads:
        return ""
    return (
        f"Other work on the machine during the measured blocks and runs: "
        f"{min(loads):.2f}-{max(loads):.2f} cores (median {percentile(loads, 50):.2f}); "
        "well above zero means a noisy result."
    )
