package io.mysimbdp.client;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.HttpURLConnection;
import java.net.Proxy;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import javax.net.ssl.HttpsURLConnection;

/**
 * Reads an export stream in constant memory, and resumes it when it breaks off.
 *
 * <p>The server writes a resume mark (a token, and the rows before it) every so many rows. After a break the
 * export is asked again from the last mark; the rows this reader already handed out after that mark are read
 * again and skipped, and their SHA-256 must equal that of the rows handed out (so nothing is given twice,
 * and a table that changed meanwhile is an error rather than a silent mix). Only that digest is kept, never
 * the rows.
 *
 * <p>The bytes are read in large blocks and data records are handed out as they came, whole runs of them
 * at a time (a run ends at a control line, or where a block ends): a record is only looked at to find its
 * end, and a line starting like a control line ({@code {"_} in NDJSON, {@code #} in CSV) is the only one
 * parsed.
 */
final class Exporter {
    private static final int ATTEMPTS = 5; // breaks in a row (without a new mark) before giving up
    private static final int MAX_RECORD = 64 << 20;
    private static final int BLOCK = 256 << 10; // the read buffer (it grows for a longer record)

    private final MysimbdpClient client;
    private final Table table;
    private final Format format;
    private final List<String> columns;

    private String resume; // the last mark's token (null: from the start)
    private long rowsAtMark; // rows before that mark
    private long sinceMark; // rows handed out after it
    private MessageDigest sinceDigest = Digests.sha256(); // of those rows' bytes, each with its '\n'
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

    /** Where data records go. */
    private interface Sink {
        /** The CSV header, with its '\n'. */
        void header(byte[] b, int off, int len) throws IOException;

        /** Whole data records, each ending with '\n' (no '\r' before it), one after the other. */
        void rows(byte[] b, int off, int len) throws IOException;
    }

    long toStream(OutputStream out, int dropAfterRows) {
        return run(new Sink() {
            @Override
            public void header(byte[] b, int off, int len) throws IOException {
                out.write(b, off, len);
            }

            @Override
            public void rows(byte[] b, int off, int len) throws IOException {
                out.write(b, off, len);
            }
        }, dropAfterRows);
    }

    long toRows(Consumer<Map<String, Object>> rows, int dropAfterRows) {
        return run(new Sink() {
            @Override
            public void header(byte[] b, int off, int len) {}

            @Override
            public void rows(byte[] b, int off, int len) throws IOException {
                int end = off + len;
                for (int s = off, i = off; i < end; i++) {
                    if (b[i] == '\n') { // NDJSON: a line end inside a value is escaped
                        rows.accept(Http.JSON.readValue(b, s, i - s, Http.MAP));
                        s = i + 1;
                    }
                }
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

    /**
     * One connection: returns the row count at the end line, or throws Broken.
     *
     * <p>The stream is read with {@link HttpURLConnection}, on this thread, not with the client's
     * {@code java.net.http.HttpClient}: draining the same 115 MB export costs the JVM about 0.1 s of CPU that
     * way and about 1.5 s through the HttpClient's asynchronous pipeline (a selector thread, buffers handed
     * over between threads), and on a small machine the CPU the client spends is taken from the server. The
     * HttpClient's settings (connect timeout, proxy, TLS context) are used for it; the request timeout bounds
     * the wait for the answer and then for each read, so a stream that stalls counts as a break.
     */
    private long once(Sink sink, int dropAfterRows) throws Broken {
        String what = "exporting " + table.name();
        URI uri = client.query(url());
        HttpURLConnection conn;
        int status;
        try {
            conn = open(uri);
            status = conn.getResponseCode();
        } catch (IOException e) {
            throw new Broken(e.toString(), e);
        }
        try {
            if (status >= 400) {
                throw error(conn, status, what);
            }
            try (InputStream body = conn.getInputStream()) {
                return new Reader(body, sink, dropAfterRows, what).read();
            }
        } catch (IOException e) {
            conn.disconnect(); // broken off: this socket is not kept for another request
            throw new Broken(e.toString(), e);
        } catch (UnavailableException e) { // the database is down for a moment: asked again like a break
            throw new Broken(e.getMessage(), e);
        } catch (Broken | RuntimeException e) {
            conn.disconnect(); // the rest of the answer is not read: this socket is not kept either
            throw e;
        }
    }

    private HttpURLConnection open(URI uri) throws IOException {
        HttpClient hc = client.http.client;
        Proxy proxy = Proxy.NO_PROXY; // as the HttpClient, which has no proxy unless it was given a selector
        if (hc.proxy().isPresent()) {
            List<Proxy> chosen = hc.proxy().get().select(uri);
            proxy = chosen == null || chosen.isEmpty() ? Proxy.NO_PROXY : chosen.get(0);
        }
        HttpURLConnection conn = (HttpURLConnection) uri.toURL().openConnection(proxy);
        if (conn instanceof HttpsURLConnection https) {
            https.setSSLSocketFactory(hc.sslContext().getSocketFactory());
        }
        Duration timeout = client.http.requestTimeout;
        conn.setConnectTimeout(millis(hc.connectTimeout().orElse(timeout)));
        conn.setReadTimeout(millis(timeout)); // the answer's start, then any one read: a stalled stream is a break
        conn.setInstanceFollowRedirects(false);
        conn.setUseCaches(false);
        conn.setRequestProperty("Authorization", client.http.authorization);
        conn.setRequestProperty("Accept", "*/*");
        return conn;
    }

    private static int millis(Duration d) {
        return (int) Math.max(1L, Math.min(Integer.MAX_VALUE, d.toMillis()));
    }

    /** The exception for an error answer (its body is small: at most 64 KiB of it is read). */
    private static MysimbdpException error(HttpURLConnection conn, int status, String what) {
        byte[] body = new byte[0];
        try (InputStream in = conn.getErrorStream()) {
            if (in != null) {
                body = in.readNBytes(64 * 1024);
            }
        } catch (IOException e) {
            // the status is enough
        }
        Map<String, List<String>> fields = new HashMap<>();
        conn.getHeaderFields().forEach((k, v) -> {
            if (k != null && v != null) { // the null key is the status line
                fields.put(k, v);
            }
        });
        return Http.error(status, HttpHeaders.of(fields, (k, v) -> true), body, what);
    }

    /**
     * One connection's bytes. {@code buf[run, rec)} are whole data records not handed out yet, {@code rec} is
     * where the current record starts, {@code scan} where the search for its end goes on.
     */
    private final class Reader {
        private final InputStream in;
        private final Sink sink;
        private final int dropAfterRows;
        private final String what;
        private final boolean csv = format == Format.CSV;
        private byte[] buf = new byte[BLOCK];
        private int end;
        private int scan;
        private int rec;
        private int run;
        private int runRows;
        private boolean quoted; // CSV: inside quotes at scan
        private int handed; // rows of this connection handed out
        private long skip = sinceMark; // rows of this connection already handed out by an earlier one
        private final MessageDigest skipped = Digests.sha256();

        Reader(InputStream in, Sink sink, int dropAfterRows, String what) {
            this.in = in;
            this.sink = sink;
            this.dropAfterRows = dropAfterRows;
            this.what = what;
        }

        /** Where the current record's line end is, or -1: not in the buffer yet. */
        private int lineEnd() {
            byte[] b = buf;
            int e = end;
            if (!csv) {
                for (int i = scan; i < e; i++) {
                    if (b[i] == '\n') {
                        return i;
                    }
                }
                scan = e;
                return -1;
            }
            boolean q = quoted; // CSV: a line end inside quotes does not end the record
            for (int i = scan; i < e; i++) {
                byte c = b[i];
                if (c == '"') {
                    q = !q;
                } else if (c == '\n' && !q) {
                    quoted = false;
                    return i;
                }
            }
            quoted = q;
            scan = e;
            return -1;
        }

        /** Hand out the records of the run (up to rec). */
        private void flush() {
            int len = rec - run;
            if (len > 0) {
                byte[] b = buf;
                int off = run;
                local(() -> sink.rows(b, off, len));
                sinceDigest.update(b, off, len);
                sinceMark += runRows;
                handed += runRows;
            }
            runRows = 0;
            run = rec;
        }

        /** More bytes: the run is handed out first, the current record moved to the front of the buffer. */
        private void fill() throws IOException, Broken {
            flush();
            if (rec > 0) {
                System.arraycopy(buf, rec, buf, 0, end - rec);
                end -= rec;
                scan -= rec;
                rec = 0;
                run = 0;
            }
            if (end == buf.length) {
                if (buf.length >= MAX_RECORD) {
                    throw new IOException("a record longer than " + MAX_RECORD + " bytes");
                }
                buf = Arrays.copyOf(buf, Math.min(MAX_RECORD, buf.length * 2));
            }
            if (Thread.currentThread().isInterrupted()) {
                throw new TransportException(what + ": interrupted", null);
            }
            int n = in.read(buf, end, buf.length - end);
            if (n < 0) {
                throw new Broken("the connection ended before the end line", null); // a record without its line end is never handed out
            }
            end += n;
        }

        long read() throws IOException, Broken {
            boolean first = true;
            while (true) {
                int nl = lineEnd();
                if (nl < 0) {
                    fill();
                    continue;
                }
                int start = rec;
                int next = nl + 1;
                int len = (nl > start && buf[nl - 1] == '\r') ? nl - 1 - start : nl - start; // without the line end
                boolean plain = len == nl - start; // the record ends with '\n' alone: its bytes can go as they are
                scan = next;
                if (first && csv) { // the header
                    first = false;
                    if (!headerDone) {
                        byte[] h = withNewline(start, len);
                        local(() -> sink.header(h, 0, h.length));
                        headerDone = true;
                    }
                    rec = run = next;
                    continue;
                }
                first = false;
                if (csv ? len > 0 && buf[start] == '#'
                        : len > 2 && buf[start] == '{' && buf[start + 1] == '"' && buf[start + 2] == '_') {
                    Control c = control(Arrays.copyOfRange(buf, start, start + len), csv);
                    if (c != null) {
                        flush();
                        rec = run = next;
                        Long done = onControl(c);
                        if (done != null) {
                            return done;
                        }
                        continue;
                    }
                }
                if (skip > 0) { // read again after a resume: checked, not handed out
                    flush();
                    rec = run = next;
                    skipped.update(buf, start, len);
                    skipped.update((byte) '\n');
                    if (--skip == 0 && !MessageDigest.isEqual(skipped.digest(), copy(sinceDigest).digest())) {
                        throw changed("the rows after the last mark differ");
                    }
                    continue;
                }
                if (!plain) { // "\r\n": handed out alone, with '\n' only
                    flush();
                    byte[] r = withNewline(start, len);
                    local(() -> sink.rows(r, 0, r.length));
                    sinceDigest.update(r);
                    sinceMark++;
                    handed++;
                    rec = run = next;
                } else {
                    rec = next;
                    runRows++;
                }
                if (dropAfterRows > 0 && handed + runRows >= dropAfterRows) {
                    flush();
                    throw new Broken("dropped on purpose after " + handed + " rows (test)", null);
                }
            }
        }

        private byte[] withNewline(int start, int len) {
            byte[] r = Arrays.copyOfRange(buf, start, start + len + 1);
            r[len] = '\n';
            return r;
        }

        /** A control line: null to go on, or the row count at the end line. */
        private Long onControl(Control c) throws Broken {
            switch (c.kind) {
                case "resume" -> {
                    if (skip > 0) {
                        throw new Broken("a resume mark came before the rows already written", null);
                    }
                    resume = c.token;
                    rowsAtMark = c.rows;
                    sinceMark = 0;
                    sinceDigest = Digests.sha256();
                    return null;
                }
                case "end" -> {
                    long total = rowsAtMark + sinceMark;
                    if (skip > 0) {
                        throw changed("fewer rows after the last mark");
                    }
                    if (c.rows != total) {
                        throw new TransportException("exporting " + table.name() + ": the server counted "
                                + c.rows + " rows, " + total + " were received", null);
                    }
                    return c.rows;
                }
                default -> throw new Broken("the server stopped the export: " + c.token, null);
            }
        }
    }

    private MysimbdpException changed(String how) {
        return new MysimbdpException("exporting " + table.name() + ": the table changed while the export was resumed ("
                + how + ")", 0, "export_changed", "export it again");
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
}
