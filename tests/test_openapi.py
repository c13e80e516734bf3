"""The contract: /openapi.json is valid OpenAPI 3.1, names every API route, matches the real
answers, and holds under schemathesis against the live app."""

from __future__ import annotations

import json
import re

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import API_KEY, UNHURRIED, LiveServer
from tests.test_docs import table_rows
from wallet_proxy.cli import DEMO_TRIGGER
from wallet_proxy.errors import InvalidRequest
from wallet_proxy.openapi import ROUTES, ErrorAnswer, TagsAnswer, TagsQueued, WalletAnswer
from wallet_proxy.rules import WalletQuerySchema, load_tags, parse_wallet_query
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY, DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TRIGGER_KEY = "trigger-key-for-tests-1"
TRIGGER_AUTH = {"Authorization": f"Bearer {TRIGGER_KEY}"}
CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    positive_data_acceptance,
]
# A valid request may still meet an unknown customer (404), a key in use (409) or a key
# reused with another body (422).
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "404", "409", "422"]}}}
)
# Served to people or to Prometheus, not part of the API.
NOT_API = ("support", "prometheus", "openapi")


def test_the_document_is_valid_openapi_3_1(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"] == "3.1.0"
    validate(document)  # openapi-spec-validator: raises on an invalid document


def test_every_api_route_is_documented_and_nothing_else(app, client):
    served = {
        (method.lower(), rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}"))
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] not in NOT_API
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {
        (method, path)
        for path, item in client.get("/openapi.json").get_json()["paths"].items()
        for method in item
    }
    assert documented == served == {(route.method, route.path) for route in ROUTES}


def as_written(rule: str) -> str:
    """A Flask rule as the docs write it: `<path:user_id>` is `<user_id>`."""
    return re.sub(r"<(?:\w+:)?(\w+)>", r"<\1>", rule)


def test_every_route_is_in_the_api_page_and_every_api_route_in_the_document(app, client):
    """docs/api.md's table names each route of the app once and says which are in
    /openapi.json: exactly those the document describes."""
    rows = {
        match[1]: row[2]
        for row in table_rows("api.md")
        if len(row) == 3 and (match := re.fullmatch(r"`([A-Z]+ /\S*)`", row[0]))
    }
    served = {
        f"{method} {as_written(rule.rule)}"
        for rule in app.url_map.iter_rules()
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert set(rows) == served
    assert all(cell == "yes" or cell.startswith("no: ") for cell in rows.values())
    described = {
        f"{method.upper()} {path.replace('{', '<').replace('}', '>')}"
        for path, item in client.get("/openapi.json").get_json()["paths"].items()
        for method in item
    }
    assert {route for route, cell in rows.items() if cell == "yes"} == described


def test_every_status_has_the_error_shape(client):
    for path, item in client.get("/openapi.json").get_json()["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                schema = answer["content"]["application/json"]["schema"]["$ref"]
                if not status.startswith("2"):
                    assert schema.endswith("/ErrorAnswer"), (method, path, status)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/wallets/demo-alice",
        "/v1/wallets/demo-alice?culture=es-ES&limit=1",
        "/v1/wallets/demo-bob",
        "/v1/wallets/demo-carol",
        "/v1/wallets/demo-mallory",
        "/v1/wallets/user-12",
    ],
)
def test_real_wallet_answers_match_the_answer_schema(make_app, path):
    with LiveServer(make_app(**UNHURRIED)) as server:
        response = requests.get(server.url + path, headers=AUTH, timeout=20)
    assert response.status_code == 200
    WalletAnswer().load(response.json())  # raises on a missing, extra or mistyped key


def test_real_errors_match_the_error_schema(client):
    for path, headers in (("/v1/wallets/nobody", AUTH), ("/v1/wallets/x", {}), ("/v1/w", {})):
        ErrorAnswer().load(client.get(path, headers=headers).get_json())


def test_the_answer_schema_refuses_drift():
    answer = {
        "user_id": "u",
        "culture": "en-US",
        "available_points": 1,
        "total_points": 1,
        "offer_count": 0,
        "has_offers": False,
        "offers": [],
        "fetched_at": "2026-01-01T00:00:00Z",
        "stale": False,
        "offers_truncated": False,
    }
    WalletAnswer().load(answer)
    for broken in (
        {**answer, "new_key": 1},
        {**answer, "stale": "false"},
        {**answer, "offers": 0},
    ):
        with pytest.raises(ValidationError):
            WalletAnswer().load(broken)
    with pytest.raises(ValidationError):
        WalletAnswer().load({k: v for k, v in answer.items() if k != "stale"})


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"culture": ""},
        {"culture": "en"},
        {"culture": "zh-Hant-TW"},
        {"culture": "es-419"},
        {"culture": "es_ES"},
        {"culture": "ZH_hant_tw"},
        {"culture": "en--US"},
        {"culture": "en_"},
        {"culture": "english"},
        {"culture": "en-"},
        {"culture": "en\n"},
        {"limit": "1"},
        {"limit": "1000"},
        {"limit": "1001"},
        {"limit": "0"},
        {"limit": "-1"},
        {"limit": "2.5"},
        {"cb": "123"},
    ],
)
def test_the_query_schema_states_the_query_rules(query):
    """parse_wallet_query (by hand, on the hot path) and the documented schema agree."""
    try:
        parse_wallet_query("demo-alice", query)
        accepted = True
    except InvalidRequest:
        accepted = False
    assert (WalletQuerySchema().validate(query) == {}) == accepted


@pytest.mark.parametrize(
    ("mode", "status", "schema"), [("queued", 202, TagsQueued), ("direct", 200, TagsAnswer)]
)
def test_tags_answers_match_the_schema(sandbox, tmp_path, mode, status, schema, make_app):
    app = make_app(
        SESSIONM_CORE_URL=sandbox.url,
        SESSIONM_CORE_API_KEY=DEMO_CORE_API_KEY,
        SESSIONM_CORE_API_SECRET=DEMO_CORE_API_SECRET,
        WALLET_PROXY_TAGS_MODE=mode,
        WALLET_PROXY_DATA_DIR=str(tmp_path),
    )
    client = app.test_client()
    for body in ({"tags": ["a"]}, {"tags": ["a", "b"], "ttl": 60}):
        response = client.post("/v1/external-users/ext-1/tags", json=body, headers=AUTH)
        assert response.status_code == status
        schema().load(response.get_json())


def test_a_whole_ttl_written_with_a_point_is_a_whole_number():
    """Found by schemathesis: JSON Schema's integers include 60.0, so the relay takes it."""
    assert load_tags({"tags": ["a"], "ttl": 60.0}) == {"tags": ["a"], "ttl": 60}
    for ttl in (60.5, "60", True, float("inf"), 1e300):
        with pytest.raises(InvalidRequest, match="ttl must be a whole number"):
            load_tags({"tags": ["a"], "ttl": ttl})


@pytest.fixture
def contract_url(sandbox, tmp_path, make_app):
    """The app as deployed with every route on (Connect, Core and Braze all on the
    sandbox), over HTTP."""
    app = make_app(
        SESSIONM_CORE_URL=sandbox.url,
        SESSIONM_CORE_API_KEY=DEMO_CORE_API_KEY,
        SESSIONM_CORE_API_SECRET=DEMO_CORE_API_SECRET,
        BRAZE_REST_URL=sandbox.url,
        BRAZE_REST_API_KEY=DEMO_BRAZE_API_KEY,
        WALLET_PROXY_TRIGGER_KEYS=TRIGGER_KEY,
        WALLET_PROXY_DATA_DIR=str(tmp_path),
    )
    with LiveServer(app) as server:
        yield server.url


KNOWN_IDS = ("demo-alice", "demo-bob", "user-7", "ext-3")
# Invalid requests only for routes that take input.
CASES = [
    pytest.param(route, mode, id=f"{route.method} {route.path} {mode.value}")
    for route in ROUTES
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE or route.parameters or route.body
]


@pytest.mark.slow
@pytest.mark.parametrize(("route", "mode"), CASES)
def test_the_live_app_keeps_the_contract(contract_url, route, mode):
    """schemathesis: requests made from the document, valid ones and not, each with a valid
    key. Every answer must be as documented (status, headers, body), invalid input refused
    with a 4xx, and no 500 ever (the 5xx the document states come from SessionM)."""
    schema = schemathesis.openapi.from_url(f"{contract_url}/openapi.json", config=CONFIG)
    operation = schema[route.path][route.method.upper()]
    strategy = operation.as_strategy(mode)
    if "{user_id}" in route.path and mode is GenerationMode.POSITIVE:
        # Random ids are unknown customers (404): mix in ones the sandbox knows.
        known = [operation.as_strategy(mode, path_parameters={"user_id": u}) for u in KNOWN_IDS]
        strategy = st.one_of(strategy, *known)
    if route.path == "/v1/braze/triggers" and mode is GenerationMode.POSITIVE:
        # Generated bodies rarely meet the rules across fields: mix in the demo's trigger.
        strategy = st.one_of(strategy, operation.as_strategy(mode, body=json.loads(DEMO_TRIGGER)))
    statuses: list[int] = []

    @given(case=strategy)
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case) -> None:
        response = case.call_and_validate(headers=auth, checks=checks)
        statuses.append(response.status_code)
        assert response.status_code != 500

    auth = TRIGGER_AUTH if route.path == "/v1/braze/triggers" else AUTH
    checks = CHECKS
    if route.path == "/v1/braze/triggers":
        # Its body takes SessionM's loose values (ids as numbers, null for nothing) and
        # has rules across fields (one of two ids, a customer unless broadcast) that JSON
        # Schema doesn't state: valid-or-not by the document is not valid-or-not by
        # the route. Every answer must still be as documented, and never a 500.
        checks = [
            c for c in CHECKS if c not in (positive_data_acceptance, negative_data_rejection)
        ]
    check()
    if mode is GenerationMode.POSITIVE:
        assert route.ok_status in statuses
