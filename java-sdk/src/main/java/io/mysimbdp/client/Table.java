package io.mysimbdp.client;

import java.io.OutputStream;
import java.net.http.HttpResponse;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.function.Consumer;

/** One of the tenant's tables, through the query API. Get one with {@link MysimbdpClient#table(String)}. */
public final class Table {
    /** Rows (or keys) sent in one write request; larger lists are sent in several requests. */
    public static final int WRITE_BATCH = 500;

    private final MysimbdpClient client;
    private final String name;

    Table(MysimbdpClient client, String name) {
        this.client = client;
        this.name = name;
    }

    public String name() {
        return name;
    }

    String path(String rest) {
        return client.tablesPath() + "/" + Http.seg(name, false) + rest;
    }

    private Map<String, Object> post(String rest, Object body, boolean idempotent, String what) {
        HttpResponse<byte[]> r = client.http.send(() -> client.http.request(client.query(path(rest)),
                client.http.requestTimeout).header("Content-Type", "application/json").POST(Http.json(body)).build(),
                idempotent, what);
        return Http.data(r.body(), what);
    }

    /** The table's columns, key, indexes and default TTL. */
    public TableInfo info() {
        String what = "describing table " + name;
        HttpResponse<byte[]> r = client.http.send(() -> client.http.request(client.query(path("")),
                client.http.requestTimeout).GET().build(), true, what);
        return new TableInfo(Http.data(r.body(), what));
    }

    /** Creates a Storage-Attached Index on {@code column} (nothing if there is one) and returns its name. */
    public String createIndex(String column) {
        Map<String, Object> d = post("/indexes", Map.of("column", column), true, "indexing " + name + "." + column);
        return Http.str(d.get("name"));
    }

    /** Drops the index named {@code indexName}. */
    public void dropIndex(String indexName) {
        String what = "dropping index " + indexName;
        client.http.send(() -> client.http.request(client.query(path("/indexes/" + Http.seg(indexName, false))),
                client.http.requestTimeout).DELETE().build(), true, what);
    }

    // --- reading -------------------------------------------------------------------------------------------

    /** One page of the query's rows; {@code pageToken} is null for the first page, then the last page's token. */
    @SuppressWarnings("unchecked")
    public Page findPage(Query query, String pageToken) {
        Map<String, Object> d = post("/query", query.body(pageToken), true, "querying " + name);
        List<Map<String, Object>> rows = new ArrayList<>();
        for (Object o : (List<Object>) d.getOrDefault("rows", List.of())) {
            rows.add((Map<String, Object>) o);
        }
        return new Page(rows, Http.str(d.get("next_page_token")));
    }

    /**
     * Every row of the query, a page at a time as the iteration goes (one page in memory). Each call of
     * {@code iterator()} runs the query again from the start.
     */
    public Iterable<Map<String, Object>> find(Query query) {
        return () -> new Iterator<>() {
            private Iterator<Map<String, Object>> rows = List.<Map<String, Object>>of().iterator();
            private String token;
            private boolean started;

            @Override
            public boolean hasNext() {
                while (!rows.hasNext()) {
                    if (started && token == null) {
                        return false;
                    }
                    Page p = findPage(query, token);
                    started = true;
                    token = p.nextPageToken();
                    rows = p.rows().iterator();
                }
                return true;
            }

            @Override
            public Map<String, Object> next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                return rows.next();
            }
        };
    }

    /** How many rows match {@code where} (null or empty: the whole table). */
    public long count(Map<String, ?> where) {
        Map<String, Object> body = new LinkedHashMap<>();
        if (where != null && !where.isEmpty()) {
            body.put("where", where);
        }
        Object n = post("/count", body, true, "counting " + name).get("count");
        return ((Number) n).longValue();
    }

    /** How many rows the query's filter matches. */
    public long count(Query query) {
        return count(query.where());
    }

    /**
     * A count without a filter: the API refuses it ({@code needs_filter}: it would read the whole table);
     * the row count of a whole table is what {@link #export(Format, java.io.OutputStream)} returns.
     */
    public long count() {
        return count((Map<String, ?>) null);
    }

    /** The seconds left of each non-key column of the row with this (full primary) key; null: no TTL. */
    @SuppressWarnings("unchecked")
    public Map<String, Integer> ttl(Map<String, ?> key) {
        Map<String, Object> ttl = (Map<String, Object>) post("/ttl", Map.of("key", key), true, "reading a TTL of " + name)
                .get("ttl");
        Map<String, Integer> out = new LinkedHashMap<>();
        ttl.forEach((k, v) -> out.put(k, v == null ? null : ((Number) v).intValue()));
        return out;
    }

    // --- writing -------------------------------------------------------------------------------------------

    /**
     * Writes (upserts) rows, {@value #WRITE_BATCH} per request; {@code ttlSeconds} (null: the table's default)
     * applies to every row that carries no {@code "_ttl"} of its own. Returns the rows written.
     */
    public int insertMany(List<? extends Map<String, ?>> rows, Integer ttlSeconds) {
        int written = 0;
        for (int i = 0; i < rows.size(); i += WRITE_BATCH) {
            Map<String, Object> body = new LinkedHashMap<>();
            body.put("rows", rows.subList(i, Math.min(rows.size(), i + WRITE_BATCH)));
            if (ttlSeconds != null) {
                body.put("ttl", ttlSeconds);
            }
            Object n = post("/rows", body, true, "writing rows of " + name).get("written");
            written += ((Number) n).intValue();
        }
        return written;
    }

    public int insertMany(List<? extends Map<String, ?>> rows) {
        return insertMany(rows, null);
    }

    public void insertOne(Map<String, ?> row, Integer ttlSeconds) {
        insertMany(List.of(row), ttlSeconds);
    }

    public void insertOne(Map<String, ?> row) {
        insertMany(List.of(row), null);
    }

    /**
     * Writes rows only where no row has their key (a lightweight transaction each); returns the indexes in
     * {@code rows} of those that existed already (and were left alone).
     */
    public List<Integer> insertIfNotExists(List<? extends Map<String, ?>> rows, Integer ttlSeconds) {
        List<Integer> existing = new ArrayList<>();
        for (int i = 0; i < rows.size(); i += WRITE_BATCH) {
            Map<String, Object> body = new LinkedHashMap<>();
            body.put("rows", rows.subList(i, Math.min(rows.size(), i + WRITE_BATCH)));
            body.put("if_not_exists", true);
            if (ttlSeconds != null) {
                body.put("ttl", ttlSeconds);
            }
            Object ex = post("/rows", body, false, "writing rows of " + name).get("existing");
            if (ex instanceof List) {
                for (Object o : (List<?>) ex) {
                    existing.add(i + ((Number) o).intValue());
                }
            }
        }
        return existing;
    }

    /** Deletes the row(s) of a key: the full primary key, or a partition key (the whole partition). */
    public int delete(Map<String, ?> key) {
        Object n = post("/rows/delete", Map.of("key", key), true, "deleting from " + name).get("deleted");
        return ((Number) n).intValue();
    }

    /** Deletes the rows of several keys, {@value #WRITE_BATCH} per request. */
    public int deleteMany(List<? extends Map<String, ?>> keys) {
        int deleted = 0;
        for (int i = 0; i < keys.size(); i += WRITE_BATCH) {
            Map<String, Object> body = Map.of("keys", keys.subList(i, Math.min(keys.size(), i + WRITE_BATCH)));
            deleted += ((Number) post("/rows/delete", body, true, "deleting from " + name).get("deleted")).intValue();
        }
        return deleted;
    }

    // --- export --------------------------------------------------------------------------------------------

    /**
     * Writes the whole table to {@code out} (NDJSON: one JSON object per row; CSV: a header, then rows), in
     * constant memory. A connection that breaks off is opened again from the server's last resume mark, and
     * the rows already written after it are checked and not written twice. Returns the number of rows, as the
     * server's end line gives it. The server's marks are not written; {@code out} is not closed.
     */
    public long export(Format format, OutputStream out) {
        return export(format, null, out);
    }

    /** {@link #export(Format, OutputStream)} of some columns only (null: all). */
    public long export(Format format, List<String> columns, OutputStream out) {
        return new Exporter(client, this, format, columns).toStream(out, -1);
    }

    /** Every row of the table to {@code rows}, one at a time (NDJSON underneath; resumes like the others). */
    public long export(Consumer<Map<String, Object>> rows) {
        return export((List<String>) null, rows);
    }

    public long export(List<String> columns, Consumer<Map<String, Object>> rows) {
        return new Exporter(client, this, Format.NDJSON, columns).toRows(rows, -1);
    }

    /** For the tests: as {@link #export(Format, List, OutputStream)}, the first connection dropped after some rows. */
    long export(Format format, List<String> columns, OutputStream out, int dropAfterRows) {
        return new Exporter(client, this, format, columns).toStream(out, dropAfterRows);
    }

    @Override
    public String toString() {
        return "Table(" + name + ")";
    }
}
