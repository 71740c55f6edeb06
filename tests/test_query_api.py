"""The query API against the real Cassandra: a tenant reads, writes, searches, exports and keeps objects of
its own, and every bad input is a clear 4xx with a code (503 while the database is down), never a 500."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time

import pytest
import requests

from conftest import wait_session_back

pytestmark = pytest.mark.services

EVENTS = """CREATE TABLE {ks}.events (
    device text, day date, at timestamp, kind text, value double, n int, payload blob, tags set<text>,
    PRIMARY KEY ((device, day), at)) WITH CLUSTERING ORDER BY (at DESC)"""
OBJ_CONS = {
    "formats": ["csv"],
    "max_files": {"count": 5, "per": "staged"},
    "max_file_size_bytes": 1 << 20,
    "objects": {"max_object_bytes": 4 << 20, "max_total_bytes": 6 << 20, "max_objects": 50},
}


class Query:
    """The query API as one login sees it."""

    def __init__(self, cfg, user: str, password: str) -> None:
        self.base = cfg.query_url()
        self.http = requests.Session()
        self.http.auth = (user, password)

    def __getattr__(self, method):
        def call(path, **kw):
            kw.setdefault("timeout", 60)
            return self.http.request(method.upper(), self.base + path, **kw)

        return call

    def ok(self, method: str, path: str, **kw) -> dict:
        r = getattr(self, method)(path, **kw)
        assert r.status_code in (200, 201), (r.status_code, r.text)
        return r.json()["data"]


def refused(r: requests.Response, status: int, code: str) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == code, body
    assert "Traceback" not in r.text and body["error"]
    return body


def make_events_table(cfg, tenant: str) -> None:
    """What a tenant's app does: a table of its own, made with its own role."""
    from mysimbdp import db, tenants

    s = db.connect(cfg, tenants.cassandra_login(cfg, tenant))
    try:
        s.execute(EVENTS.format(ks=tenant))
    finally:
        s.cluster.shutdown()


def event(device: str, i: int, **extra) -> dict:
    at = 1_700_000_000_000 + i * 60_000  # one a minute
    return {
        "device": device,
        "day": time.strftime("%Y-%m-%d", time.gmtime(1_700_000_000)),
        "at": at,
        "kind": "ok" if i % 3 else "alarm",
        "value": i / 4,
        "n": i,
        **extra,
    }


@pytest.fixture
def query_tenant(make_tenant, platform):
    """A tenant with an ``events`` table, and the query API logged in as it."""

    def make(cons: dict | None = None):
        t, password = make_tenant(cons=cons)
        make_events_table(platform, t.name)
        return t, password, Query(platform, t.name, password)

    return make


def seed(q: Query, device: str, n: int) -> list[dict]:
    rows = [event(device, i) for i in range(n)]
    for start in range(0, n, 500):
        q.ok("post", "/v1/tables/events/rows", json={"rows": rows[start : start + 500]})
    return rows


# --- schema ------------------------------------------------------------------------------------------------


def test_tables_are_listed_with_key_and_indexes_and_an_index_can_be_made_and_dropped(query_tenant):
    t, pw, q = query_tenant()
    tables = q.ok("get", "/v1/tables")["tables"]
    assert [x["name"] for x in tables] == ["events"]  # the platform's own mysimbdp_* tables are not shown
    ev = tables[0]
    assert ev["partition_key"] == ["device", "day"]
    assert ev["clustering"] == [{"name": "at", "order": "DESC"}]
    assert {"name": "tags", "type": "set<text>"} in ev["columns"]

    made = q.post("/v1/tables/events/indexes", json={"column": "kind"})
    assert made.status_code == 201 and made.json()["data"]["name"] == "events_kind_sai"
    again = q.ok("post", "/v1/tables/events/indexes", json={"column": "kind"})
    assert again["created"] is False
    info = q.ok("get", "/v1/tables/events")
    assert {"name": "events_kind_sai", "column": "kind", "kind": "sai"} in info["indexes"]
    refused(q.post("/v1/tables/events/indexes", json={"column": "nope"}), 400, "unknown_column")
    refused(q.delete("/v1/tables/events/indexes/other_idx"), 404, "no_such_index")
    q.ok("delete", "/v1/tables/events/indexes/events_kind_sai")
    assert q.ok("get", "/v1/tables/events")["indexes"] == []


# --- reads -------------------------------------------------------------------------------------------------


def test_rows_by_key_by_clustering_range_with_projection_and_iso_dates(query_tenant):
    t, pw, q = query_tenant()
    rows = seed(q, "d1", 50)
    seed(q, "d2", 5)
    key = {"device": "d1", "day": rows[0]["day"]}
    got = q.ok("post", "/v1/tables/events/query", json={"where": key, "page_size": 1000})
    assert got["count"] == 50 and got["next_page_token"] is None
    assert got["rows"][0]["at"] == _iso(rows[-1]["at"])  # newest first (the table's order is DESC)
    # a clustering range, ISO 8601 in, projection
    lo, hi = _iso(rows[10]["at"]), _iso(rows[20]["at"])
    got = q.ok(
        "post",
        "/v1/tables/events/query",
        json={"where": {**key, "at": {"gte": lo, "lt": hi}}, "columns": ["n", "at"]},
    )
    assert sorted(r["n"] for r in got["rows"]) == list(range(10, 20))
    assert set(got["rows"][0]) == {"n", "at"}
    # a zone other than UTC means the same instant
    plus_two = time.strftime("%Y-%m-%dT%H:%M:%S+02:00", time.gmtime(rows[10]["at"] / 1000 + 7200))
    shifted = q.ok("post", "/v1/tables/events/query", json={"where": {**key, "at": {"gte": plus_two}}, "columns": ["n"]})
    assert min(r["n"] for r in shifted["rows"]) == 10
    # limit
    got = q.ok("post", "/v1/tables/events/query", json={"where": key, "limit": 7})
    assert got["count"] == 7 and got["next_page_token"] is None
    # a limit over several pages: 3, 3, then 1, and no token after
    counts, token = [], None
    while True:
        body = {"where": key, "limit": 7, "page_size": 3, **({"page_token": token} if token else {})}
        page = q.ok("post", "/v1/tables/events/query", json=body)
        counts.append(page["count"])
        token = page["next_page_token"]
        if token is None:
            break
    assert counts == [3, 3, 1]
    # count
    assert q.ok("post", "/v1/tables/events/count", json={"where": key})["count"] == 50
    assert total_rows(q) == 55
    body = refused(q.post("/v1/tables/events/count", json={}), 400, "needs_filter")  # the whole table
    assert "export" in body["hint"]


def total_rows(q: "Query", table: str = "events") -> int:
    """Every row of a table, counted the way the API offers: the last line of its export."""
    r = q.get(f"/v1/tables/{table}/export", params={"format": "csv"})
    assert r.status_code == 200, r.text
    last = r.text.rstrip("\n").rsplit("\n", 1)[-1]
    assert last.startswith("# end rows=") and last.endswith(" complete"), last
    return int(last.split("=")[1].split()[0])


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def test_paging_returns_every_row_once_and_tokens_are_bound_to_query_and_tenant(query_tenant):
    t, pw, q = query_tenant()
    rows = seed(q, "d1", 23)
    key = {"device": "d1", "day": rows[0]["day"]}
    body = {"where": key, "columns": ["n"], "page_size": 5}
    seen, token, pages, first_token = [], None, 0, None
    while True:
        page = q.ok("post", "/v1/tables/events/query", json={**body, **({"page_token": token} if token else {})})
        seen += [r["n"] for r in page["rows"]]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
        first_token = first_token or token
    assert sorted(seen) == list(range(23)) and pages == 5

    path = "/v1/tables/events/query"
    # another query (other columns, other page size, other filter) with this token
    refused(q.post(path, json={**body, "columns": ["n", "at"], "page_token": first_token}), 400, "bad_page_token")
    refused(q.post(path, json={**body, "page_size": 6, "page_token": first_token}), 400, "bad_page_token")
    # forged: one character changed, cut short, random, not text
    forged = first_token[:10] + ("A" if first_token[10] != "A" else "B") + first_token[11:]
    for bad in (forged, first_token[:-6], "AAAA", "x" * 5000, 12345):
        refused(q.post(path, json={**body, "page_token": bad}), 400, "bad_page_token")


def test_another_tenants_page_token_is_refused(query_tenant):
    a_t, a_pw, a = query_tenant()
    b_t, b_pw, b = query_tenant()
    rows = seed(a, "d1", 6)
    seed(b, "d1", 6)
    body = {"where": {"device": "d1", "day": rows[0]["day"]}, "page_size": 2}
    token = a.ok("post", "/v1/tables/events/query", json=body)["next_page_token"]
    refused(b.post("/v1/tables/events/query", json={**body, "page_token": token}), 400, "bad_page_token")


def test_filters_that_would_scan_the_table_are_refused_with_the_index_to_make(query_tenant):
    t, pw, q = query_tenant()
    rows = seed(q, "d1", 30)
    path = "/v1/tables/events/query"
    body = refused(q.post(path, json={"where": {"kind": "alarm"}}), 400, "needs_index")
    assert '"column": "kind"' in body["hint"] and "device, day" in body["hint"]
    # a partial partition key
    body = refused(q.post(path, json={"where": {"device": "d1"}}), 400, "needs_index")
    assert "device" in body["error"]
    # a non-key column beside the whole key still needs its index
    key = {"device": "d1", "day": rows[0]["day"]}
    refused(q.post(path, json={"where": {**key, "n": {"gt": 3}}}), 400, "needs_index")
    refused(q.post("/v1/tables/events/count", json={"where": {"value": 1.0}}), 400, "needs_index")

    q.ok("post", "/v1/tables/events/indexes", json={"column": "kind"})
    q.ok("post", "/v1/tables/events/indexes", json={"column": "at"})
    got = _eventually(lambda: q.post(path, json={"where": {"kind": "alarm"}, "columns": ["n"], "page_size": 100}))
    assert sorted(r["n"] for r in got["rows"]) == [i for i in range(30) if i % 3 == 0]
    # a date range over the whole table, served by the index on `at`
    lo, hi = _iso(rows[5]["at"]), _iso(rows[9]["at"])
    got = _eventually(lambda: q.post(path, json={"where": {"at": {"gt": lo, "lte": hi}, "kind": "ok"}}))
    assert sorted(r["n"] for r in got["rows"]) == [7, 8]
    refused(q.post(path, json={"where": {"kind": {"in": ["ok", "alarm"]}}}), 400, "unsupported_filter")


def _eventually(call, seconds: float = 30):
    """An index answers once built; until then the API says 503 with a retry hint."""
    deadline = time.monotonic() + seconds
    while True:
        r = call()
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()["data"]
        assert r.status_code == 503 and r.headers.get("Retry-After"), r.text
        time.sleep(0.5)


@pytest.mark.parametrize(
    "body,code",
    [
        ({"where": {"device": "d1", "day": "2023-11-14", "n": "abc"}}, "bad_value"),
        ({"where": {"device": "d1", "day": "14/11/2023"}}, "bad_value"),
        ({"where": {"device": "d1", "day": "2023-11-14", "at": {"gte": "yesterday"}}}, "bad_value"),
        ({"where": {"device": 7, "day": "2023-11-14"}}, "bad_value"),
        ({"where": {"nope": 1}}, "unknown_column"),
        ({"where": {"device": {"like": "d%"}}}, "bad_query"),
        ({"where": {"device": "d1", "day": "2023-11-14"}, "limit": 0}, "bad_limit"),
        ({"where": {"device": "d1", "day": "2023-11-14"}, "limit": 10**9}, "bad_limit"),
        ({"where": {"device": "d1", "day": "2023-11-14"}, "page_size": 10**6}, "bad_limit"),
        ({"where": {"device": "d1", "day": "2023-11-14"}, "limit": "10"}, "bad_limit"),
        ({"where": {"device": "d1", "day": "2023-11-14"}, "columns": ["n", "x; DROP"]}, "unknown_column"),
        ({"where": {"device": {"in": [f"d{i}" for i in range(500)]}, "day": "2023-11-14"}}, "bad_query"),
        ({"where": "device = 'd1'"}, "bad_query"),
    ],
)
def test_bad_queries_are_4xx_with_a_code(query_tenant, body, code):
    t, pw, q = query_tenant()
    refused(q.post("/v1/tables/events/query", json=body), 400, code)


def test_not_json_and_too_large_bodies(query_tenant):
    t, pw, q = query_tenant()
    refused(q.post("/v1/tables/events/query", data=b"{not json"), 400, "bad_json")
    refused(q.post("/v1/tables/events/query", data=b"[" * 10000 + b"]" * 10000), 400, "bad_json")
    refused(q.post("/v1/tables/events/rows", data=b"x" * (3 << 20)), 413, "body_too_large")


# --- writes ------------------------------------------------------------------------------------------------


def test_writes_with_ttl_upsert_if_not_exists_and_delete(query_tenant):
    t, pw, q = query_tenant()
    row = event("w1", 1, payload="aGVsbG8=", tags=["a", "b"])
    key = {"device": "w1", "day": row["day"], "at": row["at"]}
    assert q.ok("post", "/v1/tables/events/rows", json={"rows": [row], "ttl": 3600})["written"] == 1
    ttl = q.ok("post", "/v1/tables/events/ttl", json={"key": key})["ttl"]
    assert 3590 <= ttl["value"] <= 3600 and 3590 <= ttl["kind"] <= 3600
    # a row's own _ttl beats the request's; an upsert changes the value
    q.ok("post", "/v1/tables/events/rows", json={"rows": [{**row, "value": 9.5, "_ttl": 60}], "ttl": 3600})
    assert q.ok("post", "/v1/tables/events/ttl", json={"key": key})["ttl"]["value"] <= 60
    got = q.ok("post", "/v1/tables/events/query", json={"where": {"device": "w1", "day": row["day"]}})["rows"]
    assert got[0]["value"] == 9.5 and got[0]["payload"] == "aGVsbG8=" and sorted(got[0]["tags"]) == ["a", "b"]
    # insert only if new
    out = q.ok("post", "/v1/tables/events/rows", json={"rows": [row, event("w1", 2)], "if_not_exists": True})
    assert out == {"written": 1, "existing": [0]}
    # without a TTL: null
    assert q.ok("post", "/v1/tables/events/ttl", json={"key": {**key, "at": event("w1", 2)["at"]}})["ttl"]["n"] is None
    # delete one row, then a whole partition
    q.ok("post", "/v1/tables/events/rows/delete", json={"key": key})
    refused(q.post("/v1/tables/events/ttl", json={"key": key}), 404, "no_such_row")
    q.ok("post", "/v1/tables/events/rows/delete", json={"keys": [{"device": "w1", "day": row["day"]}]})
    assert q.ok("post", "/v1/tables/events/count", json={"where": {"device": "w1", "day": row["day"]}})["count"] == 0


@pytest.mark.parametrize(
    "body,code",
    [
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1, "_ttl": -5}]}, "bad_ttl"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1}], "ttl": 0}, "bad_ttl"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1}], "ttl": 10**12}, "bad_ttl"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1}], "ttl": "60"}, "bad_ttl"),
        ({"rows": [{"device": "x", "day": "2023-11-14"}]}, "incomplete_key"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1, "n": 2**40}]}, "bad_value"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1, "payload": "***"}]}, "bad_value"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1, "ghost": 1}]}, "unknown_column"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": i} for i in range(501)]}, "too_many_rows"),
        ({"rows": []}, "bad_query"),
        ({"rows": [{"device": "x", "day": "2023-11-14", "at": 1}], "if_not_exists": "yes"}, "bad_query"),
    ],
)
def test_bad_writes_write_nothing(query_tenant, body, code):
    t, pw, q = query_tenant()
    refused(q.post("/v1/tables/events/rows", json=body), 400, code)
    assert total_rows(q) == 0


def test_a_bad_row_among_good_ones_writes_none_of_them(query_tenant):
    t, pw, q = query_tenant()
    rows = [event("m", i) for i in range(10)] + [{**event("m", 10), "n": "ten"}]
    refused(q.post("/v1/tables/events/rows", json={"rows": rows}), 400, "bad_value")
    assert total_rows(q) == 0


def test_deletes_need_the_partition_key(query_tenant):
    t, pw, q = query_tenant()
    refused(q.post("/v1/tables/events/rows/delete", json={"key": {"device": "x"}}), 400, "incomplete_key")
    refused(q.post("/v1/tables/events/rows/delete", json={"key": {"kind": "ok"}}), 400, "bad_query")
    refused(q.post("/v1/tables/events/ttl", json={"key": {"device": "x", "day": "2023-11-14"}}), 400, "incomplete_key")


# --- export ------------------------------------------------------------------------------------------------


def _ndjson(text: str) -> tuple[list[dict], list[dict], dict | None]:
    rows, marks, end = [], [], None
    for line in text.splitlines():
        obj = json.loads(line)
        if "_resume" in obj:
            marks.append(obj)
        elif "_end" in obj:
            end = obj["_end"]
        else:
            rows.append(obj)
    return rows, marks, end


def test_export_ndjson_and_csv_whole_table_with_count_and_resume(query_tenant):
    t, pw, q = query_tenant()
    n = 0
    for d in range(30):  # 30 partitions of 400 rows: 12,000 rows, marks every 10,000 at a partition boundary
        seed(q, f"dev{d:02d}", 400)
        n += 400
    r = q.get("/v1/tables/events/export", params={"columns": "device,at,n"}, stream=True)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
    rows, marks, end = _ndjson(r.text)
    assert end == {"rows": n, "complete": True} and len(rows) == n
    keys = [(x["device"], x["at"]) for x in rows]
    assert len(set(keys)) == n
    assert marks, "an export of 12,000 rows carries a resume mark"
    mark = marks[0]
    # cut off after the mark: resume from it, and the two parts make the table, nothing twice
    r2 = q.get("/v1/tables/events/export", params={"columns": "device,at,n", "resume": mark["_resume"]})
    rest, _, end2 = _ndjson(r2.text)
    assert end2 == {"rows": n, "complete": True}
    assert len(rest) == n - mark["rows"]
    assert set(keys[: mark["rows"]]) | {(x["device"], x["at"]) for x in rest} == set(keys)
    # the token is bound to the columns asked for
    refused(q.get("/v1/tables/events/export", params={"resume": mark["_resume"]}), 400, "bad_page_token")

    r = q.get("/v1/tables/events/export", params={"format": "csv", "columns": "device,n,kind"})
    lines = r.text.splitlines()
    assert r.headers["Content-Type"].startswith("text/csv")
    assert lines[0] == "device,n,kind" and lines[-1] == f"# end rows={n} complete"
    data = [line for line in lines[1:] if not line.startswith("#")]
    assert len(data) == n
    refused(q.get("/v1/tables/events/export", params={"format": "xml"}), 400, "bad_format")
    refused(q.get("/v1/tables/events/export", params={"columns": "n,secret"}), 400, "unknown_column")


def test_csv_export_quotes_values_that_look_like_comments(query_tenant):
    t, pw, q = query_tenant()
    q.ok("post", "/v1/tables/events/rows", json={"rows": [event("#not-a-comment", 1), event("plain", 2)]})
    lines = q.get("/v1/tables/events/export", params={"format": "csv", "columns": "device,n"}).text.splitlines()
    assert '"#not-a-comment","1"' in lines and "plain,2" in lines


# --- binary objects ----------------------------------------------------------------------------------------


def test_objects_put_get_range_head_list_delete(query_tenant):
    t, pw, q = query_tenant(OBJ_CONS)
    data = os.urandom(3 * 1024 * 1024 + 77)
    sha = hashlib.sha256(data).hexdigest()
    put = q.put("/v1/objects/clips/one.mp4", data=data, headers={"Content-Type": "video/mp4", "X-Checksum-Sha256": sha})
    assert put.status_code == 201, put.text
    meta = put.json()["data"]
    assert meta["size"] == len(data) and meta["sha256"] == sha and meta["content_type"] == "video/mp4"
    g = q.get("/v1/objects/clips/one.mp4")
    assert g.status_code == 200 and g.content == data and g.headers["Content-Type"] == "video/mp4"
    assert g.headers["ETag"] == f'"{sha}"'
    # from the middle, across a chunk boundary; an open end; a suffix
    for header, part in (
        ("bytes=1048000-1049000", data[1048000:1049001]),
        (f"bytes={len(data) - 100}-", data[-100:]),
        ("bytes=-5", data[-5:]),
        ("bytes=0-0", data[:1]),
        (f"bytes=10-{10**12}", data[10:]),
    ):
        r = q.get("/v1/objects/clips/one.mp4", headers={"Range": header})
        assert r.status_code == 206 and r.content == part, header
        assert r.headers["Content-Range"].endswith(f"/{len(data)}")
    for header in (f"bytes={len(data)}-", "bytes=5-2", "bytes=-0", "bytes=x-y"):
        refused(q.get("/v1/objects/clips/one.mp4", headers={"Range": header}), 416, "range_not_satisfiable")
    for header in ("items=0-5", "pages=1", "bytes=0-1,5-6"):  # another unit, or several ranges: the whole object
        r = q.get("/v1/objects/clips/one.mp4", headers={"Range": header})
        assert r.status_code == 200 and len(r.content) == len(data), header
    h = q.head("/v1/objects/clips/one.mp4")
    assert h.status_code == 200 and int(h.headers["Content-Length"]) == len(data) and h.headers["X-Checksum-Sha256"] == sha

    q.put("/v1/objects/clips/two.txt", data=b"hello", headers={"Content-Type": "text/plain"})
    q.put("/v1/objects/other/three", data=b"")
    listed = q.ok("get", "/v1/objects", params={"prefix": "clips/"})["objects"]
    assert [o["key"] for o in listed] == ["clips/one.mp4", "clips/two.txt"]
    page = q.ok("get", "/v1/objects", params={"page_size": 1})
    assert len(page["objects"]) == 1 and page["next_page_token"]
    page2 = q.ok("get", "/v1/objects", params={"page_size": 1, "page_token": page["next_page_token"]})
    assert page2["objects"][0]["key"] != page["objects"][0]["key"]
    assert q.get("/v1/objects/other/three").content == b""
    # replaced in place; deleted
    q.put("/v1/objects/clips/two.txt", data=b"bye")
    assert q.get("/v1/objects/clips/two.txt").content == b"bye"
    q.ok("delete", "/v1/objects/clips/one.mp4")
    refused(q.get("/v1/objects/clips/one.mp4"), 404, "no_such_object")
    refused(q.delete("/v1/objects/clips/one.mp4"), 404, "no_such_object")


def test_objects_bad_input_limits_and_quota(query_tenant):
    t, pw, q = query_tenant(OBJ_CONS)
    data = os.urandom(1 << 20)
    refused(q.put("/v1/objects/a", data=data, headers={"X-Checksum-Sha256": "0" * 64}), 400, "checksum_mismatch")
    refused(q.put("/v1/objects/a", data=data, headers={"X-Checksum-Sha256": "xyz"}), 400, "bad_checksum")
    refused(q.put("/v1/objects/big", data=os.urandom((4 << 20) + 1)), 413, "quota_exceeded")
    refused(q.put("/v1/objects/a", data=b"x", params={"ttl": "-1"}), 400, "bad_ttl")
    refused(q.put("/v1/objects/a", data=b"x", headers={"Content-Type": "not a type"}), 400, "bad_content_type")
    for key in ("..%2Fetc", "a//b", ".hidden", "a/%2E%2E/b", "a" * 300, "sp%20ace"):
        r = q.put(f"/v1/objects/{key}", data=b"x")
        assert r.status_code in (400, 404), (key, r.status_code)
        assert r.status_code == 404 or r.json()["code"] == "invalid_name"
    # nothing of the refused uploads counts: 6 MiB of quota is all there
    for i in range(6):
        assert q.put(f"/v1/objects/fill{i}", data=data).status_code == 201
    body = refused(q.put("/v1/objects/one-more", data=b"x" * 10), 413, "quota_exceeded")
    assert "quota" in body["error"]
    # replacing an object counts its new size only
    assert q.put("/v1/objects/fill0", data=data[:1000]).status_code == 201
    assert q.put("/v1/objects/one-more", data=b"x" * 10).status_code == 201
    # a TTL: the object says when it goes
    r = q.put("/v1/objects/short", data=b"x", params={"ttl": "120"})
    assert r.status_code == 201 and r.json()["data"]["expires"]


def test_an_upload_cut_off_half_way_leaves_no_object_and_no_used_quota(query_tenant, platform):
    t, pw, q = query_tenant(OBJ_CONS)
    import base64

    auth = base64.b64encode(f"{t.name}:{pw}".encode()).decode()
    s = socket.create_connection((platform.query.host, platform.query.port))
    s.sendall(
        f"PUT /v1/objects/cut HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
        f"Content-Length: {4 << 20}\r\n\r\n".encode()
    )
    s.sendall(os.urandom(2 << 20))
    time.sleep(1)
    s.close()
    time.sleep(2)
    refused(q.get("/v1/objects/cut"), 404, "no_such_object")
    data = os.urandom(3 << 20)
    assert q.put("/v1/objects/a", data=data).status_code == 201
    assert q.put("/v1/objects/b", data=data).status_code == 201  # 6 MiB: the cut upload holds nothing


# --- isolation ---------------------------------------------------------------------------------------------


def test_a_tenant_reaches_only_its_own_tables_objects_and_tokens(query_tenant, platform):
    a_t, a_pw, a = query_tenant()
    b_t, b_pw, b = query_tenant()
    seed(b, "secret", 3)
    b.put("/v1/objects/private", data=b"b's bytes")
    # b's table by its name from a's login: a has its own (empty) events table, never b's rows
    assert total_rows(a) == 0
    for table in (f"{b_t.name}.events", "x; DROP TABLE events", "events;", "system_auth.roles", "../events"):
        r = a.post(f"/v1/tables/{requests.utils.quote(table, safe='')}/query", json={})
        assert r.status_code in (400, 404) and r.json()["code"] in ("invalid_name", "not_found"), (table, r.text)
    refused(a.get("/v1/tables/mysimbdp_objects"), 404, "no_such_table")
    refused(a.get("/v1/objects/private"), 404, "no_such_object")
    # the operator's paths with another tenant's name
    refused(a.get(f"/v1/tenants/{b_t.name}/tables"), 404, "not_found")
    refused(a.get(f"/v1/tenants/{b_t.name}/objects/private"), 404, "not_found")
    # a where clause cannot name another keyspace either
    refused(a.post("/v1/tables/events/query", json={"where": {f"{b_t.name}.events.device": "secret"}}), 400, "unknown_column")
    # the operator acts for b (through b's own role)
    from mysimbdp import auth

    op = Query(platform, "operator", auth.operator_api_password(platform.paths.secrets))
    day = event("secret", 0)["day"]
    where = {"where": {"device": "secret", "day": day}}
    assert op.ok("post", f"/v1/tenants/{b_t.name}/tables/events/count", json=where)["count"] == 3
    assert op.get(f"/v1/tenants/{b_t.name}/objects/private").content == b"b's bytes"
    refused(op.get("/v1/tables"), 400, "bad_request")
    # wrong password
    refused(Query(platform, a_t.name, "wrong-password").get("/v1/tables"), 401, "unauthorized")


def test_the_tenants_role_is_what_cassandra_checks(query_tenant, platform):
    """Even a statement the API would build wrongly cannot leave the keyspace: the role has no grant there."""
    a_t, a_pw, a = query_tenant()
    b_t, b_pw, b = query_tenant()
    from cassandra import Unauthorized

    from queryapi.sessions import TenantSessions

    sessions = TenantSessions(platform)
    try:
        session = sessions.get(a_t.name)
        with pytest.raises(Unauthorized):
            session.execute(f"SELECT * FROM {b_t.name}.events")
        with pytest.raises(Unauthorized):
            session.execute(f"SELECT * FROM {platform.keyspace}.tenants")
    finally:
        sessions.close()


# --- the database down -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cassandra_down_is_a_503_with_a_retry_hint_and_it_serves_again_after(query_tenant, platform, registry):
    from mysimbdp.services import cassandra_node, platform as platform_mod

    t, pw, q = query_tenant()
    seed(q, "d1", 3)
    q.put("/v1/objects/x", data=b"abc")
    day = event("d1", 0)["day"]
    assert cassandra_node.stop(platform)
    try:
        for call in (
            lambda: q.post("/v1/tables/events/query", json={"where": {"device": "d1", "day": day}}),
            lambda: q.post("/v1/tables/events/rows", json={"rows": [event("d1", 9)]}),
            lambda: q.get("/v1/objects/x"),
            lambda: q.get("/v1/tables/events/export"),
        ):
            r = call()
            if r.status_code == 200:  # an export answers 200, then says in its stream that it stopped
                assert '"_error"' in r.text and '"_end"' not in r.text
                continue
            assert r.status_code == 503, r.text
            assert r.json()["code"] in ("database_unavailable", "service_unavailable")
            assert "Traceback" not in r.text
    finally:
        cassandra_node.start(platform)
    platform_mod.up(platform)
    wait_session_back(registry.session)
    deadline = time.monotonic() + 90
    while True:
        r = q.post("/v1/tables/events/count", json={"where": {"device": "d1", "day": day}})
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert r.status_code == 200 and r.json()["data"]["count"] == 3
    assert q.get("/v1/objects/x").content == b"abc"


def test_a_new_password_reaches_the_query_api_within_its_recheck_time(query_tenant, platform):
    from conftest import run_cli

    t, old, q = query_tenant()
    assert q.get("/v1/tables").status_code == 200  # the old password is in the API's caches now
    res = run_cli("tenant", "update", t.name, "--password-stdin", input="a-brand-new-password\n")
    assert res.returncode == 0, res.stderr
    time.sleep(platform.query.password_recheck_seconds + 0.5)
    refused(q.get("/v1/tables"), 401, "unauthorized")
    assert Query(platform, t.name, "a-brand-new-password").get("/v1/tables").status_code == 200


# --- what a hostile tenant found -----------------------------------------------------------------------------


def tenant_cql(cfg, tenant: str, *statements: str) -> None:
    """Statements as the tenant's own role (what its app, or `mysimbdp cqlsh --tenant`, can do)."""
    from mysimbdp import db, tenants

    s = db.connect(cfg, tenants.cassandra_login(cfg, tenant))
    try:
        for cql in statements:
            s.execute(cql, timeout=60)
    finally:
        s.cluster.shutdown()


def api_worker_rss_mib(cfg) -> float:
    master = int((cfg.paths.run / "query-api.pid").read_text().split()[0])
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master]
    total = 0
    for pid in kids or [master]:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _ppid(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return -1


@pytest.mark.slow
def test_pages_of_megabyte_rows_stop_at_a_byte_budget_and_the_api_stays_small(query_tenant, platform):
    t, pw, q = query_tenant()
    tenant_cql(platform, t.name, f"CREATE TABLE {t.name}.fat (id int, n int, data blob, PRIMARY KEY (id, n))")
    import base64

    blob = base64.b64encode(os.urandom(900_000)).decode()  # 1.2 MB of base64 text per row
    for n in range(40):
        q.ok("post", "/v1/tables/fat/rows", json={"rows": [{"id": 1, "n": n, "data": blob}]})
    before = api_worker_rss_mib(platform)
    seen, token, pages = [], None, 0
    while True:
        body = {"where": {"id": 1}, "columns": ["n"], "page_size": 1000, **({"page_token": token} if token else {})}
        page = q.ok("post", "/v1/tables/fat/query", json=body)
        seen += [r["n"] for r in page["rows"]]
        token, pages = page["next_page_token"], pages + 1
        if not token:
            break
    assert sorted(seen) == list(range(40)) and pages == 1  # without the blob the rows are small: one page
    seen, token, pages = [], None, 0
    while True:
        body = {"where": {"id": 1}, "page_size": 1000, **({"page_token": token} if token else {})}
        page = q.ok("post", "/v1/tables/fat/query", json=body)
        assert len(page["rows"]) <= 8  # about 4 MiB of values a page
        seen += [r["n"] for r in page["rows"]]
        token, pages = page["next_page_token"], pages + 1
        if not token:
            break
    assert sorted(seen) == list(range(40)) and pages >= 5
    r = q.get("/v1/tables/fat/export")
    rows, _, end = _ndjson(r.text)
    assert end == {"rows": 40, "complete": True} and len(rows) == 40
    assert api_worker_rss_mib(platform) - before < 300, (before, api_worker_rss_mib(platform))


def test_object_rows_the_tenant_changed_are_damaged_not_a_crash_or_a_long_loop(query_tenant, platform):
    t, pw, q = query_tenant(OBJ_CONS)
    assert q.put("/v1/objects/real", data=b"x" * 1000).status_code == 201  # the object tables exist now
    ks = t.name
    tenant_cql(
        platform,
        t.name,
        f"INSERT INTO {ks}.mysimbdp_objects (bucket, key, size, chunk_size, chunks, version, sha256, created,"
        " content_type) VALUES (0, 'boom', 60000000, 1, 1, uuid(), 'x', toTimestamp(now()), 'a/b')",
        f"INSERT INTO {ks}.mysimbdp_objects (bucket, key, size, chunk_size, chunks, version, sha256, created,"
        " content_type) VALUES (0, 'zero', 10, 0, 1, uuid(), 'x', toTimestamp(now()), 'a/b')",
        f"INSERT INTO {ks}.mysimbdp_objects (bucket, key, chunk_size, chunks, version, sha256, created,"
        " content_type) VALUES (0, 'nosize', 1048576, 1, uuid(), 'x', toTimestamp(now()), 'a/b')",
        f"INSERT INTO {ks}.mysimbdp_objects (bucket, key, size, chunk_size, chunks, version, sha256, created,"
        " content_type) VALUES (0, 'many', 10, 1048576, 400000, uuid(), 'x', toTimestamp(now()), 'a/b')",
        f"INSERT INTO {ks}.mysimbdp_objects (bucket, key, size, chunk_size, chunks, version, sha256, created,"
        " content_type) VALUES (0, 'negative', -1000000000000, 1048576, 0, uuid(), 'x', toTimestamp(now()), 'a/b')",
    )
    for key in ("boom", "zero", "nosize", "many"):
        refused(q.get(f"/v1/objects/{key}"), 409, "object_damaged")
        assert q.head(f"/v1/objects/{key}").status_code == 409
    started = time.monotonic()
    assert q.delete("/v1/objects/many").status_code == 200  # goes at once: nothing trusts its chunk count
    assert time.monotonic() - started < 5
    listed = {o["key"]: o for o in q.ok("get", "/v1/objects")["objects"]}
    assert listed["boom"].get("damaged") and listed["real"]["size"] == 1000
    # a negative size in the tenant's own table makes no room: the quota is counted by the platform
    data = os.urandom(5 << 19)  # 2.5 MiB: two fit beside `real` in 6 MiB, a third does not
    assert q.put("/v1/objects/a", data=data).status_code == 201
    assert q.put("/v1/objects/b", data=data).status_code == 201
    refused(q.put("/v1/objects/c", data=data), 413, "quota_exceeded")


def test_concurrent_uploads_of_one_key_leave_one_object_and_count_once(query_tenant, platform):
    import concurrent.futures

    from mysimbdp import db

    t, pw, q = query_tenant(OBJ_CONS)
    blobs = [os.urandom(1 << 20) for _ in range(3)]
    for _ in range(3):
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            codes = list(pool.map(lambda b: Query(platform, t.name, pw).put("/v1/objects/same", data=b).status_code, blobs))
        assert all(c in (201, 413) for c in codes), codes
    got = q.get("/v1/objects/same").content
    assert got in blobs
    s = db.connect(platform)
    try:
        rows = list(s.execute(f"SELECT state, size FROM {platform.keyspace}.object_usage WHERE tenant = %s", (t.name,)))
    finally:
        s.cluster.shutdown()
    assert [r.state for r in rows].count("stored") == 1
    assert not [r for r in rows if r.state == "reserved"]  # every upload finished or was cleaned up


@pytest.mark.parametrize(
    "column,value",
    [
        ("value", 10**400),
        ("value", "1e9999"),
        ("n", 2**31),
        ("at", "0001-01-01T00:00:00+05:00"),
        ("at", "9999-12-31T23:59:59-05:00"),
        ("at", 2**62),
        ("day", "2013-W01-1"),
        ("kind", "é\ud800"),
        ("tags", ["a", None]),
    ],
)
def test_values_python_cannot_carry_are_a_400_not_a_500(query_tenant, column, value):
    t, pw, q = query_tenant()
    row = {**event("v", 1), column: value}
    refused(q.post("/v1/tables/events/rows", json={"rows": [row]}), 400, "bad_value")


def test_odd_numbers_in_parameters_and_headers(query_tenant, platform):
    t, pw, q = query_tenant(OBJ_CONS)
    refused(q.get("/v1/objects", params={"page_size": "²"}), 400, "bad_limit")
    refused(q.get("/v1/objects", params={"page_size": "٣"}), 400, "bad_limit")
    refused(q.put("/v1/objects/a", data=b"x", params={"ttl": "５"}), 400, "bad_ttl")
    q.put("/v1/objects/a", data=b"abc")
    r = q.get("/v1/objects/a", headers={"Range": "bytes=5-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */3"
    r = q.put("/v1/objects/b", data=iter([b"abc"]))  # chunked: no Content-Length
    assert r.status_code == 411 and r.json()["code"] == "length_required"


def test_a_column_named_like_an_export_control_line_is_not_exported_as_ndjson(query_tenant, platform):
    t, pw, q = query_tenant()
    tenant_cql(platform, t.name, f'CREATE TABLE {t.name}.mk (id int PRIMARY KEY, "_end" frozen<map<text, int>>)')
    q.ok("post", "/v1/tables/mk/rows", json={"rows": [{"id": i, "_end": {"rows": 1}} for i in range(10)]})
    refused(q.get("/v1/tables/mk/export"), 400, "reserved_column")
    lines = q.get("/v1/tables/mk/export", params={"format": "csv"}).text.splitlines()
    assert lines[-1] == "# end rows=10 complete"
    rows, _, end = _ndjson(q.get("/v1/tables/mk/export", params={"columns": "id"}).text)
    assert end["rows"] == 10 and len(rows) == 10


def test_index_names_of_two_tables_do_not_collide(query_tenant, platform):
    t, pw, q = query_tenant()
    tenant_cql(
        platform,
        t.name,
        f"CREATE TABLE {t.name}.a_b (id int PRIMARY KEY, c int)",
        f"CREATE TABLE {t.name}.a (id int PRIMARY KEY, b_c int)",
    )
    one = q.ok("post", "/v1/tables/a_b/indexes", json={"column": "c"})
    two = q.ok("post", "/v1/tables/a/indexes", json={"column": "b_c"})
    assert one["created"] and two["created"] and one["name"] != two["name"]
    assert q.ok("get", "/v1/tables/a")["indexes"][0]["column"] == "b_c"


def test_a_session_in_use_is_never_closed_under_its_request(query_tenant, platform):
    import dataclasses

    from queryapi.sessions import TenantSessions

    t, pw, q = query_tenant()
    cfg = dataclasses.replace(platform, query=dataclasses.replace(platform.query, session_idle=0, sessions=1))
    sessions = TenantSessions(cfg)
    try:
        s = sessions.acquire(t.name)
        time.sleep(0.1)
        sessions.sweep()  # idle for longer than session_idle, but in use: kept
        assert not s.is_shutdown
        assert s.execute(f"SELECT count(*) FROM {t.name}.events").one()[0] == 0
        sessions.release(t.name)
        time.sleep(0.1)
        sessions.sweep()
        assert s.is_shutdown
    finally:
        sessions.close()


def test_an_expired_object_is_gone(query_tenant):
    t, pw, q = query_tenant(OBJ_CONS)
    r = q.put("/v1/objects/brief", data=b"x" * 100, params={"ttl": "2"})
    assert r.status_code == 201 and r.json()["data"]["expires"]
    assert q.get("/v1/objects/brief").content == b"x" * 100
    time.sleep(3)
    refused(q.get("/v1/objects/brief"), 404, "no_such_object")
    assert "brief" not in [o["key"] for o in q.ok("get", "/v1/objects")["objects"]]


def test_the_apis_worker_processes_share_the_lock_out_the_quota_and_the_metrics(query_tenant, platform, make_tenant):
    """The query API runs several worker processes; a client reaching different ones still meets one
    lock-out, one object quota and one set of metrics (connections made at once, to spread over them)."""
    import concurrent.futures
    import threading

    from mysimbdp import auth

    master = int((platform.paths.run / "query-api.pid").read_text().split()[0])
    workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == master]
    assert len(workers) == platform.query.workers >= 2

    def at_once(n: int, call):
        """``call(i)`` on ``n`` new connections opened together; the answers' status codes and bodies."""
        gate = threading.Barrier(n)

        def one(i):
            gate.wait()
            return call(i)

        with concurrent.futures.ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))

    # the quota: 1 MiB objects into a 6 MiB quota, ten at once: six are stored, four refused, 6 MiB used
    t, pw, q = query_tenant(OBJ_CONS)
    data = os.urandom(1 << 20)
    answers = at_once(10, lambda i: Query(platform, t.name, pw).put(f"/v1/objects/o{i}", data=data))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 6 + [413] * 4, codes
    assert all(r.json()["code"] == "quota_exceeded" for r in answers if r.status_code == 413)
    assert len(q.ok("get", "/v1/objects")["objects"]) == 6

    # the lock-out: three times max_failures wrong passwords at once, each on its own connection, get
    # max_failures tries in all (the others 429); then even the right password is refused
    victim, right = make_tenant()
    fails = platform.batch.auth_max_failures
    wrong = at_once(3 * fails, lambda i: Query(platform, victim.name, f"guess-{i}").get("/v1/tables"))
    tried = [r.status_code for r in wrong].count(401)
    assert 1 <= tried <= fails and {r.status_code for r in wrong} <= {401, 429}, [r.text for r in wrong]
    for i in range(fails - tried):  # busy answers (429 login_busy) were not tries: the rest, one by one
        assert Query(platform, victim.name, f"more-{i}").get("/v1/tables").status_code == 401
    late = at_once(4, lambda i: Query(platform, victim.name, right).get("/v1/tables"))
    assert [r.status_code for r in late] == [429] * 4, [r.text for r in late]
    assert all(r.json()["code"] == "too_many_attempts" and int(r.headers["Retry-After"]) > 0 for r in late)

    # the metrics: every worker's requests are in one scrape
    from test_metrics import sample, scrape

    op = (auth.OPERATOR, auth.operator_api_password(platform.paths.secrets))
    before = sample(scrape(platform.query_url(), op), "mysimbdp_http_requests_total", tenant=t.name, status="200")
    at_once(12, lambda i: Query(platform, t.name, pw).get("/v1/tables"))
    after = sample(scrape(platform.query_url(), op), "mysimbdp_http_requests_total", tenant=t.name, status="200")
    assert after - before == 12
