"""Every benchmark case still does what its name claims (status, no error)."""

from __future__ import annotations

import importlib

import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture
def quick_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sizes `python -m benchmarks --quick` runs at (a million keys takes a while)."""
    monkeypatch.setenv("APIGUARD_BENCH_QUICK", "1")


@pytest.mark.usefixtures("quick_mode")
@pytest.mark.parametrize(
    "suite",
    [
        "core",
        "routing",
        "auth",
        "ipfilter",
        "idempotency",
        "resilience",
        "tracing",
        "growth",
        "marginal",
    ],
)
async def test_benchmark_cases_answer_as_named(suite: str) -> None:
    module = importlib.import_module(f"benchmarks.{suite}")
    cases = module.cases()
    assert cases
    for case in cases:
        await case.check()  # raises on a wrong status or a missing header
        assert await case.batch(3) > 0


@pytest.mark.usefixtures("quick_mode")
async def test_stack_cases_answer_as_named(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The headline run's in-process cases: layers, refusals, Redis, peers, primitives."""
    monkeypatch.setenv("APIGUARD_BENCH_REDIS", redis_url)
    ratelimit = importlib.import_module("benchmarks.ratelimit")
    ratelimit._redis_url.cache_clear()
    module = importlib.import_module("benchmarks.stack")
    cases = module.cases()
    groups = {case.meta["group"] for case in cases}
    assert {
        "layer",
        "stack",
        "refusal",
        "floor",
        "peer",
        "primitive",
        "redis",
        "redis-floor",
    } <= groups
    try:
        for case in cases:
            await case.check()
            assert await case.batch(3) > 0
    finally:
        await ratelimit.aclose()


def test_each_stack_layer_is_measured_alone_on_get_and_post() -> None:
    """A layer added to `stack_layers` gets its rows, and a target, without more code."""
    from benchmarks.apps import stack_layers
    from benchmarks.server_apps import DEFAULT_SECRET

    module = importlib.import_module("benchmarks.stack")
    names = {case.name for case in module._layer_cases()}
    for layer in stack_layers(secret=DEFAULT_SECRET.encode()).values():
        assert {f"{layer.label} GET", f"{layer.label} POST"} <= names


def test_the_post_body_is_the_issues_302_byte_order() -> None:
    from benchmarks.apps import NEW_ORDER_BYTES, OrderIn

    assert len(NEW_ORDER_BYTES) == 302
    assert len(OrderIn.model_validate_json(NEW_ORDER_BYTES).lines) == 3


async def test_ratelimit_cases_answer_as_named(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The layer, Redis and slowapi rows, against the test session's redis-server.

    (The store rows fill a million keys; `make bench` runs those.)
    """
    monkeypatch.setenv("APIGUARD_BENCH_PARTS", "layer,redis,slowapi")
    monkeypatch.setenv("APIGUARD_BENCH_REDIS", redis_url)
    module = importlib.import_module("benchmarks.ratelimit")
    module._redis_url.cache_clear()
    cases = module.cases()
    names = [case.name for case in cases]
    assert any("redis" in name.lower() for name in names), names
    assert any("slowapi" in name for name in names), names
    try:
        for case in cases:
            await case.check()
            assert await case.batch(3) > 0
    finally:
        await module.aclose()


@pytest.mark.parametrize(
    "name", ["bare", "stack-memory", "stack-redis", "slowapi-middleware", "otel-asgi"]
)
async def test_server_benchmark_apps_answer_the_load_generators_request(
    name: str, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `python -m benchmarks.server` serves answers its request with 200."""
    import httpx
    from asgi_lifespan import LifespanManager
    from benchmarks.apps import bench_token
    from benchmarks.server_apps import APPS, DEFAULT_SECRET

    monkeypatch.setenv("APIGUARD_BENCH_REDIS", redis_url)
    app = APPS[name]()
    token = bench_token(DEFAULT_SECRET.encode())
    # Under its lifespan, as uvicorn runs it: the Redis store is closed at shutdown.
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get("/orders/42", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200


@pytest.mark.slow
def test_tracing_configurations_each_run_in_a_process_of_their_own() -> None:
    """No SDK, the SDK always on, 1 % ratio: one subprocess each, one table of every case."""
    module = importlib.import_module("benchmarks.tracing")
    results = module.run_suite(rounds=1, requests=3)
    names = [result.case.name for result in results]
    for config in module.CONFIGS:
        assert f"[{config}] + apiguard TracingMiddleware" in names
        assert f"[{config}] + opentelemetry-instrumentation-asgi" in names
    assert module.summary(results).startswith("Targets:")


async def test_engine_cases_answer_as_named(
    redis_url: str, cluster_url: str, sentinel_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each Redis engine's rows, against the test session's servers."""
    monkeypatch.setenv("APIGUARD_BENCH_REDIS", redis_url)
    monkeypatch.setenv("APIGUARD_BENCH_CLUSTER", cluster_url)
    monkeypatch.setenv("APIGUARD_BENCH_SENTINEL", sentinel_url)
    ratelimit = importlib.import_module("benchmarks.ratelimit")
    module = importlib.import_module("benchmarks.engines")
    for cached in (ratelimit._redis_url, module._cluster_url, module._sentinel_url):
        cached.cache_clear()
    cases = module.cases()
    names = " ".join(case.name for case in cases)
    assert all(engine in names for engine in ("RESP", "redis-py", "cluster", "sentinel"))
    try:
        for case in cases:
            await case.check()
            assert await case.batch(3) > 0
    finally:
        await module.aclose()


def test_failover_timeline_reads_per_second_and_per_fail_mode() -> None:
    """The timelines the guides print: answers per second from the fault, per app and keys."""
    from benchmarks.failover import _after, _timeline

    from tests.ratelimit._failover import Record

    def record(mode: str, key: str, start: float, status: int, reason: str | None) -> Record:
        return Record(mode, key, start, 0.01, status, reason, None, None)

    records = [
        record("fail-open", "a", 9.5, 200, None),
        record("fail-open", "a", 10.2, 200, "store-unavailable"),
        record("fail-closed", "a", 10.3, 503, None),
        record("fail-closed", "a", 11.7, 200, None),
    ]
    table = _timeline(records, 10.0, lambda key: "all keys")
    assert (
        table.splitlines()[0] == "| s from the fault | fail-open all keys | fail-closed all keys |"
    )
    assert "| -1 | counted 1 | - |" in table
    assert "| 0 | open 1 | 503 1 |" in table
    assert "| 1 | - | counted 1 |" in table
    assert _after(records, 10.0) == (
        "fail-open: 1 uncounted, from 0.20 s to 0.20 s after the fault; "
        "fail-closed: 1 uncounted, from 0.30 s to 0.30 s after the fault"
    )


@pytest.mark.parametrize("config", ["none", "fixed-100", "fixed-8", "adaptive"])
async def test_the_shedding_benchmark_app_serves_each_configuration(
    config: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `python -m benchmarks.shedding` serves: the work, and the limit it reads."""
    import httpx
    from benchmarks.shedding import make_app, table

    monkeypatch.setenv("APIGUARD_SHED_CONFIG", config)
    app = make_app()
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        assert (await client.get("/work")).text == "done"
        limit = (await client.get("/limit")).json()["limit"]
    expected = {"none": None, "fixed-100": 100, "fixed-8": 8, "adaptive": 4}[config]
    assert limit == expected
    assert table([], 800, 20).startswith("App: 4 workers x 20 ms = 200 req/s")


def test_a_command_that_prints_nothing_reads_as_empty() -> None:
    # `git status --porcelain` on a clean checkout: the run must not crash.
    from benchmarks import machine

    assert machine._output("true") == ""
    assert machine.git_revision() is not None
