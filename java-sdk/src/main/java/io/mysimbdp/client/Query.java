package io.mysimbdp.client;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A query of a table: a filter ({@code where}), the columns to return, a limit and a page size.
 *
 * <pre>{@code
 * Query q = Query.where("origin", "EWR").eq("year", 2013).eq("month", 1).eq("day", 1)
 *         .gte("sched_dep_time", 600).columns("carrier", "flight").pageSize(100);
 * }</pre>
 *
 * <p>A filter is served when it gives the whole partition key by equality (or {@code in}), then clustering
 * columns in order; any other column needs an index ({@link Table#createIndex}), else the server answers
 * {@code needs_index}. Values are numbers, strings, booleans; timestamps as ISO 8601 strings or
 * {@link java.time.Instant}.
 */
public final class Query {
    private final Map<String, Object> where = new LinkedHashMap<>();
    private List<String> columns;
    private Integer limit;
    private Integer pageSize;

    public Query() {}

    /** A query of every row (to be narrowed with {@link #eq} and the others). */
    public static Query all() {
        return new Query();
    }

    /** A query starting with {@code column = value}. */
    public static Query where(String column, Object value) {
        return new Query().eq(column, value);
    }

    /** A query with the API's own filter object ({@code {col: value | {"op": value}}}). */
    public static Query of(Map<String, ?> where) {
        Query q = new Query();
        if (where != null) {
            q.where.putAll(where);
        }
        return q;
    }

    public Query eq(String column, Object value) {
        return op(column, "eq", value);
    }

    public Query lt(String column, Object value) {
        return op(column, "lt", value);
    }

    public Query lte(String column, Object value) {
        return op(column, "lte", value);
    }

    public Query gt(String column, Object value) {
        return op(column, "gt", value);
    }

    public Query gte(String column, Object value) {
        return op(column, "gte", value);
    }

    public Query in(String column, List<?> values) {
        return op(column, "in", values);
    }

    /** {@code column op value}, op one of eq, lt, lte, gt, gte, in; several on one column are all applied. */
    @SuppressWarnings("unchecked")
    public Query op(String column, String op, Object value) {
        if ("eq".equals(op) && !where.containsKey(column)) {
            where.put(column, value); // plain equality, as the API's docs write it
            return this;
        }
        Object have = where.get(column);
        Map<String, Object> ops;
        if (have instanceof Map) {
            ops = new LinkedHashMap<>((Map<String, Object>) have);
        } else {
            ops = new LinkedHashMap<>();
            if (have != null || where.containsKey(column)) {
                ops.put("eq", have);
            }
        }
        ops.put(op, value);
        where.put(column, ops);
        return this;
    }

    /** The columns to return (all when never set). */
    public Query columns(String... names) {
        this.columns = new ArrayList<>(List.of(names));
        return this;
    }

    public Query columns(List<String> names) {
        this.columns = names == null ? null : new ArrayList<>(names);
        return this;
    }

    /** At most this many rows over all pages. */
    public Query limit(int n) {
        this.limit = n;
        return this;
    }

    /** Rows per page (the server's default when never set, at most its maximum). */
    public Query pageSize(int n) {
        this.pageSize = n;
        return this;
    }

    /** The filter, as sent. */
    public Map<String, Object> where() {
        return where;
    }

    Map<String, Object> body(String pageToken) {
        Map<String, Object> b = new LinkedHashMap<>();
        if (!where.isEmpty()) {
            b.put("where", where);
        }
        if (columns != null) {
            b.put("columns", columns);
        }
        if (limit != null) {
            b.put("limit", limit);
        }
        if (pageSize != null) {
            b.put("page_size", pageSize);
        }
        if (pageToken != null) {
            b.put("page_token", pageToken);
        }
        return b;
    }

    @Override
    public String toString() {
        return "Query" + body(null);
    }
}
