from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from atrium.observability.metrics import GatewayMetrics


def _samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_kept_children_count_every_request_under_its_own_labels() -> None:
    metrics = GatewayMetrics()
    for _ in range(3):
        metrics.observe(
            model="m", endpoint="chat.completions", status=200, seconds=0.002,
            prompt_tokens=5, completion_tokens=7, overhead_seconds=0.0003,
        )  # fmt: skip
    metrics.observe(
        model="m", endpoint="chat.completions", status=502, seconds=0.5,
        prompt_tokens=0, completion_tokens=0,
    )  # fmt: skip
    metrics.observe(
        model="other", endpoint="embeddings", status=400, seconds=0.001,
        prompt_tokens=0, completion_tokens=0,
    )  # fmt: skip
    samples = _samples(metrics)
    ok = (("endpoint", "chat.completions"), ("model", "m"), ("status", "200"))
    failed = (("endpoint", "chat.completions"), ("model", "m"), ("status", "502"))
    assert samples[("atrium_requests_total", ok)] == 3
    assert samples[("atrium_requests_total", failed)] == 1
    assert samples[("atrium_tokens_total", (("direction", "prompt"), ("model", "m")))] == 15
    assert samples[("atrium_tokens_total", (("direction", "completion"), ("model", "m")))] == 21
    assert samples[("atrium_overhead_seconds_count", (("endpoint", "chat.completions"),))] == 3
    error = (
        ("error_type", "502"),
        ("gen_ai_operation_name", "chat.completions"),
        ("gen_ai_request_model", "m"),
    )
    assert samples[("gen_ai_server_request_duration_seconds_count", error)] == 1
    # A series exists once a request touched it, as with labels() on every call: a
    # failed request without tokens or overhead makes no token or overhead series.
    touched = {dict(labels).get("model") for name, labels in samples if "tokens" in name}
    assert touched == {"m"}
    assert (("endpoint", "embeddings"),) not in {
        labels for name, labels in samples if name.startswith("atrium_overhead")
    }


def test_the_in_flight_gauge_of_a_model_goes_up_and_down() -> None:
    metrics = GatewayMetrics()
    metrics.in_flight_of("m").inc()
    metrics.in_flight_of("m").inc()
    metrics.in_flight_of("m").dec()
    assert metrics.in_flight_of("m") is metrics.in_flight.labels("m")
    assert _samples(metrics)[("atrium_requests_in_flight", (("model", "m"),))] == 1
