package io.mysimbdp.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.api.io.TempDir;

/**
 * The client against a REAL running platform (no mocks), as a tenant with the airline batch app
 * (tenant_apps/airline/app, table {@code flights}).
 *
 * <p>Needs env MYSIMBDP_USER and MYSIMBDP_PASSWORD (and MYSIMBDP_BATCH_URL / MYSIMBDP_QUERY_URL when not on
 * localhost); MYSIMBDP_TEST_CSV is a flights CSV file (default: the repository's flights-2013-01-01.csv).
 * Without them these tests FAIL, unless run with {@code -DskipIntegration=true}.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class PlatformIntegrationTest {
    private static final Map<String, Object> PARTITION = partition("EWR");

    @TempDir
    Path tmp;

    private MysimbdpClient client;
    private Path csv;
    private String firstJob;

    private static Map<String, Object> partition(String origin) {
        Map<String, Object> p = new LinkedHashMap<>();
        p.put("origin", origin);
        p.put("year", 2013);
        p.put("month", 1);
        p.put("day", 1);
        return p;
    }

    @BeforeAll
    void platform() throws IOException {
        Assumptions.assumeFalse(Boolean.getBoolean("skipIntegration"), "-DskipIntegration=true: not run");
        String user = System.getenv("MYSIMBDP_USER");
        String password = System.getenv("MYSIMBDP_PASSWORD");
        if (user == null || user.isBlank() || password == null || password.isBlank()) {
            fail("the integration tests need a running platform and a tenant with the airline batch app: set "
                    + "MYSIMBDP_USER and MYSIMBDP_PASSWORD (and MYSIMBDP_BATCH_URL, MYSIMBDP_QUERY_URL if not on "
                    + "localhost), or run with -DskipIntegration=true to run the unit tests only");
        }
        String given = System.getenv("MYSIMBDP_TEST_CSV");
        csv = Path.of(given != null && !given.isBlank() ? given
                : "../tenant_apps/airline/client-input-dir/flights-2013-01-01.csv");
        if (!Files.isRegularFile(csv)) {
            fail("no flights CSV at " + csv.toAbsolutePath() + ": set MYSIMBDP_TEST_CSV");
        }
        client = MysimbdpClient.builder().user(user).password(password).build();
        // the table exists once the first file is ingested
        firstJob = client.upload(csv);
        Job job = client.waitForJob(firstJob, Duration.ofMinutes(5));
        assertEquals("succeeded", job.status(), () -> "the first upload failed: " + job);
    }

    private static String key(Map<String, Object> row) {
        return row.get("carrier") + "/" + row.get("flight") + "/" + row.get("sched_dep_time");
    }

    // --- uploads and receipts ----------------------------------------------------------------------------

    @Test
    @Order(1)
    void uploadGivesAReceiptAndTheSameContentIsADuplicate() {
        Job job = client.job(firstJob);
        assertEquals("succeeded", job.status());
        assertTrue(job.rowsIngested() != null && job.rowsIngested() > 0, job::toString);
        assertTrue(client.jobs().stream().anyMatch(j -> j.id().equals(firstJob)), "jobs() lists the upload");
        UploadResult again = client.uploadFile(csv, "again.csv");
        assertTrue(again.isDuplicate(), again::toString);
        assertEquals(firstJob, again.jobId());
    }

    @Test
    @Order(2)
    void anInterruptedUploadIsResumedByAnotherClient() throws IOException {
        // other bytes than any file sent before (so not a duplicate): its rows shuffled
        List<String> lines = Files.readAllLines(csv, StandardCharsets.UTF_8);
        List<String> rows = new ArrayList<>(lines.subList(1, lines.size()));
        Collections.shuffle(rows, new Random(System.nanoTime()));
        rows.add(0, lines.get(0));
        Path file = tmp.resolve("flights-reversed-" + System.nanoTime() + ".csv");
        Files.write(file, rows, StandardCharsets.UTF_8);
        long size = Files.size(file);

        Upload first = client.openUpload(file);
        assertNull(first.result(), "a new upload");
        assertEquals(0, first.resumedFrom());
        long part = size / 3;
        assertEquals(part, first.sendPart(part));
        assertNull(first.result(), "not complete after a part");
        assertEquals(part, first.serverOffset());

        MysimbdpClient other = MysimbdpClient.builder().user(client.user())
                .password(System.getenv("MYSIMBDP_PASSWORD")).build();
        Upload resumed = other.openUpload(file);
        assertEquals(first.id(), resumed.id(), "the same upload session");
        assertEquals(part, resumed.resumedFrom(), "resumed from the server's offset");
        UploadResult result = resumed.finish();
        assertEquals("staged", result.status());
        assertEquals(part, result.resumedFrom());
        Job job = other.waitForJob(result.jobId(), Duration.ofMinutes(5));
        assertEquals("succeeded", job.status(), job::toString);
        assertEquals(lines.size() - 1, job.rowsIngested() + job.rowsRejected());
    }

    // --- queries ------------------------------------------------------------------------------------------

    @Test
    @Order(10)
    void queriesPageOverAPartition() {
        Table flights = client.table("flights");
        TableInfo info = flights.info();
        assertEquals(List.of("origin", "year", "month", "day"), info.partitionKey());
        assertEquals("timestamp", info.columns().get("time_hour"));
        assertTrue(client.tables().stream().anyMatch(t -> t.name().equals("flights")));

        long expected = flights.count(PARTITION);
        assertTrue(expected > 4, "the partition has rows: " + expected);
        Query q = Query.of(PARTITION).columns("carrier", "flight", "sched_dep_time", "time_hour").pageSize(2);
        Set<String> seen = new HashSet<>();
        String token = null;
        int pages = 0;
        String secondToken = null;
        do {
            Page p = flights.findPage(q, token);
            assertTrue(p.rows().size() <= 2);
            for (Map<String, Object> row : p.rows()) {
                assertTrue(seen.add(key(row)), "row seen twice: " + row);
                assertTrue(String.valueOf(row.get("time_hour")).matches("\\d{4}-\\d\\d-\\d\\dT.*Z"), row::toString);
            }
            token = p.nextPageToken();
            if (pages++ == 0) {
                secondToken = token;
            }
        } while (token != null);
        assertEquals(expected, seen.size(), "every row once");
        assertTrue(pages >= expected / 2);

        // the iterator pages by itself
        Set<String> iterated = new HashSet<>();
        for (Map<String, Object> row : flights.find(q)) {
            assertTrue(iterated.add(key(row)));
        }
        assertEquals(seen, iterated);

        // a token is bound to its query
        String tok = secondToken;
        BadRequestException e = assertThrows(BadRequestException.class,
                () -> flights.findPage(Query.of(partition("JFK")).columns("carrier", "flight", "sched_dep_time",
                        "time_hour").pageSize(2), tok));
        assertEquals("bad_page_token", e.code());
        e = assertThrows(BadRequestException.class, () -> flights.findPage(Query.of(PARTITION).pageSize(3), tok));
        assertEquals("bad_page_token", e.code());

        // a range on a clustering column, and a limit
        int n = 0;
        for (Map<String, Object> row : flights.find(Query.of(PARTITION).gte("carrier", "UA").limit(3).pageSize(2))) {
            assertTrue(((String) row.get("carrier")).compareTo("UA") >= 0);
            n++;
        }
        assertTrue(n <= 3 && n > 0);
    }

    @Test
    @Order(11)
    void anIndexServesAFilterOnAnotherColumn() {
        Table flights = client.table("flights");
        String name = flights.createIndex("dest");
        try {
            untilIndexServes(() -> flights.count(Map.of("dest", "IAH")));
            assertTrue(flights.info().indexes().stream().anyMatch(i -> i.name().equals(name) && i.column()
                    .equals("dest")));
            long iah = 0;
            for (Map<String, Object> row : flights.find(Query.where("dest", "IAH").columns("dest").pageSize(50))) {
                assertEquals("IAH", row.get("dest"));
                iah++;
            }
            assertTrue(iah > 0);
            assertEquals(iah, flights.count(Map.of("dest", "IAH")));
        } finally {
            flights.dropIndex(name);
        }
        assertEquals("needs_index", assertThrows(BadRequestException.class,
                () -> flights.count(Map.of("dest", "IAH"))).code());
    }

    /**
     * Server bug (reported): while a new index is being built Cassandra fails reads with INDEX_NOT_AVAILABLE, which
     * the query API answers as 500 internal_error instead of 503 + Retry-After (which the client would wait out by
     * itself). Until it is fixed, wait here for the index to serve the filter.
     */
    private static void untilIndexServes(Runnable query) {
        long deadline = System.nanoTime() + Duration.ofSeconds(60).toNanos();
        while (true) {
            try {
                query.run();
                return;
            } catch (UnavailableException e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Http.sleep(Duration.ofMillis(500));
            }
        }
    }

    // --- writes -------------------------------------------------------------------------------------------

    @Test
    @Order(20)
    void insertManyWithTtlThenReadTheTtlAndDelete() {
        Table flights = client.table("flights");
        Map<String, Object> part = partition("ZZJ");
        part.put("year", 2099);
        List<Map<String, Object>> rows = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            Map<String, Object> r = new LinkedHashMap<>(part);
            r.put("carrier", "JV");
            r.put("flight", 1000 + i);
            r.put("sched_dep_time", 600);
            r.put("dest", "SFO");
            r.put("time_hour", "2099-01-01T11:00:00Z");
            rows.add(r);
        }
        rows.get(2).put("_ttl", 120); // a row's own TTL
        assertEquals(3, flights.insertMany(rows, 3600));
        assertEquals(3, flights.count(part));

        Map<String, Object> key = new LinkedHashMap<>(part);
        key.put("carrier", "JV");
        key.put("flight", 1000);
        key.put("sched_dep_time", 600);
        Map<String, Integer> ttl = flights.ttl(key);
        assertTrue(ttl.get("dest") > 3500 && ttl.get("dest") <= 3600, ttl::toString);
        key.put("flight", 1002);
        assertTrue(flights.ttl(key).get("dest") <= 120, () -> flights.ttl(key).toString());

        Map<String, Object> row = new LinkedHashMap<>(key);
        row.put("flight", 1003);
        row.put("dest", "LAX");
        flights.insertOne(row); // no TTL
        key.put("flight", 1003);
        assertNull(flights.ttl(key).get("dest"));
        assertEquals(List.of(0), flights.insertIfNotExists(List.of(row, rowWith(row, "flight", 1004)), null));

        assertEquals(1, flights.delete(key));
        assertEquals(4, flights.count(part));
        assertEquals("no_such_row", assertThrows(NotFoundException.class, () -> flights.ttl(key)).code());
        flights.delete(part); // the whole partition
        assertEquals(0, flights.count(part));
    }

    private static Map<String, Object> rowWith(Map<String, Object> row, String col, Object value) {
        Map<String, Object> r = new LinkedHashMap<>(row);
        r.put(col, value);
        return r;
    }

    // --- exports ------------------------------------------------------------------------------------------

    @Test
    @Order(30)
    void exportsCountEveryRowAndResumeAfterABreak() {
        Table flights = client.table("flights");
        long count = total(flights);

        ByteArrayOutputStream nd = new ByteArrayOutputStream();
        assertEquals(count, flights.export(Format.NDJSON, nd));
        String[] lines = nd.toString(StandardCharsets.UTF_8).split("\n");
        assertEquals(count, lines.length);
        assertTrue(lines[0].startsWith("{\"origin\""), lines[0]);
        assertFalse(nd.toString(StandardCharsets.UTF_8).contains("\"_end\""), "marks are not written out");

        ByteArrayOutputStream csvOut = new ByteArrayOutputStream();
        assertEquals(count, flights.export(Format.CSV, List.of("origin", "carrier", "flight"), csvOut));
        String[] csvLines = csvOut.toString(StandardCharsets.UTF_8).split("\n");
        assertEquals("origin,carrier,flight", csvLines[0]);
        assertEquals(count + 1, csvLines.length);

        List<Map<String, Object>> seen = new ArrayList<>();
        assertEquals(count, flights.export(seen::add));
        assertEquals(count, seen.size());

        // the connection breaks after 100 rows (before any resume mark): it goes on, nothing twice, nothing missing
        for (Format f : Format.values()) {
            ByteArrayOutputStream whole = new ByteArrayOutputStream();
            ByteArrayOutputStream broken = new ByteArrayOutputStream();
            assertEquals(count, flights.export(f, null, whole));
            assertEquals(count, flights.export(f, null, broken, 100));
            assertArrayEquals(whole.toByteArray(), broken.toByteArray(), f + ": the resumed export differs");
        }
    }

    @Test
    @Order(31)
    void aBrokenExportResumesFromTheServersLastMark() {
        // the server marks every 10000 rows or so: make the table larger than that (rows that expire anyway)
        Table flights = client.table("flights");
        List<Map<String, Object>> rows = new ArrayList<>();
        List<Map<String, Object>> partitions = new ArrayList<>();
        for (int p = 0; p < 35; p++) {
            Map<String, Object> part = partition("X" + (char) ('A' + p / 26) + (char) ('A' + p % 26));
            part.put("year", 2098);
            partitions.add(part);
            for (int i = 0; i < 300; i++) {
                Map<String, Object> r = new LinkedHashMap<>(part);
                r.put("carrier", "JV");
                r.put("flight", i);
                r.put("sched_dep_time", 700);
                r.put("dest", "B" + i);
                rows.add(r);
            }
        }
        try {
            assertEquals(rows.size(), flights.insertMany(rows, 3600));
            long count = total(flights);
            assertTrue(count > 10_500, "rows: " + count);
            for (Format f : Format.values()) {
                ByteArrayOutputStream whole = new ByteArrayOutputStream();
                ByteArrayOutputStream broken = new ByteArrayOutputStream();
                assertEquals(count, flights.export(f, null, whole));
                Exporter ex = new Exporter(client, flights, f, null);
                assertEquals(count, ex.toStream(broken, (int) count - 300));
                assertNotNull(ex.resumeToken(), "the export was resumed from a mark");
                assertArrayEquals(whole.toByteArray(), broken.toByteArray(), f + ": the resumed export differs");
            }
        } finally {
            flights.deleteMany(partitions);
        }
    }

    // --- objects ------------------------------------------------------------------------------------------

    @Test
    @Order(40)
    void objectsPutGetRangeHeadListDelete() throws IOException {
        byte[] data = new byte[3 << 20];
        new Random(7).nextBytes(data);
        String key = "jsdk/videos/clip-" + System.nanoTime() + ".bin";
        ObjectInfo put = client.putObject(key, data, "video/mp4", null);
        assertEquals(data.length, put.size());
        assertEquals(Digests.sha256(data), put.sha256());
        assertNull(put.expires());

        try (InputStream in = client.getObject(key)) {
            assertArrayEquals(data, in.readAllBytes());
        }
        try (InputStream in = client.getObject(key, 1_000_000, 2_500_000)) {
            assertArrayEquals(Arrays.copyOfRange(data, 1_000_000, 2_500_001), in.readAllBytes());
        }
        try (InputStream in = client.getObject(key, data.length - 10, -1)) {
            assertArrayEquals(Arrays.copyOfRange(data, data.length - 10, data.length), in.readAllBytes());
        }
        assertEquals("range_not_satisfiable", assertThrows(BadRequestException.class,
                () -> client.getObject(key, data.length, data.length + 5)).code());

        ObjectInfo head = client.headObject(key);
        assertEquals(data.length, head.size());
        assertEquals(put.sha256(), head.sha256());
        assertEquals("video/mp4", head.contentType());

        // a streamed body with a wrong checksum is refused, and a file's checksum is computed
        assertEquals("checksum_mismatch", assertThrows(BadRequestException.class,
                () -> client.putObject(key + ".bad", new java.io.ByteArrayInputStream(data), data.length, null, null,
                        "0".repeat(64))).code());
        Path small = tmp.resolve("small.txt");
        Files.writeString(small, "hello objects\n");
        ObjectInfo fromFile = client.putObject("jsdk/notes/a.txt", small, "text/plain", 3600);
        assertNotNull(fromFile.expires());
        client.putObject("jsdk/notes/b.txt", "b".getBytes(StandardCharsets.UTF_8), "text/plain", null);
        client.putObject("jsdk/notes/c.txt", new java.io.ByteArrayInputStream(new byte[] {'c'}), 1, "text/plain",
                null);

        List<String> keys = new ArrayList<>();
        for (ObjectInfo o : client.listObjects("jsdk/notes/", 1)) {
            keys.add(o.key());
        }
        assertEquals(List.of("jsdk/notes/a.txt", "jsdk/notes/b.txt", "jsdk/notes/c.txt"), keys);
        assertTrue(client.listObjectsPage("jsdk/notes/", 2, null).nextPageToken() != null);
        List<String> all = new ArrayList<>();
        client.listObjects("jsdk/").forEach(o -> all.add(o.key()));
        assertTrue(all.contains(key), all::toString);

        client.deleteObject(key);
        for (String k : keys) {
            client.deleteObject(k);
        }
        assertEquals("no_such_object", assertThrows(NotFoundException.class, () -> client.headObject(key)).code());
        assertEquals("no_such_object", assertThrows(NotFoundException.class, () -> client.getObject(key)).code());
        assertFalse(client.listObjects("jsdk/").iterator().hasNext());
    }

    // --- errors -------------------------------------------------------------------------------------------

    @Test
    @Order(50)
    void errorsCarryTheServersCode() {
        NotFoundException nf = assertThrows(NotFoundException.class, () -> client.table("no_such").info());
        assertEquals("no_such_table", nf.code());
        assertEquals(404, nf.status());

        BadRequestException ni = assertThrows(BadRequestException.class,
                () -> client.table("flights").findPage(Query.where("dest", "IAH"), null));
        assertEquals("needs_index", ni.code());
        assertNotNull(ni.hint());

        Map<String, Object> bad = new LinkedHashMap<>(PARTITION);
        bad.put("year", "abc");
        assertEquals("bad_value", assertThrows(BadRequestException.class,
                () -> client.table("flights").count(bad)).code());

        MysimbdpClient wrong = MysimbdpClient.builder().user(client.user()).password("not-the-password").build();
        AuthenticationException ae = assertThrows(AuthenticationException.class, () -> wrong.table("flights").info());
        assertEquals(401, ae.status());

        MysimbdpClient nowhere = MysimbdpClient.builder().user("x").password("y").queryUrl("http://127.0.0.1:9")
                .connectTimeout(Duration.ofSeconds(2)).build();
        assertThrows(TransportException.class, () -> nowhere.tables());
    }

    // --- the README ---------------------------------------------------------------------------------------

    @Test
    @Order(60)
    void theReadmeExampleRuns() throws IOException {
        Path out = tmp.resolve("export.csv");
        long rows = ReadmeExample.example(csv, out);
        assertEquals(total(client.table("flights")), rows);
        assertEquals(rows + 1, Files.readAllLines(out).size());
    }

    /** Every row of a table, as the API counts them: an export's end line (a count needs a filter). */
    private static long total(Table table) {
        return table.export(Format.CSV, java.io.OutputStream.nullOutputStream());
    }
}
