"""The HTTP API against the app (httpx via Starlette's TestClient), on SQLite and PostgreSQL.

Every endpoint, status code and auth rule; the read models are kept current by the API's
own runner (started with the app), as ``cjledger api`` does.
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from domain.values import BatchingMode, FinalStatus
from infrastructure import api_schema
from infrastructure.api import create_api
from infrastructure.bootstrap import System
from infrastructure.settings import Settings
from projections.catalogue import PROJECTIONS
from tests.fakes import run_batch

WRITE = {"Authorization": "Bearer write-secret"}


@pytest.fixture
def system(store_env: dict[str, str]) -> Iterator[System]:
    settings = Settings(api_token="write-secret", api_max_body_bytes=20_000)  # type: ignore[arg-type]
    with System(settings, store_env=store_env) as system:
        yield system


@pytest.fixture
def batches(system: System) -> list[UUID]:
    return [
        run_batch(system.app, n=6, ref="api-1"),
        run_batch(system.app, n=5, ref="api-2", mode=BatchingMode.PER_REQUEST, failure_rate=0.2),
    ]


def client_for(system: System) -> TestClient:
    return TestClient(create_api(system), raise_server_exceptions=False)


@pytest.fixture
def client(system: System, batches: list[UUID]) -> Iterator[TestClient]:
    with client_for(system) as client:
        wait_caught_up(client)
        yield client


def wait_caught_up(client: TestClient) -> None:
    deadline = time.monotonic() + 20
    while client.get("/readyz").json()["freshness"]["lag"] > 0:
        assert time.monotonic() < deadline, "the API's runner did not catch up"
        time.sleep(0.05)


def essays(n: int) -> list[dict[str, Any]]:
    return [{"essay_id": f"e{i}", "text": f"essay number {i}"} for i in range(n)]


def test_health_ready_and_docs(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    assert client.get("/docs").status_code == 200
    assert "/batches/{batch_id}/rankings" in client.get("/openapi.json").json()["paths"]


def test_list_filters_paginates_and_reports_freshness(
    client: TestClient, batches: list[UUID]
) -> None:
    everything = client.get("/batches").json()
    assert {b["batch_id"] for b in everything["items"]} == {str(b) for b in batches}
    assert everything["freshness"]["lag"] == 0 and everything["freshness"]["position"] > 0
    first = client.get("/batches", params={"limit": 1}).json()
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = client.get("/batches", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert len(second["items"]) == 1 and second["next_cursor"] is None
    assert first["items"][0]["batch_id"] != second["items"][0]["batch_id"]
    per_request = client.get("/batches", params={"mode": "per_request"}).json()["items"]
    assert [b["batch_id"] for b in per_request] == [str(batches[1])]
    assert client.get("/batches", params={"status": "running"}).json()["items"] == []
    bad = client.get("/batches", params={"cursor": "nonsense"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "cursor"]
    too_many = client.get("/batches", params={"limit": 100_000})
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == [
        "query",
        "limit",
    ]


def test_one_batch_its_rankings_csv_comparisons_and_decisions(
    client: TestClient, batches: list[UUID]
) -> None:
    bid = str(batches[0])
    summary = client.get(f"/batches/{bid}")
    assert summary.status_code == 200
    body = summary.json()
    assert body["status"] == "scored" and body["usage"]["succeeded"] > 0
    assert summary.headers["X-Read-Model-Lag"] == "0"
    assert "quality" in body and "freshness" in body

    rankings = client.get(f"/batches/{bid}/rankings").json()
    assert [r["rank"] for r in rankings["items"]] == list(range(1, 7))
    table = list(csv.DictReader(io.StringIO(client.get(f"/batches/{bid}/rankings.csv").text)))
    assert [r["essay_ref"] for r in table] == [r["essay_id"] for r in rankings["items"]]
    assert [r["essay_id"] for r in table] == [
        r.get("external_id") or r["essay_id"] for r in rankings["items"]
    ]

    page = client.get(f"/batches/{bid}/comparisons", params={"limit": 5}).json()
    assert len(page["items"]) == 5 and page["next_cursor"]
    rest = client.get(
        f"/batches/{bid}/comparisons", params={"limit": 1000, "cursor": page["next_cursor"]}
    ).json()
    assert len(page["items"]) + len(rest["items"]) == body["comparisons_requested"]
    failures = client.get(f"/batches/{batches[1]}/comparisons", params={"outcome": "failure"})
    assert all(c["outcome"] == "failure" for c in failures.json()["items"])

    decisions = client.get(f"/batches/{bid}/decisions").json()["items"]
    assert decisions and decisions[-1]["decision"].startswith("FINALIZE")
    assert {"context", "raw_decision", "guard", "reason"} <= set(decisions[0])
    assert decisions[0]["context"]["essay_count"] == 6


def test_events_with_full_payloads_and_state_at_a_version(
    client: TestClient, batches: list[UUID]
) -> None:
    bid = str(batches[0])
    events = client.get(f"/batches/{bid}/events").json()["items"]
    assert events[0]["type"] == "BatchRegistered"
    assert len(events[0]["payload"]["essays"]) == 6
    assert events[0]["payload"]["policy"]["max_pairs_cap"] == 120
    requested = next(e for e in events if e["type"] == "ComparisonsRequested")
    assert requested["payload"]["pairs"][0]["comparison_id"]
    at_one = client.get(f"/batches/{bid}/state", params={"version": 1}).json()
    assert at_one["version"] == 1 and at_one["waves"] == 0
    now = client.get(f"/batches/{bid}/state").json()
    assert now["version"] == len(events) and now["final_status"] == "scored"
    beyond = client.get(f"/batches/{bid}/state", params={"version": len(events) + 1})
    assert beyond.status_code == 422 and beyond.json()["detail"][0]["loc"] == ["query", "version"]


def test_the_report_is_self_contained_html_with_one_bar_per_essay(
    client: TestClient, batches: list[UUID]
) -> None:
    report = client.get(f"/batches/{batches[0]}/report")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert len(re.findall(r'<rect class="bar"', report.text)) == 6
    assert "http://" not in report.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "<script" not in report.text


@pytest.mark.parametrize(
    "path",
    [
        "/batches/{id}",
        "/batches/{id}/rankings",
        "/batches/{id}/rankings.csv",
        "/batches/{id}/comparisons",
        "/batches/{id}/decisions",
        "/batches/{id}/events",
        "/batches/{id}/state",
        "/batches/{id}/report",
    ],
)
def test_an_unknown_batch_is_404_on_every_endpoint(client: TestClient, path: str) -> None:
    for unknown in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = client.get(path.format(id=unknown))
        assert response.status_code == 404
        assert "does not exist" in response.json()["detail"]


def test_submitting_needs_the_write_token(client: TestClient) -> None:
    body = {"external_ref": "api-new", "essays": essays(4)}
    missing = client.post("/batches", json=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = client.post("/batches", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    accepted = client.post("/batches", json=body, headers=WRITE)
    assert accepted.status_code == 202
    batch_id = accepted.json()["batch_id"]
    assert accepted.headers["Location"] == f"/batches/{batch_id}"
    again = client.post("/batches", json=body, headers=WRITE)  # idempotent per reference
    assert again.status_code == 202 and again.json()["batch_id"] == batch_id
    assert client.get(f"/batches/{batch_id}/events").json()["items"][0]["payload"]["essays"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"essays": []}, ["body", "essays"]),
        ({"essays": [{"essay_id": "a"}]}, ["body", "essays", 0, "text"]),
        ({"essays": [{"essay_id": "a", "text": "x"}], "budget": 0}, ["body", "budget"]),
        ({"essays": [{"essay_id": "a", "text": "x"}], "mode": "fast"}, ["body", "mode"]),
        ({"essays": [{"essay_id": "a", "text": "x"}] * 2}, ["body", "essays", 1, "essay_id"]),
        ({"essays": essays(2), "colour": "red"}, ["body", "colour"]),
        ({"essays": essays(2), "external_ref": "a\x00b"}, ["body", "external_ref"]),
        ({"essays": essays(2), "external_ref": "x" * 501}, ["body", "external_ref"]),
        ({"essays": essays(2), "instructions": "judge\x00"}, ["body", "instructions"]),
        ({"essays": essays(2), "rubric": "\x00"}, ["body", "rubric"]),
        ({"essays": essays(2), "budget": 2**31}, ["body", "budget"]),
        ({"essays": essays(2), "seed": 2**63}, ["body", "seed"]),
        ({"essays": essays(2), "seed": -(2**63) - 1}, ["body", "seed"]),
        ({"essays": essays(2), "seed": 10**4000}, ["body", "seed"]),
        ({"essays": [{"essay_id": "a\x00", "text": "x"}]}, ["body", "essays", 0, "essay_id"]),
        ({"essays": [{"essay_id": "a", "text": "x\x00"}]}, ["body", "essays", 0, "text"]),
    ],
)
def test_a_bad_submission_is_422_field_by_field_and_stores_nothing(
    client: TestClient, body: dict[str, Any], loc: list[Any]
) -> None:
    head = client.get("/readyz").json()["freshness"]["head"]
    response = client.post("/batches", json=body, headers=WRITE)
    assert response.status_code == 422
    assert loc in [d["loc"] for d in response.json()["detail"]]
    assert "Traceback" not in response.text
    assert client.get("/readyz").json()["freshness"]["head"] == head


def test_an_oversized_body_is_413(client: TestClient) -> None:
    big = {"essays": [{"essay_id": "a", "text": "x" * 30_000}]}
    response = client.post("/batches", json=big, headers=WRITE)
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"essays": [{"essay_id": "a", "text": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    streamed = client.post(
        "/batches",
        content=chunks(),
        headers={**WRITE, "Content-Type": "application/json"},
    )
    assert streamed.status_code == 413


def test_reads_need_a_token_once_a_read_token_is_set(
    store_env: dict[str, str], batches: list[UUID]
) -> None:
    settings = Settings(api_token="write-secret", api_read_token="read-secret")  # type: ignore[arg-type]
    with System(settings, store_env=store_env) as system, client_for(system) as client:
        assert client.get("/batches").status_code == 401
        wrong = client.get("/batches", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        reader = client.get("/batches", headers={"Authorization": "Bearer read-secret"})
        assert reader.status_code == 200
        assert client.get("/batches", headers=WRITE).status_code == 200
        as_reader = client.post(
            "/batches", json={"essays": essays(2)}, headers={"Authorization": "Bearer read-secret"}
        )
        assert as_reader.status_code == 403
        assert client.get("/healthz").status_code == 200  # probes stay open


def test_writes_are_refused_when_no_write_token_is_configured(store_env: dict[str, str]) -> None:
    with System(Settings(), store_env=store_env) as system, client_for(system) as client:
        response = client.post("/batches", json={"essays": essays(2)}, headers=WRITE)
        assert response.status_code == 403 and "CJLEDGER_API_TOKEN" in response.json()["detail"]


def test_rankings_and_decisions_are_still_served_after_projections_rebuild(
    client: TestClient, system: System, batches: list[UUID]
) -> None:
    bid = str(batches[0])
    before = (
        client.get(f"/batches/{bid}/rankings").json()["items"],
        client.get(f"/batches/{bid}/decisions").json()["items"],
    )
    rebuilder = system.runner()
    for name in PROJECTIONS:
        rebuilder.rebuild(name)
    assert system.read_model_store.active_generation("rankings") == 2
    after = (
        client.get(f"/batches/{bid}/rankings").json()["items"],
        client.get(f"/batches/{bid}/decisions").json()["items"],
    )
    assert after == before and before[0] and before[1]


def test_readyz_fails_when_the_read_models_lag_too_far(store_env: dict[str, str]) -> None:
    settings = Settings(api_ready_max_lag=0, api_follow=False)
    with System(settings, store_env=store_env) as system:
        run_batch(system.app, n=4, ref="lagging")
        with client_for(system) as client:
            response = client.get("/readyz")
            assert response.status_code == 503 and "lag" in response.json()["detail"]


def test_erasing_an_essay_needs_the_write_token_and_names_an_unknown_essay(
    client: TestClient,
) -> None:
    accepted = client.post("/batches", json={"essays": essays(4)}, headers=WRITE)
    batch_id = accepted.json()["batch_id"]
    path = f"/batches/{batch_id}/essays/e1/erase"
    assert client.post(path, json={"reason": "parent asked"}).status_code == 401
    assert client.post(path, json={"reason": ""}, headers=WRITE).status_code == 422
    erased = client.post(path, json={"reason": "parent asked"}, headers=WRITE)
    assert erased.status_code == 200 and erased.json()["essay_ref"]
    events = client.get(f"/batches/{batch_id}/events").json()["items"]
    assert events[-1]["type"] == "EssayErased"
    unknown = client.post(
        f"/batches/{batch_id}/essays/nobody/erase", json={"reason": "x"}, headers=WRITE
    )
    assert unknown.status_code == 404


# ---------------------------------------------------------------------- documented shapes


def documented_model(
    openapi: dict[str, Any], path: str, method: str, status: int
) -> type[BaseModel]:
    """The response model the OpenAPI schema names for ``status`` of a route."""
    responses = openapi["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document {status}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    model = getattr(api_schema, schema["$ref"].rsplit("/", 1)[1])
    assert isinstance(model, type) and issubclass(model, BaseModel)
    return model


def test_the_rankings_response_is_documented_in_openapi(client: TestClient) -> None:
    openapi = client.get("/openapi.json").json()
    route = openapi["paths"]["/batches/{batch_id}/rankings"]["get"]
    schema = route["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/Rankings"}
    ranking = openapi["components"]["schemas"]["Ranking"]["properties"]
    assert {"essay_id", "external_id", "score", "se", "rank", "comparisons"} <= set(ranking)
    assert route["responses"]["404"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorMessage"
    }
    assert "docs" in client.get("/docs").text.lower()
    refs = set(
        re.findall(r'"\$ref": ?"#/components/schemas/(\w+)"', client.get("/openapi.json").text)
    )
    assert refs and refs <= set(openapi["components"]["schemas"])  # every reference resolves


def test_every_response_has_the_shape_its_route_documents(
    client: TestClient, batches: list[UUID]
) -> None:
    openapi = client.get("/openapi.json").json()
    bid = str(batches[1])  # the batch with failures: every nullable column filled or not
    cases = [
        ("get", "/healthz", "/healthz", 200),
        ("get", "/readyz", "/readyz", 200),
        ("get", "/batches", "/batches", 200),
        ("get", "/batches", "/batches?limit=0", 422),
        ("get", "/batches/{batch_id}", f"/batches/{bid}", 200),
        ("get", "/batches/{batch_id}", "/batches/not-a-uuid", 404),
        ("get", "/batches/{batch_id}/rankings", f"/batches/{bid}/rankings", 200),
        ("get", "/batches/{batch_id}/rankings", f"/batches/{bid}/rankings".upper(), 404),
        ("get", "/batches/{batch_id}/comparisons", f"/batches/{bid}/comparisons", 200),
        ("get", "/batches/{batch_id}/comparisons", f"/batches/{bid}/comparisons?limit=0", 422),
        ("get", "/batches/{batch_id}/decisions", f"/batches/{bid}/decisions", 200),
        ("get", "/batches/{batch_id}/events", f"/batches/{bid}/events", 200),
        ("get", "/batches/{batch_id}/state", f"/batches/{bid}/state", 200),
        ("get", "/batches/{batch_id}/state", f"/batches/{bid}/state?version=0", 422),
        ("get", "/batches/{batch_id}/rankings.csv", "/batches/%01/rankings.csv", 422),
        ("get", "/batches/{batch_id}/report", f"/batches/{uuid_zero()}/report", 404),
        ("post", "/batches", "/batches", 401),
    ]
    for method, route, url, status in cases:
        response = client.request(method, url)
        assert response.status_code == status, (url, response.text)
        documented_model(openapi, route, method, status).model_validate(response.json())
    submitted = client.post("/batches", json={"essays": essays(3)}, headers=WRITE)
    documented_model(openapi, "/batches", "post", 202).model_validate(submitted.json())
    erase = "/batches/{batch_id}/essays/{external_id}/erase"
    erased = client.post(
        f"/batches/{submitted.json()['batch_id']}/essays/e0/erase",
        json={"reason": "asked"},
        headers=WRITE,
    )
    documented_model(openapi, erase, "post", 200).model_validate(erased.json())
    refused = client.post("/batches", json={"essays": essays(2)}, headers={"Authorization": "x"})
    assert refused.status_code == 401


def uuid_zero() -> str:
    return "00000000-0000-0000-0000-000000000000"


def test_the_documented_status_filter_names_every_status_a_batch_takes() -> None:
    statuses = set(api_schema.BatchStatus.__args__)  # type: ignore[attr-defined]
    assert statuses == {"registered", "running"} | {s.value for s in FinalStatus}


def forged_cursor(*values: Any) -> str:
    from projections.queries import encode_cursor

    return encode_cursor(values)


@pytest.mark.parametrize(
    ("url", "loc", "message"),
    [
        ("/batches/a%00b", ["path", "batch_id"], "control characters (U+0000)"),
        ("/batches/a%1Fb/rankings", ["path", "batch_id"], "control characters (U+001F)"),
        ("/batches/%20{bid}/rankings", ["path", "batch_id"], "whitespace"),
        ("/batches/" + "a" * 201 + "/decisions", ["path", "batch_id"], "at most 200"),
        ("/batches/%00/comparisons", ["path", "batch_id"], "control characters"),
        ("/batches/%00/events", ["path", "batch_id"], "control characters"),
        ("/batches/%00/state", ["path", "batch_id"], "control characters"),
        ("/batches/%00/report", ["path", "batch_id"], "control characters"),
        ("/batches?status=%00", ["query", "status"], "'registered', 'running'"),
        ("/batches?status=done", ["query", "status"], "'scored', 'failed'"),
        ("/batches?mode=fast", ["query", "mode"], "'per_request', 'serial_bundle'"),
        ("/batches?cursor=%00", ["query", "cursor"], "control characters"),
        ("/batches?cursor=" + "a" * 201, ["query", "cursor"], "at most 200"),
        ("/batches?cursor=" + forged_cursor("2026", "a\x00b"), ["query", "cursor"], "handed out"),
        ("/batches?cursor=" + forged_cursor("2026", 7), ["query", "cursor"], "handed out"),
        ("/batches?cursor=" + forged_cursor(None, ""), ["query", "cursor"], "handed out"),
        ("/batches/{bid}/comparisons?cursor=" + forged_cursor(1.5, 0), ["query", "cursor"], "out"),
        ("/batches/{bid}/comparisons?cursor=" + forged_cursor("1", 0), ["query", "cursor"], "out"),
        ("/batches/{bid}/comparisons?cursor=" + forged_cursor(2**40, 0), ["query", "cursor"], "ou"),
        ("/batches/{bid}/comparisons?cursor=" + forged_cursor(True, 0), ["query", "cursor"], "ut"),
        ("/batches/{bid}/comparisons?outcome=won", ["query", "outcome"], "'pending', 'success'"),
        ("/batches/{bid}/comparisons?limit=1e3", ["query", "limit"], "valid integer"),
        ("/batches/{bid}/state?version=2147483648", ["query", "version"], "less than or equal"),
        ("/batches/{bid}/state?version=nan", ["query", "version"], "valid integer"),
    ],
)
def test_a_parameter_with_control_characters_or_a_forged_cursor_is_422_naming_it(
    client: TestClient, batches: list[UUID], url: str, loc: list[str], message: str
) -> None:
    response = client.get(url.replace("{bid}", str(batches[0])))
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc and message in error["msg"]
    assert client.get("/readyz").json()["status"] == "ready"  # nothing reached the store


def test_erasing_an_essay_named_with_a_control_character_is_422(
    client: TestClient, batches: list[UUID]
) -> None:
    response = client.post(
        f"/batches/{batches[0]}/essays/e%001/erase", json={"reason": "x"}, headers=WRITE
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "external_id"]


def test_a_batch_id_in_any_spelling_of_its_uuid_names_the_same_batch(
    client: TestClient, batches: list[UUID]
) -> None:
    bid = str(batches[0])
    plain = client.get(f"/batches/{bid}/rankings").json()
    for spelling in (bid.upper(), bid.replace("-", ""), "{" + bid + "}"):
        shown = client.get(f"/batches/{spelling}/rankings").json()
        assert shown["batch_id"] == bid and shown["items"] == plain["items"] != []
        assert client.get(f"/batches/{spelling}/decisions").json()["items"]
        page = client.get(f"/batches/{spelling}/comparisons", params={"limit": 1}).json()
        assert page["items"][0]["batch_id"] == bid
