"""The query API's pure parts: values between JSON and CQL, which filters are served, sealed tokens."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest

from mysimbdp.errors import BadPageToken, BadQuery, BadValue, NeedsIndex
from queryapi import export, plan, tokens, values
from queryapi.tables import Table

FLIGHTS = Table(
    keyspace="air",
    name="flights",
    columns={"origin": "text", "year": "int", "month": "int", "day": "int", "carrier": "text", "flight": "int",
             "sched": "int", "delay": "int", "time_hour": "timestamp", "tags": "set<text>"},  # fmt: skip
    partition_key=("origin", "year", "month", "day"),
    clustering=(("carrier", "ASC"), ("flight", "ASC"), ("sched", "ASC")),
    indexes={"time_hour": "flights_time_hour_sai"},
)
KEY = {"origin": "JFK", "year": 2013, "month": 1, "day": 1}


def served(where: dict) -> None:
    plan.check_served(FLIGHTS, plan.conditions(FLIGHTS, where, max_in=100))


@pytest.mark.parametrize(
    "where",
    [
        KEY,
        {**KEY, "carrier": "UA"},
        {**KEY, "carrier": "UA", "flight": {"gte": 10, "lt": 20}},
        {**KEY, "carrier": {"in": ["UA", "AA"]}},
        {"origin": {"in": ["JFK", "LGA"]}, "year": 2013, "month": 1, "day": 1},
        {"time_hour": {"gte": "2013-01-01T00:00:00Z", "lt": "2013-01-02T00:00:00Z"}},
        {**KEY, "time_hour": {"gte": "2013-01-01T00:00:00Z"}},
        {},
    ],
)
def test_filters_cassandra_serves_without_reading_the_table(where):
    served(where)


@pytest.mark.parametrize(
    "where,column",
    [
        ({"carrier": "UA"}, "carrier"),
        ({"origin": "JFK"}, "origin"),
        ({**KEY, "flight": 5}, "flight"),  # skips carrier
        ({**KEY, "carrier": {"gt": "A"}, "flight": 5}, "flight"),  # after a range
        ({**KEY, "delay": {"gt": 30}}, "delay"),
    ],
)
def test_filters_that_need_an_index_say_which(where, column):
    with pytest.raises(NeedsIndex) as e:
        served(where)
    assert column in e.value.message and '"column": "' in e.value.hint


def test_statements_bind_every_value_and_quote_every_name():
    conds = plan.conditions(FLIGHTS, {**KEY, "carrier": {"in": ["UA"]}}, max_in=10)
    st = plan.select(FLIGHTS, ["carrier", "flight"], conds, 5)
    assert st.cql == (
        'SELECT "carrier", "flight" FROM "air"."flights" WHERE "origin" = ? AND "year" = ? AND "month" = ?'
        ' AND "day" = ? AND "carrier" IN ? LIMIT ?'
    )
    assert st.params == ("JFK", 2013, 1, 1, ["UA"], 5)
    assert plan.insert(FLIGHTS, ("a", "b"), ttl=True, if_not_exists=True) == (
        'INSERT INTO "air"."flights" ("a", "b") VALUES (?, ?) IF NOT EXISTS USING TTL ?'
    )


@pytest.mark.parametrize(
    "typ,given,want",
    [
        ("int", 5, 5),
        ("bigint", "9007199254740993", 9007199254740993),
        ("double", 2, 2.0),
        ("decimal", "1.10", Decimal("1.10")),
        ("boolean", False, False),
        ("timestamp", "2013-01-01T05:00:00Z", dt.datetime(2013, 1, 1, 5, tzinfo=dt.timezone.utc)),
        ("timestamp", "2013-01-01T07:00:00+02:00", dt.datetime(2013, 1, 1, 5, tzinfo=dt.timezone.utc)),
        ("timestamp", "2013-01-01T05:00:00", dt.datetime(2013, 1, 1, 5, tzinfo=dt.timezone.utc)),
        ("timestamp", 0, dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)),
        ("date", "2013-01-31", dt.date(2013, 1, 31)),
        ("uuid", "12345678-1234-5678-1234-567812345678", uuid.UUID("12345678-1234-5678-1234-567812345678")),
        ("blob", "aGk=", b"hi"),
        ("list<int>", [1, 2], [1, 2]),
        ("frozen<set<text>>", ["a"], {"a"}),
        ("map<int, text>", {"1": "a"}, {1: "a"}),
        ("text", None, None),
    ],
)
def test_values_in(typ, given, want):
    assert values.encoder(typ, "c")(given) == want


@pytest.mark.parametrize(
    "typ,given",
    [
        ("int", "abc"),
        ("int", True),
        ("int", 2**31),
        ("int", 1.5),
        ("tinyint", 200),
        ("double", "1.0"),
        ("timestamp", "yesterday"),
        ("timestamp", "2013-13-01T00:00:00Z"),
        ("date", "2013-1-1"),
        ("boolean", "true"),
        ("uuid", "nope"),
        ("timeuuid", str(uuid.uuid4())),
        ("blob", "***"),
        ("text", 5),
        ("ascii", "é"),
        ("list<int>", [1, None]),
        ("vector<float, 3>", [1, 2]),
        ("frozen<tuple<int, int>>", [1, 2]),
        ("decimal", "NaN"),
        ("inet", "999.1.1.1"),
    ],
)
def test_values_refused_name_the_column_and_its_type(typ, given):
    with pytest.raises(BadValue) as e:
        values.encoder(typ, "col")(given)
    assert "col" in e.value.message


def test_values_out():
    assert values.decoder("timestamp")(dt.datetime(2013, 1, 1, 5, 0, 0, 123000)) == "2013-01-01T05:00:00.123Z"
    assert values.decoder("blob")(b"hi") == "aGk="
    assert values.decoder("decimal")(Decimal("1.10")) == "1.10"
    assert values.decoder("int") is None and values.decoder("text") is None
    assert values.decoder("map<text, frozen<list<timestamp>>>")({"a": [dt.datetime(2000, 1, 1)]}) == {
        "a": ["2000-01-01T00:00:00.000Z"]
    }


def test_ttl_bounds():
    assert plan.ttl_value(None) is None and plan.ttl_value(1) == 1 and plan.ttl_value(630_720_000)
    for bad in (0, -1, 630_720_001, True, "5", 1.5):
        with pytest.raises(BadQuery):
            plan.ttl_value(bad)


def test_sealed_tokens_open_only_for_the_same_query_and_tenant():
    s = tokens.Sealer(b"k" * 32)
    bound = tokens.fingerprint("page", "alice", "t", {"where": {"a": 1}})
    tok = s.seal(bound, b"\x00state")
    assert s.open(tok, bound) == b"\x00state"
    for other in (
        tokens.fingerprint("page", "bob", "t", {"where": {"a": 1}}),
        tokens.fingerprint("page", "alice", "t", {"where": {"a": 2}}),
        tokens.fingerprint("export", "alice", "t", {"where": {"a": 1}}),
    ):
        with pytest.raises(BadPageToken):
            s.open(tok, other)
    with pytest.raises(BadPageToken):
        tokens.Sealer(b"x" * 32).open(tok, bound)  # another key
    for bad in ("", tok[:-1], tok[:8], "!!!", None, 5, "A" * 5000):
        with pytest.raises(BadPageToken):
            s.open(bad, bound)
    expired = tokens.Sealer(b"k" * 32, hours=-1).seal(bound, b"x")
    with pytest.raises(BadPageToken, match="expired"):
        s.open(expired, bound)


def test_token_splits_cover_the_ring_once():
    parts = export.splits(export.MIN_TOKEN)
    assert parts[0][0] == export.MIN_TOKEN and parts[-1][1] == export.MAX_TOKEN
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    resumed = export.splits(0)
    assert resumed[0][0] == 0 and resumed[-1][1] == export.MAX_TOKEN and all(lo >= 0 for lo, _ in resumed)
