package io.mysimbdp.client;

import java.io.BufferedInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

/**
 * Reads an export stream, record by record, in constant memory, and resumes it when it breaks off.
 *
 * <p>The server writes a resume mark (a token, and the rows before it) every so many rows. After a break the
 * export is asked again from the last mark; the rows this reader already handed out after that mark are read
 * again and skipped, and their SHA-256 must equal that of the rows handed out (so nothing is given twice,
 * and a table that changed meanwhile is an error rather than a silent mix).
 */
final class Exporter {
    private static final int ATTEMPTS = 5; // breaks in a row (without a new mark) before giving up
    private static final int MAX_RECORD = 64 << 20;

    private final MysimbdpClient client;
    private final Table table;
    private final Format format;
    private final List<String> columns;

    private String resume; // the last mark's token (null: from the start)
    private long rowsAtMark; // rows before that mark
    private long sinceMark; // rows handed out after it
    private MessageDigest sinceDigest = Digests.sha256(); // of those rows' bytes
    private boolean headerDone;

    Exporter(MysimbdpClient client, Table table, Format format, List<String> columns) {
        this.client = client;
        this.table = table;
        this.format = format;
        this.columns = columns;
    }

    /** The last resume mark's token seen (null: none yet). */
    String resumeToken() {
        return resume;
    }

    /** What to do with each data record (its bytes, without the line end). */
    private interface Sink {
        void header(byte[] line) throws IOException;

        void row(byte[] line) throws IOException;
    }

    long toStream(OutputStream out, int dropAfterRows) {
        return run(new Sink() {
            @Override
            public void header(byte[] line) throws IOException {
                out.write(line);
                out.write('\n');
            }

            @Override
            public void row(byte[] line) throws IOException {
                out.write(line);
                out.write('\n');
            }
        }, dropAfterRows);
    }

    long toRows(Consumer<Map<String, Object>> rows, int dropAfterRows) {
        return run(new Sink() {
            @Override
            public void header(byte[] line) {}

            @Override
            public void row(byte[] line) throws IOException {
                rows.accept(Http.JSON.readValue(line, Http.MAP));
            }
        }, dropAfterRows);
    }

    /** Raised inside the loop when the stream broke off (or said it failed): resume. */
    private static final class Broken extends Exception {
        private static final long serialVersionUID = 1L;

        Broken(String why, Throwable cause) {
            super(why, cause);
        }
    }

    private long run(Sink sink, int dropAfterRows) {
        int breaks = 0;
        String why = null;
        Throwable cause = null;
        while (true) {
            long markBefore = rowsAtMark;
            String tokenBefore = resume;
            try {
                return once(sink, dropAfterRows);
            } catch (Broken b) {
                why = b.getMessage();
                cause = b.getCause();
            }
            dropAfterRows = -1;
            if (resume != null && (!resume.equals(tokenBefore) || rowsAtMark != markBefore)) {
                breaks = 0; // it got on: a new mark since the last break
            }
            if (++breaks >= ATTEMPTS) {
                throw new TransportException("exporting " + table.name() + ": the export kept breaking off (" + why
                        + "); " + (rowsAtMark + sinceMark) + " rows were written", cause);
            }
            Http.sleep(Duration.ofMillis(500L << Math.min(breaks - 1, 4)));
        }
    }

    private String url() {
        StringBuilder sb = new StringBuilder(table.path("/export")).append("?format=").append(format.wire);
        if (columns != null && !columns.isEmpty()) {
            sb.append("&columns=").append(Http.q(String.join(",", columns)));
        }
        if (resume != null) {
            sb.append("&resume=").append(Http.q(resume));
        }
        return sb.toString();
    }

    /** One connection: returns the row count at the end line, or throws Broken. */
    private long once(Sink sink, int dropAfterRows) throws Broken {
        String what = "exporting " + table.name();
        HttpRequest req = client.http.request(client.query(url()), client.http.requestTimeout).GET().build();
        HttpResponse<InputStream> resp;
        try {
            resp = client.http.client.send(req, HttpResponse.BodyHandlers.ofInputStream());
        } catch (IOException e) {
            throw new Broken(e.toString(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new TransportException(what + ": interrupted", e);
        }
        try (InputStream body = Http.check(resp, what).body()) {
            return read(new BufferedInputStream(body, 1 << 16), sink, dropAfterRows);
        } catch (IOException e) {
            throw new Broken(e.toString(), e);
        } catch (UnavailableException e) { // the database is down for a moment: asked again like a break
            throw new Broken(e.getMessage(), e);
        }
    }

    private long read(InputStream in, Sink sink, int dropAfterRows) throws IOException, Broken {
        boolean csv = format == Format.CSV;
        long skip = sinceMark; // rows of this connection already handed out by an earlier one
        MessageDigest skipped = Digests.sha256();
        boolean first = true;
        int handed = 0;
        Record rec = new Record();
        while (rec.next(in, csv)) {
            byte[] line = rec.bytes();
            if (csv && first) {
                first = false;
                if (!headerDone) {
                    local(() -> sink.header(line));
                    headerDone = true;
                }
                continue;
            }
            first = false;
            Control c = control(line, csv);
            if (c != null) {
                switch (c.kind) {
                    case "resume" -> {
                        if (skip > 0) {
                            throw new Broken("a resume mark came before the rows already written", null);
                        }
                        resume = c.token;
                        rowsAtMark = c.rows;
                        sinceMark = 0;
                        sinceDigest = Digests.sha256();
                    }
                    case "end" -> {
                        long total = rowsAtMark + sinceMark;
                        if (skip > 0) {
                            throw new MysimbdpException("exporting " + table.name() + ": the table changed while the "
                                    + "export was resumed (fewer rows after the last mark)", 0, "export_changed",
                                    "export it again");
                        }
                        if (c.rows != total) {
                            throw new TransportException("exporting " + table.name() + ": the server counted "
                                    + c.rows + " rows, " + total + " were received", null);
                        }
                        return c.rows;
                    }
                    default -> throw new Broken("the server stopped the export: " + c.token, null);
                }
                continue;
            }
            if (skip > 0) {
                skipped.update(line);
                if (--skip == 0 && !MessageDigest.isEqual(skipped.digest(), copy(sinceDigest).digest())) {
                    throw new MysimbdpException("exporting " + table.name() + ": the table changed while the export "
                            + "was resumed (the rows after the last mark differ)", 0, "export_changed",
                            "export it again");
                }
                continue;
            }
            local(() -> sink.row(line));
            sinceDigest.update(line);
            sinceMark++;
            if (++handed == dropAfterRows) {
                throw new Broken("dropped on purpose after " + handed + " rows (test)", null);
            }
        }
        throw new Broken("the connection ended before the end line", null);
    }

    private interface Io {
        void run() throws IOException;
    }

    /** Writing to the caller's stream or consumer: a failure there is not a broken connection. */
    private void local(Io io) {
        try {
            io.run();
        } catch (IOException e) {
            throw new MysimbdpException("exporting " + table.name() + ": writing out failed: " + e.getMessage(), 0,
                    "local_io", null, e);
        }
    }

    private static MessageDigest copy(MessageDigest d) {
        try {
            return (MessageDigest) d.clone();
        } catch (CloneNotSupportedException e) {
            throw new IllegalStateException(e);
        }
    }

    /** A control line: kind resume (token, rows), end (rows) or error (token = the message). */
    private record Control(String kind, String token, long rows) {}

    private static final byte[] NDJSON_RESUME = "{\"_resume\"".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] NDJSON_END = "{\"_end\"".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] NDJSON_ERROR = "{\"_error\"".getBytes(StandardCharsets.US_ASCII);

    private static boolean starts(byte[] line, byte[] prefix) {
        return line.length >= prefix.length && Arrays.equals(line, 0, prefix.length, prefix, 0, prefix.length);
    }

    private static Control control(byte[] line, boolean csv) throws IOException {
        if (csv) {
            if (line.length == 0 || line[0] != '#') {
                return null; // a data line starting with '#' is quoted by the server
            }
            String s = new String(line, StandardCharsets.UTF_8).trim();
            String[] w = s.split(" ");
            if (s.startsWith("# resume ") && w.length >= 4 && w[3].startsWith("rows=")) {
                return new Control("resume", w[2], Long.parseLong(w[3].substring(5)));
            }
            if (s.startsWith("# end ") && w.length >= 3 && w[2].startsWith("rows=")) {
                return new Control("end", null, Long.parseLong(w[2].substring(5)));
            }
            if (s.startsWith("# error")) {
                return new Control("error", s.substring(2), 0);
            }
            return new Control("error", "an unknown comment line: " + s, 0);
        }
        if (starts(line, NDJSON_RESUME)) {
            Map<String, Object> m = Http.JSON.readValue(line, Http.MAP);
            return new Control("resume", Http.str(m.get("_resume")), ((Number) m.get("rows")).longValue());
        }
        if (starts(line, NDJSON_END)) {
            Map<?, ?> end = (Map<?, ?>) Http.JSON.readValue(line, Http.MAP).get("_end");
            return new Control("end", null, ((Number) end.get("rows")).longValue());
        }
        if (starts(line, NDJSON_ERROR)) {
            return new Control("error", String.valueOf(Http.JSON.readValue(line, Http.MAP).get("_error")), 0);
        }
        return null;
    }

    /** One record: a line (CSV: a line end inside quotes does not end it), without its line end. */
    private static final class Record {
        private byte[] buf = new byte[8192];
        private int len;

        boolean next(InputStream in, boolean csv) throws IOException {
            len = 0;
            boolean quoted = false;
            while (true) {
                int b = in.read();
                if (b < 0) {
                    return false; // a record without its line end is incomplete: never handed out
                }
                if (b == '\n' && !quoted) {
                    if (len > 0 && buf[len - 1] == '\r') {
                        len--;
                    }
                    return true;
                }
                if (csv && b == '"') {
                    quoted = !quoted;
                }
                if (len == buf.length) {
                    if (len >= MAX_RECORD) {
                        throw new IOException("a record longer than " + MAX_RECORD + " bytes");
                    }
                    buf = Arrays.copyOf(buf, len * 2);
                }
                buf[len++] = (byte) b;
            }
        }

        byte[] bytes() {
            return Arrays.copyOf(buf, len);
        }
    }
}
