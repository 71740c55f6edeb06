package io.mysimbdp.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.function.Function;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Offline checks of the export reader against a scripted server: records split across reads, CSV records
 * with quoted line ends and quoted '#', "\r\n", resume marks, breaks (a connection cut short, a stream that
 * ends without its end line, an error line, a 503), the re-read rows after a resume, the end line's count.
 */
class ExporterTest {
    /** One answer: the status, and the body in pieces (each written and flushed); cut: the body is cut short. */
    private record Answer(int status, List<byte[]> pieces, boolean cut) {}

    private HttpServer server;
    private MysimbdpClient client;
    private final List<String> asked = new CopyOnWriteArrayList<>(); // each request's resume token ("-": none)
    private volatile Function<String, Answer> script;

    @BeforeEach
    void start() throws IOException {
        server = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.createContext("/v1/tables/t/export", this::answer);
        server.start();
        client = MysimbdpClient.builder().user("u").password("p")
                .queryUrl("http://127.0.0.1:" + server.getAddress().getPort()).build();
    }

    @AfterEach
    void stop() {
        server.stop(0);
    }

    private void answer(HttpExchange ex) throws IOException {
        String resume = "-";
        String q = ex.getRequestURI().getRawQuery();
        for (String kv : q == null ? new String[0] : q.split("&")) {
            if (kv.startsWith("resume=")) {
                resume = URLDecoder.decode(kv.substring(7), StandardCharsets.UTF_8);
            }
        }
        asked.add(resume);
        Answer a = script.apply(resume);
        long total = a.pieces.stream().mapToLong(p -> p.length).sum();
        try {
            ex.sendResponseHeaders(a.status, a.cut ? total + 100 : 0); // cut: a length it never gets
            OutputStream out = ex.getResponseBody();
            for (byte[] p : a.pieces) {
                out.write(p);
                out.flush();
            }
        } catch (IOException e) {
            // the client went away
        } finally {
            try {
                ex.close();
            } catch (RuntimeException e) {
                // a cut answer: its connection is closed
            }
        }
    }

    /** The text in pieces of {@code size} bytes (records split across reads). */
    private static List<byte[]> pieces(String text, int size) {
        byte[] b = text.getBytes(StandardCharsets.UTF_8);
        List<byte[]> out = new ArrayList<>();
        for (int i = 0; i < b.length; i += size) {
            out.add(Arrays.copyOfRange(b, i, Math.min(b.length, i + size)));
        }
        return out;
    }

    private static Answer ok(String body, int size) {
        return new Answer(200, pieces(body, size), false);
    }

    private static String csvRows(int from, int to) {
        StringBuilder sb = new StringBuilder();
        for (int i = from; i < to; i++) {
            sb.append(switch (i % 5) {
                case 1 -> "\"#not a comment " + i + "\",1\n"; // a first field starting with '#' is quoted
                case 2 -> "\"two\nlines " + i + "\",\"a \"\"quote\"\"\"\n"; // a line end inside quotes
                case 3 -> "crlf " + i + ",3\r\n";
                default -> "row " + i + ",x\n";
            });
        }
        return sb.toString();
    }

    private static String ndRows(int from, int to) {
        StringBuilder sb = new StringBuilder();
        for (int i = from; i < to; i++) {
            sb.append("{\"a\": ").append(i).append(", \"b\": \"x\\n").append(i).append("\"}\n");
        }
        return sb.toString();
    }

    private long export(Format f, ByteArrayOutputStream out) {
        return new Exporter(client, client.table("t"), f, null).toStream(out, -1);
    }

    @Test
    void csvResumesFromTheLastMarkAfterACut() {
        String header = "a,b\n";
        script = token -> switch (token) {
            case "-" -> { // cut inside a record after the second mark
                String body = header + csvRows(0, 5) + "# resume T1 rows=5\n" + csvRows(5, 10) + "# resume T2 rows=10\n"
                        + csvRows(10, 12) + "row 12,";
                yield new Answer(200, pieces(body, 7), true);
            }
            case "T2" -> ok(header + csvRows(10, 15) + "# end rows=15 complete\n", 3);
            default -> throw new IllegalStateException(token);
        };
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertEquals(15, export(Format.CSV, out));
        assertEquals((header + csvRows(0, 15)).replace("\r\n", "\n"), out.toString(StandardCharsets.UTF_8));
        assertEquals(List.of("-", "T2"), asked);
    }

    @Test
    void ndjsonRowsAfterTheMarkAreNotGivenTwice() {
        script = token -> switch (token) {
            case "-" -> ok(ndRows(0, 3) + "{\"_resume\": \"T1\", \"rows\": 3}\n" + ndRows(3, 8), 4096); // no end line
            case "T1" -> ok(ndRows(3, 10) + "{\"_end\": {\"rows\": 10, \"complete\": true}}\n", 5);
            default -> throw new IllegalStateException(token);
        };
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertEquals(10, export(Format.NDJSON, out));
        assertEquals(ndRows(0, 10), out.toString(StandardCharsets.UTF_8));
        assertEquals(List.of("-", "T1"), asked);

        asked.clear();
        List<Map<String, Object>> rows = new ArrayList<>();
        assertEquals(10, new Exporter(client, client.table("t"), Format.NDJSON, null).toRows(rows::add, -1));
        assertEquals(10, rows.size());
        assertEquals(Map.of("a", 9, "b", "x\n9"), rows.get(9));
    }

    @Test
    void anErrorLineOrA503IsABreak() {
        String[] first = {"error"};
        script = token -> switch (token) {
            case "-" -> ok(ndRows(0, 2) + "{\"_resume\": \"T1\", \"rows\": 2}\n" + ndRows(2, 3)
                    + "{\"_error\": {\"code\": \"database_unavailable\", \"message\": \"down\", \"rows\": 3}}\n", 64);
            case "T1" -> {
                if (first[0] != null) {
                    first[0] = null;
                    yield new Answer(503, pieces("{\"error\": \"down\", \"code\": \"database_unavailable\"}", 100), false);
                }
                yield ok(ndRows(2, 4) + "{\"_end\": {\"rows\": 4, \"complete\": true}}\n", 64);
            }
            default -> throw new IllegalStateException(token);
        };
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertEquals(4, export(Format.NDJSON, out));
        assertEquals(ndRows(0, 4), out.toString(StandardCharsets.UTF_8));
        assertEquals(List.of("-", "T1", "T1"), asked);
    }

    @Test
    void aRecordLongerThanTheBufferIsWhole() {
        String big = "{\"a\": \"" + "y".repeat(700_000) + "\"}\n";
        script = token -> ok(ndRows(0, 2) + big + ndRows(2, 4) + "{\"_end\": {\"rows\": 5, \"complete\": true}}\n", 10_000);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertEquals(5, export(Format.NDJSON, out));
        assertEquals(ndRows(0, 2) + big + ndRows(2, 4), out.toString(StandardCharsets.UTF_8));
    }

    @Test
    void changedRowsAfterAResumeAreAnError() {
        script = token -> switch (token) {
            case "-" -> new Answer(200, pieces(ndRows(0, 2) + "{\"_resume\": \"T1\", \"rows\": 2}\n" + ndRows(2, 5), 50),
                    true);
            case "T1" -> ok(ndRows(2, 3) + "{\"a\": 99}\n" + ndRows(4, 6) + "{\"_end\": {\"rows\": 6, \"complete\": true}}\n",
                    50);
            default -> throw new IllegalStateException(token);
        };
        MysimbdpException e = assertThrows(MysimbdpException.class, () -> export(Format.NDJSON, new ByteArrayOutputStream()));
        assertEquals("export_changed", e.code());

        script = token -> switch (token) { // fewer rows after the mark than were handed out
            case "-" -> ok(ndRows(0, 2) + "{\"_resume\": \"T1\", \"rows\": 2}\n" + ndRows(2, 5), 50);
            case "T1" -> ok(ndRows(2, 3) + "{\"_end\": {\"rows\": 3, \"complete\": true}}\n", 50);
            default -> throw new IllegalStateException(token);
        };
        e = assertThrows(MysimbdpException.class, () -> export(Format.NDJSON, new ByteArrayOutputStream()));
        assertEquals("export_changed", e.code());
    }

    @Test
    void theEndLinesCountIsChecked() {
        script = token -> ok("a\n" + "1\n2\n" + "# end rows=3 complete\n", 100);
        assertInstanceOf(TransportException.class,
                assertThrows(MysimbdpException.class, () -> export(Format.CSV, new ByteArrayOutputStream())));
    }

    @Test
    void refusalsAreTypedExceptions() {
        script = token -> new Answer(404, pieces("{\"error\": \"no table t\", \"code\": \"no_such_table\"}", 100), false);
        NotFoundException e = assertThrows(NotFoundException.class, () -> export(Format.CSV, new ByteArrayOutputStream()));
        assertEquals("no_such_table", e.code());
        assertEquals(404, e.status());
        script = token -> new Answer(400, pieces("{\"error\": \"bad\", \"code\": \"reserved_column\"}", 100), false);
        assertEquals("reserved_column", assertThrows(BadRequestException.class,
                () -> export(Format.NDJSON, new ByteArrayOutputStream())).code());
        assertEquals(List.of("-", "-"), asked);
    }
}
