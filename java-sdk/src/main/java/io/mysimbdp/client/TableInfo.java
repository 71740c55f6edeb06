package io.mysimbdp.client;

import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/** A table's description: columns and their CQL types, primary key, indexes, default TTL. */
public final class TableInfo {
    /** A clustering column and its order (ASC or DESC). */
    public record Clustering(String name, String order) {}

    /** An index on a column; {@code kind} is sai, legacy or custom. */
    public record Index(String name, String column, String kind) {}

    private final Map<String, Object> raw;
    private final Map<String, String> columns = new LinkedHashMap<>();
    private final List<String> partitionKey = new ArrayList<>();
    private final List<Clustering> clustering = new ArrayList<>();
    private final List<Index> indexes = new ArrayList<>();

    TableInfo(Map<String, Object> raw) {
        this.raw = Collections.unmodifiableMap(raw);
        for (Object o : list(raw.get("columns"))) {
            Map<?, ?> c = (Map<?, ?>) o;
            columns.put(Http.str(c.get("name")), Http.str(c.get("type")));
        }
        for (Object o : list(raw.get("partition_key"))) {
            partitionKey.add(Http.str(o));
        }
        for (Object o : list(raw.get("clustering"))) {
            Map<?, ?> c = (Map<?, ?>) o;
            clustering.add(new Clustering(Http.str(c.get("name")), Http.str(c.get("order"))));
        }
        for (Object o : list(raw.get("indexes"))) {
            Map<?, ?> c = (Map<?, ?>) o;
            indexes.add(new Index(Http.str(c.get("name")), Http.str(c.get("column")), Http.str(c.get("kind"))));
        }
    }

    private static List<?> list(Object o) {
        return o instanceof List ? (List<?>) o : List.of();
    }

    public String name() {
        return Http.str(raw.get("name"));
    }

    /** Column name to CQL type, in the table's order. */
    public Map<String, String> columns() {
        return Collections.unmodifiableMap(columns);
    }

    public List<String> partitionKey() {
        return Collections.unmodifiableList(partitionKey);
    }

    public List<Clustering> clustering() {
        return Collections.unmodifiableList(clustering);
    }

    /** The whole primary key: partition key then clustering columns. */
    public List<String> primaryKey() {
        List<String> out = new ArrayList<>(partitionKey);
        clustering.forEach(c -> out.add(c.name()));
        return out;
    }

    public List<Index> indexes() {
        return Collections.unmodifiableList(indexes);
    }

    /** The table's default TTL in seconds (0: none). */
    public int defaultTtl() {
        Object t = raw.get("default_ttl");
        return t instanceof Number ? ((Number) t).intValue() : 0;
    }

    public Map<String, Object> raw() {
        return raw;
    }

    @Override
    public String toString() {
        return "TableInfo" + raw;
    }
}
