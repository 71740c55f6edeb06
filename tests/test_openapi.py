"""The OpenAPI documents of the three HTTP APIs, against the running services: each describes exactly the app's
real routes and is valid OpenAPI 3; and a property-based fuzz (schemathesis) of every operation, logged in as
a tenant the test makes, finds no 5xx, no traceback, and every answer as documented (status, content type,
body; every error in the one JSON shape)."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate as validate_openapi

from conftest import SAMPLE_CONSTRAINTS, unique_name
from mysimbdp import config as config_mod

pytestmark = [
    pytest.mark.services,
    # schemathesis's own strategies draw from `random`: hypothesis warns about it once per operation
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

APIS = ("batch", "stream", "query")
PLATFORM_ROUTES = ("/healthz", "/v1/openapi.json", "/metrics")
TRACEBACK = "Traceback (most recent call last)"


def url_of(cfg, api: str) -> str:
    return {"batch": cfg.batch_url, "stream": cfg.stream_url, "query": cfg.query_url}[api]()


def create_app(cfg, api: str):
    if api == "batch":
        from batchingestmanager.api import create_app
    elif api == "stream":
        from streamingestmanager.api import create_app
    else:
        from queryapi.api import create_app
    return create_app(cfg)


def local_document(cfg, api: str) -> dict:
    if api == "batch":
        from batchingestmanager.openapi import document
    elif api == "stream":
        from streamingestmanager.openapi import document
    else:
        from queryapi.openapi import document
    return document(cfg)


def served(cfg, api: str) -> dict:
    r = requests.get(url_of(cfg, api) + "/v1/openapi.json", timeout=10)  # no login needed
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def real_routes(app) -> set[tuple[str, str]]:
    """(OpenAPI path, method) of every route of the Flask app. Flask answers HEAD for every GET: a HEAD counts
    only where the document describes it too (checked apart)."""
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
        for m in rule.methods - {"OPTIONS", "HEAD"}:
            routes.add((path, m.lower()))
    return routes


def operations(doc: dict) -> set[tuple[str, str]]:
    return {(p, m) for p, item in doc["paths"].items() for m in item if m != "parameters"}


# --- the documents -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("api", APIS)
def test_the_document_describes_every_route_and_only_those(platform, api):
    doc = served(platform, api)
    validate_openapi(doc)  # valid OpenAPI 3.1, every $ref resolved, every path parameter declared
    assert doc == local_document(platform, api)  # the running service serves this checkout's document
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": url_of(platform, api)}]
    app = create_app(platform, api)
    described = operations(doc)
    heads = {(p, m) for p, m in described if m == "head"}
    assert all((p, "get") in described for p, _ in heads), heads  # a HEAD only beside a GET
    assert real_routes(app) == described - heads, (real_routes(app) - described, described - real_routes(app))
    for p, item in doc["paths"].items():
        for m, op in item.items():
            if m == "parameters" or p in PLATFORM_ROUTES:
                continue
            # every operation of the tenants' own data says how a login, the database and bad input fail
            assert {"400", "401", "404", "429", "503"} <= set(op["responses"]), (p, m)
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert resp == {"$ref": f"#/components/responses/E{status}"}, (p, m, status)
    for name, resp in doc["components"]["responses"].items():  # ... each in the one error shape
        assert resp["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, name
    assert doc["components"]["schemas"]["Error"]["required"] == ["error", "code"]


def test_without_a_login_every_operation_asks_for_one(platform):
    """Every operation but the public ones answers 401 in the error shape to a request without credentials
    (no password is tried: nothing counts towards a lock-out)."""
    for api in APIS:
        base = url_of(platform, api)
        for p, m in sorted(operations(served(platform, api))):
            r = requests.request(m.upper(), base + re.sub(r"{\w+}", "x", p), timeout=30)
            if p in ("/healthz", "/v1/openapi.json"):
                assert r.status_code == 200, (api, m, p, r.status_code)
                continue
            assert r.status_code == 401, (api, m, p, r.status_code, r.text[:200])
            assert r.headers["WWW-Authenticate"].startswith("Basic"), (api, m, p)
            if m != "head":
                assert r.json()["code"] == "unauthorized", (api, m, p, r.text[:200])


def raw(base: str, request: bytes) -> tuple[int, dict, bytes]:
    """Send ``request`` as it is (no client library would send it) and read the whole answer."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(base)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("api", APIS)
def test_what_the_server_refuses_itself_is_json_in_the_error_shape_too(platform, api):
    """A request line or headers past the server's limits, or a request it cannot parse, never reach the app:
    the answer is still the documented one (414, 431, 400), JSON with a code, not the server's HTML page."""
    base = url_of(platform, api)
    many = b"".join(b"X-Filler-%d: 1\r\n" % i for i in range(60))
    for request, status, code in [
        (b"GET /v1/stream?limit=" + b"9" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", 431, "headers_too_large"),
        (b"G\x01T /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    ]:
        got, headers, body = raw(base, request)
        assert got == status, (api, got, body[:200])
        assert headers["Content-Type"] == "application/json", (api, headers)
        answer = json.loads(body)
        assert answer["code"] == code and answer["error"], answer


# --- the fuzz ----------------------------------------------------------------------------------------------

EVENTS = """CREATE TABLE {ks}.events (device text, day date, at timestamp, kind text, value double, n int,
    payload blob, tags set<text>, PRIMARY KEY ((device, day), at))"""
FUZZ_CONSTRAINTS = {
    **SAMPLE_CONSTRAINTS,
    "max_file_size_bytes": 64 * 1024,  # what the fuzzer uploads stays small
    "objects": {"max_object_bytes": 64 * 1024, "max_total_bytes": 1 << 20, "max_objects": 200},
}
# generated requests per operation and phase (positive and negative): the three APIs' 64 operations take about
# 70 s here; FUZZ_EXAMPLES=200 is a deeper run (about 4 minutes)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
# the fuzz's own tenant (no apps: nothing starts a container; small limits), made by `fuzz_tenant`
FUZZ_TENANT, FUZZ_PASSWORD = unique_name("fz"), secrets.token_urlsafe(16)
OBJECT_KEY = "fuzz/known.bin"
# Path parameters drawn half the time from things that exist (else nearly every operation would only ever answer
# 404): the tenant itself, its table, an object, an open upload, a job, a file name of an allowed format.
# "known-..." stands for an id the fixture learns from the API; the fuzz puts the id in before each call.
STEER = {
    "batch": {"upload_id": "known-upload", "job_id": "known-job", "name": "fuzz.csv"},
    "stream": {"tenant": FUZZ_TENANT, "instance": "s0"},
    "query": {"tenant": FUZZ_TENANT, "table": "events", "key": OBJECT_KEY},
}


@pytest.fixture(scope="module")
def fuzz_tenant(platform, registry):
    """The fuzz's tenant, with a table, an object, an open upload and a job (failed: it has no batch app);
    returns the ids of the last two by their "known-..." names."""
    import hashlib
    import time

    from batchingestmanager.api import MANAGER_SILENCE
    from batchingestmanager.manager import heartbeat_age
    from mysimbdp import constraints, db, tenants

    # a batch manager restarting after an earlier test's fault would make uploads answer 503: wait for it
    deadline = time.monotonic() + 60
    while (age := heartbeat_age(platform)) is None or age > MANAGER_SILENCE / 3:
        assert time.monotonic() < deadline, f"the batch manager is not running (heartbeat {age})"
        time.sleep(0.5)
    registry.create(FUZZ_TENANT, FUZZ_PASSWORD, constraints.parse(FUZZ_CONSTRAINTS))
    try:
        s = db.connect(platform, tenants.cassandra_login(platform, FUZZ_TENANT))
        try:
            s.execute(EVENTS.format(ks=FUZZ_TENANT))
        finally:
            s.cluster.shutdown()
        http = requests.Session()
        http.auth = (FUZZ_TENANT, FUZZ_PASSWORD)
        blob = bytes(range(256))
        r = http.put(
            f"{platform.query_url()}/v1/objects/{OBJECT_KEY}",
            data=blob,
            timeout=30,
            headers={"X-Checksum-Sha256": hashlib.sha256(blob).hexdigest()},
        )
        assert r.status_code == 201, r.text
        r = http.post(
            f"{platform.batch_url()}/v1/uploads", timeout=30, json={"name": "open.csv", "size": 100, "sha256": "0" * 64}
        )
        assert r.status_code == 201, r.text
        ids = {"known-upload": r.json()["upload_id"]}
        data = b"id,title\n1,one\n"
        r = http.put(
            f"{platform.batch_url()}/v1/files/known.csv",
            data=data,
            timeout=30,
            headers={"Content-SHA256": hashlib.sha256(data).hexdigest()},
        )
        assert r.status_code == 201, r.text
        ids["known-job"] = r.json()["job"]["job_id"]
        yield ids
    finally:
        registry.delete(FUZZ_TENANT)


def _steer(doc: dict, known: dict[str, str]) -> dict:
    """The document, with each path parameter named in ``known`` either that value or any string."""
    doc = copy.deepcopy(doc)
    for item in doc["paths"].values():
        for param in item.get("parameters", []):
            if param["in"] == "path" and param["name"] in known:
                param["schema"] = {"anyOf": [{"const": known[param["name"]]}, {"type": "string"}]}
    return doc


FUZZ_CONFIG = {
    "auth": {"basic": {"username": FUZZ_TENANT, "password": FUZZ_PASSWORD}},
    # credentials are never generated (a wrong password would cost a bcrypt check and count towards a lock-out):
    # test_without_a_login_every_operation_asks_for_one covers requests without them
    "generation": {"max-examples": EXAMPLES, "database": "none", "mode": "all", "with-security-parameters": False},
    "phases": {"examples": {"enabled": False}, "stateful": {"enabled": False}},
    "request-timeout": 60,
    "checks": {
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "negative_data_rejection": {"enabled": True},
        # a file without its Content-SHA256 is answered 428 checksum_required (documented; the SDKs know it)
        "missing_required_header": {"enabled": True, "expected-statuses": [400, 401, 403, 406, 415, 422, 428]},
        "unsupported_method": {"enabled": True},
        "positive_data_acceptance": {"enabled": False},  # a valid request may still name a table that is not there
        "ignored_auth": {"enabled": False},  # see above
        "use_after_free": {"enabled": False},
        "ensure_resource_availability": {"enabled": False},
        "object_level_authorization": {"enabled": False},
    },
}


def _schema(api: str):
    """The API's document as this checkout builds it (the running service serves the same: checked above)."""
    cfg = config_mod.load()
    doc = _steer(local_document(cfg, api), STEER[api])
    options = {**FUZZ_CONFIG, "base-url": url_of(cfg, api)}
    return schemathesis.openapi.from_dict(doc, config=schemathesis.Config.from_dict(options))


SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large]


def fuzz(case, ids: dict[str, str]) -> None:
    """One generated request: no 5xx, no traceback, an error in the one shape, and the answer as documented."""
    for name, value in case.path_parameters.items():
        if value in ids:
            case.path_parameters[name] = ids[value]
    response = case.call()
    assert response.status_code < 500, (response.status_code, response.content[:500])
    assert TRACEBACK.encode() not in response.content  # an object's bytes need not be text
    if response.status_code >= 400 and case.method.upper() != "HEAD":
        body = json.loads(response.content)
        assert isinstance(body.get("error"), str) and isinstance(body.get("code"), str), body
    case.validate_response(response)


@pytest.mark.slow
@_schema("batch").parametrize()
@settings(deadline=None, suppress_health_check=SLOW_IS_FINE)
def test_fuzz_batch(case, fuzz_tenant):
    fuzz(case, fuzz_tenant)


@pytest.mark.slow
@_schema("stream").parametrize()
@settings(deadline=None, suppress_health_check=SLOW_IS_FINE)
def test_fuzz_stream(case, fuzz_tenant):
    fuzz(case, fuzz_tenant)


@pytest.mark.slow
@_schema("query").parametrize()
@settings(deadline=None, suppress_health_check=SLOW_IS_FINE)
def test_fuzz_query(case, fuzz_tenant):
    fuzz(case, fuzz_tenant)
