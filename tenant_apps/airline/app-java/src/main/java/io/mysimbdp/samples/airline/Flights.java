package io.mysimbdp.samples.airline;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

/**
 * The airline tenant's table, one row per flight, partitioned by airport and day: the same columns, key and
 * conversions as the Python app's (tenant_apps/airline/app/flights.py on the mysimbdp_app library), so that both
 * apps make the same rows of the same file.
 */
final class Flights {
    static final String TABLE = "flights";
    static final String[][] COLUMNS = {
        {"year", "int"}, {"month", "int"}, {"day", "int"}, {"dep_time", "int"}, {"sched_dep_time", "int"},
        {"dep_delay", "int"}, {"arr_time", "int"}, {"sched_arr_time", "int"}, {"arr_delay", "int"},
        {"carrier", "text"}, {"flight", "int"}, {"tailnum", "text"}, {"origin", "text"}, {"dest", "text"},
        {"air_time", "int"}, {"distance", "int"}, {"hour", "int"}, {"minute", "int"}, {"time_hour", "timestamp"},
    };
    static final String PRIMARY_KEY = "((origin, year, month, day), carrier, flight, sched_dep_time)";
    static final Set<String> KEY = Set.of("origin", "year", "month", "day", "carrier", "flight", "sched_dep_time");
    static final Set<String> NULLS = Set.of("", "NA", "N/A", "null", "NULL");
    static final int MAX_KEY_BYTES = 65535; // Cassandra refuses a larger key value (and the batch with it)

    /** A record that cannot be a row; the message says why. */
    static final class Rejected extends Exception {
        private static final long serialVersionUID = 1L;

        Rejected(String why) {
            super(why, null, false, false);
        }
    }

    static String createCql(String keyspace) {
        List<String> cols = new ArrayList<>();
        for (String[] c : COLUMNS) {
            cols.add(c[0] + " " + c[1]);
        }
        return "CREATE TABLE IF NOT EXISTS " + keyspace + "." + TABLE + " (" + String.join(", ", cols)
                + ", PRIMARY KEY " + PRIMARY_KEY + ")";
    }

    static String insertCql(String keyspace) {
        List<String> cols = new ArrayList<>();
        List<String> marks = new ArrayList<>();
        for (String[] c : COLUMNS) {
            cols.add(c[0]);
            marks.add("?");
        }
        return "INSERT INTO " + keyspace + "." + TABLE + " (" + String.join(", ", cols) + ") VALUES ("
                + String.join(", ", marks) + ")";
    }

    private final int[] order; // for each column, its field in a record (-1: not in the file)
    private final int width;

    /** A converter for records under {@code header}; Rejected when the header lacks a key column. */
    Flights(List<String> header) throws Rejected {
        Map<String, Integer> positions = new HashMap<>();
        for (int i = 0; i < header.size(); i++) {
            positions.putIfAbsent(header.get(i).strip().toLowerCase(Locale.ROOT), i);
        }
        List<String> missing = new ArrayList<>();
        order = new int[COLUMNS.length];
        for (int i = 0; i < COLUMNS.length; i++) {
            Integer p = positions.get(COLUMNS[i][0]);
            order[i] = p == null ? -1 : p;
            if (p == null && KEY.contains(COLUMNS[i][0])) {
                missing.add(COLUMNS[i][0]);
            }
        }
        if (!missing.isEmpty()) {
            throw new Rejected("the header lacks the key column(s) " + String.join(", ", missing));
        }
        width = header.size();
    }

    /**
     * One record as the row's values, in COLUMNS' order. What is wrong with a bad record is said as the Python
     * app says it: a value that does not convert first (or bytes that are not UTF-8 in the same or an earlier
     * column), then an empty or oversized key, then any other bytes that are not UTF-8 or an integer with an "_".
     */
    Object[] convert(List<String> record) throws Rejected {
        if (record.size() != width) {
            throw new Rejected(record.size() + " fields where the header has " + width);
        }
        Object[] values = new Object[COLUMNS.length];
        String problem = null; // the first column found wrong, in the columns' order
        boolean unconverted = false;
        for (int i = 0; i < COLUMNS.length; i++) {
            String name = COLUMNS[i][0];
            String type = COLUMNS[i][1];
            String raw = order[i] < 0 ? "" : record.get(order[i]);
            if (NULLS.contains(raw)) {
                continue;
            }
            String why = null;
            if (raw.indexOf('\uFFFD') >= 0) {
                why = "column " + name + " is not valid UTF-8";
            } else if (type.equals("int") && raw.indexOf('_') >= 0) { // Python reads 5_17 as 517; a CSV does not
                why = "column " + name + ": '" + shown(raw) + "' is not a valid int";
            }
            try {
                values[i] = switch (type) {
                    case "int" -> Integer.valueOf(raw.strip());
                    case "timestamp" -> timestamp(raw);
                    default -> raw;
                };
            } catch (NumberFormatException | DateTimeParseException e) {
                unconverted = true;
                if (why == null) {
                    why = "column " + name + ": '" + shown(raw) + "' is not a valid " + type;
                }
            }
            if (why != null && problem == null) {
                problem = why;
            }
        }
        if (unconverted) {
            throw new Rejected(problem);
        }
        for (int i = 0; i < COLUMNS.length; i++) {
            String name = COLUMNS[i][0];
            if (!KEY.contains(name)) {
                continue;
            }
            if (values[i] == null) {
                throw new Rejected("key column " + name + " is empty");
            }
            if (values[i] instanceof String s && s.getBytes(StandardCharsets.UTF_8).length > MAX_KEY_BYTES) {
                throw new Rejected("key column " + name + " is longer than Cassandra's " + MAX_KEY_BYTES + " bytes");
            }
        }
        if (problem != null) {
            throw new Rejected(problem);
        }
        return values;
    }

    private static String shown(String raw) {
        return raw.length() > 40 ? raw.substring(0, 40) : raw;
    }

    /** An ISO 8601 time (UTC when it names no zone), as Python's datetime.fromisoformat reads it. */
    static Instant timestamp(String raw) {
        String t = raw.strip();
        if (t.length() > 10 && t.charAt(10) == ' ') {
            t = t.substring(0, 10) + "T" + t.substring(11);
        }
        if (t.length() == 10) {
            return LocalDate.parse(t).atStartOfDay().toInstant(ZoneOffset.UTC);
        }
        try {
            return OffsetDateTime.parse(t).toInstant();
        } catch (DateTimeParseException e) {
            return LocalDateTime.parse(t).toInstant(ZoneOffset.UTC);
        }
    }
}
