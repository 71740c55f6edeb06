"""The Python client SDK (python-sdk/, ``mysimbdp_client``) against the real platform: uploads and receipts,
paged queries, counts, writes with TTL, deletes, exports that resume after a dropped connection, binary
objects, typed errors, and a stream round trip. One airline tenant (the sample batch and stream app) is
made for the module and deleted after it; tests that write use partitions of their own."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import secrets
import socket
import threading
import time
from pathlib import Path

import pytest
from mysimbdp_client import Client, errors
from mysimbdp_client import envelope as sdk_envelope
from mysimbdp_client import records as sdk_records

from conftest import ROOT, unique_name
from mysimbdp import csvrecords, inbox

pytestmark = pytest.mark.services

AIRLINE = ROOT / "tenant_apps" / "airline"
DAY1 = AIRLINE / "client-input-dir" / "flights-2013-01-01.csv"
KEY = ("origin", "year", "month", "day", "carrier", "flight", "sched_dep_time")


def csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def key_of(row: dict) -> tuple:
    return tuple(str(row[k]) for k in KEY)


def flight(origin: str, year: int, day: int, n: int, **extra) -> dict:
    row = {"origin": origin, "year": year, "month": 1, "day": day, "carrier": "ZZ", "flight": n,
           "sched_dep_time": 600, "dest": "LAX", "distance": 2475, "time_hour": f"{year}-01-{day:02d}T06:00:00Z"}  # fmt: skip
    row.update(extra)
    return row


@pytest.fixture(scope="module")
def airline(registry, platform):
    """(tenant name, password, Client) for an airline tenant whose first day of flights is uploaded and
    ingested with the SDK; the upload's receipt is on ``client.first``."""
    from mysimbdp import constraints

    cons = json.loads((ROOT / "constraints" / "airline.json").read_text())
    cons["objects"] = {"max_object_bytes": 8 << 20}
    name, password = unique_name("sdk"), secrets.token_urlsafe(12)
    registry.create(name, password, constraints.parse(cons), batch_app=AIRLINE / "app", stream_app=AIRLINE / "app")
    c = Client(
        name, password, batch_url=platform.batch_url(), stream_url=platform.stream_url(),
        query_url=platform.query_url(), broker=(platform.broker.host, platform.broker.port),
    )  # fmt: skip
    try:
        sent = c.upload(DAY1)
        c.first = (sent, c.wait_job(sent.job_id, timeout=300))
        yield name, password, c
    finally:
        c.close()
        registry.delete(name)


def test_an_upload_gets_a_receipt_and_its_rows_can_be_read_back(airline):
    _, _, c = airline
    sent, job = c.first
    expected = csv_rows(DAY1)
    assert sent.status == "staged" and sent.job_id
    assert job["status"] == "succeeded" and job["rows_ingested"] == len(expected) == 842, job
    assert any(j["job_id"] == sent.job_id for j in c.jobs(limit=10))
    assert c.upload(DAY1).status == "duplicate"  # the same content is not sent twice
    assert "flights" in [t["name"] for t in c.tables()]
    t = c.table("flights")
    info = t.info()
    assert info["partition_key"] == ["origin", "year", "month", "day"] and len(info["columns"]) == 19
    where = {"origin": "EWR", "year": 2013, "month": 1, "day": 1}
    got = list(t.find(where))
    want = [r for r in expected if r["origin"] == "EWR"]
    assert sorted(key_of(r) for r in got) == sorted(key_of(r) for r in want) and len(got) > 200
    one = next(r for r in got if r["flight"] == int(want[0]["flight"]) and r["carrier"] == want[0]["carrier"])
    assert one["dest"] == want[0]["dest"] and one["time_hour"].startswith("2013-01-01")


def test_pages_of_two_give_every_row_once_and_count_agrees(airline):
    _, _, c = airline
    t = c.table("flights")
    where = {"origin": "JFK", "year": 2013, "month": 1, "day": 1}
    seen, token, pages = [], None, 0
    while True:
        page = t.find_page(where, ["carrier", "flight", "sched_dep_time"], page_size=2, page_token=token)
        assert len(page.rows) <= 2 and set(page.rows[0]) == {"carrier", "flight", "sched_dep_time"}
        seen += [(r["carrier"], r["flight"], r["sched_dep_time"]) for r in page.rows]
        pages += 1
        token = page.next_page_token
        if token is None:
            break
    want = {(r["carrier"], int(r["flight"]), int(r["sched_dep_time"])) for r in csv_rows(DAY1) if r["origin"] == "JFK"}
    assert len(seen) == len(set(seen)) == len(want) and set(seen) == want
    assert pages >= len(want) // 2
    assert t.count(where) == len(want)
    assert len(list(t.find(where, page_size=7))) == len(want)
    assert len(list(t.find(where, limit=5, page_size=2))) == 5


def test_writes_with_a_ttl_expire_and_deleted_rows_are_gone(airline):
    _, _, c = airline
    t = c.table("flights")
    rows = [flight("TTL", 2097, 1, n) for n in range(3)] + [flight("TTL", 2097, 1, 3, _ttl=100)]
    assert t.insert_many(rows, ttl=3600) == {"written": 4}
    assert t.insert_one(flight("TTL", 2097, 1, 4))
    key = {k: rows[0][k] for k in KEY}
    left = t.ttl(key)
    assert 3500 < left["dest"] <= 3600 and 3500 < left["distance"] <= 3600
    assert 0 < t.ttl({**key, "flight": 3})["dest"] <= 100  # a row's own _ttl wins
    assert t.ttl({**key, "flight": 4})["dest"] is None  # no expiry
    again = t.insert_many([flight("TTL", 2097, 1, 1), flight("TTL", 2097, 1, 9)], if_not_exists=True)
    assert again == {"written": 1, "existing": [0]}
    part = {"origin": "TTL", "year": 2097, "month": 1, "day": 1}
    assert t.count(part) == 6
    t.delete(key)
    with pytest.raises(errors.NotFoundError):
        t.ttl(key)
    assert t.delete_many([{**key, "flight": n} for n in (1, 2)]) == 2
    assert sorted(r["flight"] for r in t.find(part)) == [3, 4, 9]


def test_insert_many_splits_into_requests_of_500(airline):
    _, _, c = airline
    t = c.table("flights")
    rows = [flight("BIG", 2096, 1 + n % 3, n) for n in range(1234)]
    assert t.insert_many(rows) == {"written": 1234}
    assert sum(t.count({"origin": "BIG", "year": 2096, "month": 1, "day": d}) for d in (1, 2, 3)) == 1234
    assert t.delete_many([{k: r[k] for k in KEY} for r in rows]) == 1234
    assert t.count({"origin": "BIG", "year": 2096, "month": 1, "day": 1}) == 0


def test_exports_in_ndjson_and_csv_hold_every_row_once(airline, tmp_path):
    _, _, c = airline
    t = c.table("flights")
    ex = t.export("ndjson")
    rows = list(ex)
    total = ex.rows_total  # a count of the whole table is the export's (count() needs a filter)
    assert ex.complete and total == len(rows) > 0
    with pytest.raises(errors.BadRequestError) as e:
        t.count()
    assert e.value.code == "needs_filter"
    assert len({key_of(r) for r in rows}) == total
    assert isinstance(rows[0]["year"], int)
    out = tmp_path / "flights.csv"
    assert t.export_to(out, format="csv") == total
    with open(out, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == total and {key_of(r) for r in back} == {key_of(r) for r in rows}
    assert not any(line.startswith("#") for line in out.read_text().splitlines())
    picked = list(t.export("csv", columns=["origin", "carrier", "flight"]))
    assert len(picked) == total and set(picked[0]) == {"origin", "carrier", "flight"}
    buf = io.StringIO()
    assert t.export_to(buf, format="ndjson", columns=["origin", "flight"]) == total
    assert len(buf.getvalue().splitlines()) == total


class CuttingProxy:
    """A TCP proxy in front of the query API that cuts the first answer carrying ``marker`` (a resume mark)
    ``after`` bytes past it, as a dropped network connection would: both sockets are closed mid-answer."""

    def __init__(self, target: tuple[str, int], marker: bytes, after: int = 32 << 10) -> None:
        self.target, self.marker, self.after = target, marker, after
        self.cuts = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(conn, up, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, watch: bool) -> None:
        tail, past = b"", -1  # bytes forwarded since the marker was seen (-1: not seen)
        try:
            while data := src.recv(65536):
                if watch and not self.cuts:
                    if past < 0 and self.marker in tail + data:
                        past = 0
                    elif past >= 0:
                        past += len(data)
                    if past > self.after:
                        self.cuts += 1
                        raise OSError("cut")
                    tail = data[-len(self.marker) :]
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.slow
@pytest.mark.parametrize("fmt,marker", [("ndjson", b'"_resume"'), ("csv", b"# resume ")])
def test_an_export_cut_off_resumes_from_its_last_mark_without_losing_or_doubling_a_row(airline, platform, fmt, marker):
    name, password, c = airline
    t = c.table("flights")
    part = {"origin": "EXP", "year": 2095, "month": 1}
    if t.count({**part, "day": 1}) == 0:  # the marks come every 10,000 rows: make sure there are more
        t.insert_many([flight("EXP", 2095, 1 + n % 28, n) for n in range(12_000)])
    whole = t.export(fmt, columns=list(KEY))
    want = [key_of(r) for r in whole]
    assert whole.resumed == 0 and len(want) == len(set(want)) == whole.rows_total > 12_000
    proxy = CuttingProxy((platform.query.host, platform.query.port), marker)
    try:
        cut = Client(name, password, query_url=f"http://127.0.0.1:{proxy.port}")
        ex = cut.table("flights").export(fmt, columns=list(KEY))
        got = [key_of(r) for r in ex]
    finally:
        proxy.close()
    assert proxy.cuts == 1 and ex.resumed == 1  # the connection was really dropped, once
    assert len(got) == len(set(got)) == ex.rows_total == len(want) and ex.complete
    assert sorted(got) == sorted(want)


def test_objects_stream_in_and_out_whole_or_by_range(airline, tmp_path):
    _, _, c = airline
    data = random.Random(3).randbytes(3 << 20)
    info = c.objects.put("sdk/blob.bin", data, content_type="application/x-test", ttl=3600)
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest() and info.expires
    head = c.objects.head("sdk/blob.bin")
    assert (head.size, head.sha256, head.content_type) == (len(data), info.sha256, "application/x-test")
    with c.objects.open("sdk/blob.bin", start=1_000_000, end=2_500_123) as f:
        part = f.read(100) + f.read()
    assert part == data[1_000_000:2_500_123]
    with c.objects.open("sdk/blob.bin", start=len(data) - 10) as f:
        assert f.read() == data[-10:]
    with c.objects.open("sdk/blob.bin") as f:
        chunks = iter(lambda: f.read(300_000), b"")
        assert b"".join(chunks) == data
    assert c.objects.get("sdk/blob.bin") == data
    path = tmp_path / "small.bin"
    path.write_bytes(b"hello objects")
    c.objects.put("sdk/from-path", path)
    with open(path, "rb") as fh:
        c.objects.put("sdk/from-file", fh)
    assert c.objects.get("sdk/from-path") == c.objects.get("sdk/from-file") == b"hello objects"
    assert c.objects.head("sdk/from-path").expires is None
    listed = {o.key: o for o in c.objects.list("sdk/", page_size=2)}
    assert set(listed) == {"sdk/blob.bin", "sdk/from-path", "sdk/from-file"} and listed["sdk/blob.bin"].size == len(data)
    with pytest.raises(errors.QuotaExceededError) as exc:
        c.objects.put("sdk/too-big", b"x" * (9 << 20))
    assert exc.value.status == 413 and exc.value.code == "quota_exceeded"
    for key in listed:
        c.objects.delete(key)
    with pytest.raises(errors.NotFoundError):
        c.objects.head("sdk/blob.bin")
    assert list(c.objects.list("sdk/")) == []


def test_errors_are_typed_and_say_what_to_change(airline, platform):
    name, _, c = airline
    t = c.table("flights")
    with pytest.raises(errors.BadRequestError) as exc:
        t.find_page({"carrier": "UA"})
    assert exc.value.code == "needs_index" and exc.value.status == 400 and "index" in exc.value.hint
    made = t.create_index("carrier")
    try:
        deadline = time.monotonic() + 60
        while True:  # a new index answers 503 (UnavailableError) while it is being built
            try:
                ua = list(t.find({"carrier": "UA"}, ["carrier"], page_size=500))
                break
            except errors.UnavailableError:
                assert time.monotonic() < deadline
                time.sleep(1)
        assert len(ua) == sum(1 for r in csv_rows(DAY1) if r["carrier"] == "UA") and {r["carrier"] for r in ua} == {"UA"}
    finally:
        t.drop_index(made["name"])
    with pytest.raises(errors.BadRequestError) as exc:
        t.find_page({"origin": "JFK", "year": "abc", "month": 1, "day": 1})
    assert exc.value.code == "bad_value"
    where = {"origin": "JFK", "year": 2013, "month": 1, "day": 1}
    token = t.find_page(where, page_size=2).next_page_token
    assert token
    with pytest.raises(errors.BadRequestError) as exc:
        t.find_page(where, page_size=3, page_token=token)  # a token is for the query it came from
    assert exc.value.code == "bad_page_token"
    with pytest.raises(errors.BadRequestError) as exc:
        t.find_page(where, page_size=2, page_token=token[:-4] + "AAAA")
    assert exc.value.code == "bad_page_token"
    with pytest.raises(errors.NotFoundError) as exc:
        c.table("nosuchtable").info()
    assert exc.value.status == 404
    with pytest.raises(errors.NotFoundError):
        c.job("00000000-0000-0000-0000-000000000000")
    wrong = Client(name, "not-the-password", query_url=platform.query_url(), batch_url=platform.batch_url())
    with pytest.raises(errors.AuthenticationError) as exc:
        wrong.tables()
    assert exc.value.status == 401 and isinstance(exc.value, errors.MysimbdpError)
    nowhere = Client(name, "x", query_url="http://127.0.0.1:9", batch_url="http://127.0.0.1:9")
    with pytest.raises(errors.TransportError):
        nowhere.tables()


@pytest.mark.slow
def test_a_stream_round_trip_publish_then_read_the_rows(airline):
    _, _, c = airline
    started = c.stream.start(1)
    assert started["settled"], started
    lines = [f"2094,1,5,{500 + i},{500 + i},0,800,800,0,SD,{i},N1,STR,LAX,300,2475,5,0,2094-01-05T10:00:00Z"
             for i in range(300)]  # fmt: skip
    try:
        result = c.publish(lines)
        assert (result.sent, result.confirmed, result.mark) == (300, 300, 300) and result.all_confirmed
        t = c.table("flights")
        part = {"origin": "STR", "year": 2094, "month": 1, "day": 5}
        deadline = time.monotonic() + 60
        while t.count(part) < 300 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert t.count(part) == 300
        assert c.stream.status()
    finally:
        c.stream.stop()


# --- the SDK's copies of the platform's formats agree with the platform's own ------------------------------


def test_the_sdk_envelope_encoder_agrees_with_the_platform_byte_for_byte():
    rng = random.Random(11)
    for _ in range(300):
        records = [rng.randbytes(rng.randint(1, 400)) for _ in range(rng.randint(1, 60))]
        publisher, first = secrets.token_hex(8), rng.randint(0, 10**15)
        mine = sdk_envelope.encode_envelope(publisher, first, records)
        assert mine == inbox.encode_envelope(publisher, first, records)
        env = inbox.decode_envelope(mine)
        assert (env.publisher, env.first, env.body) == (publisher, first, b"".join(records))
    assert sdk_envelope.MAX_ENVELOPE_RECORDS == inbox.MAX_ENVELOPE_RECORDS
    assert sdk_envelope.ENVELOPE_MAGIC == inbox.ENVELOPE_MAGIC


def test_the_sdk_record_reader_agrees_with_the_platform_one():
    rng = random.Random(5)
    pieces = [b"a", b"bc", b",", b'"', b'""', b"\n", b"\r\n", b"\r", b" ", b"\t", "é".encode(), b"#"]
    samples = [b'a,b\n"x\ny",z\n', b'N5"X,1\n2,3', b"\xef\xbb\xbfh,i\n1,2\n", b'"open\n1,2\n3,4\n', b""]
    samples += [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 80))) for _ in range(2000)]
    for data in samples:
        for delim in (b",", b"\t"):
            for limit in (None, 7):
                want = list(csvrecords.records(io.BytesIO(data), delim, max_bytes=limit))
                assert list(sdk_records.records(io.BytesIO(data), delim, max_bytes=limit)) == want, data
