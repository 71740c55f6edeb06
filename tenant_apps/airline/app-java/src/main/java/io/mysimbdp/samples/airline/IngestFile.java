package io.mysimbdp.samples.airline;

import com.datastax.oss.driver.api.core.AllNodesFailedException;
import com.datastax.oss.driver.api.core.CqlSession;
import com.datastax.oss.driver.api.core.DriverTimeoutException;
import com.datastax.oss.driver.api.core.NoNodeAvailableException;
import com.datastax.oss.driver.api.core.config.DefaultDriverOption;
import com.datastax.oss.driver.api.core.config.DriverConfigLoader;
import com.datastax.oss.driver.api.core.cql.BoundStatement;
import com.datastax.oss.driver.api.core.cql.PreparedStatement;
import com.datastax.oss.driver.api.core.servererrors.QueryConsistencyException;
import com.datastax.oss.driver.api.core.servererrors.OverloadedException;
import com.datastax.oss.driver.api.core.servererrors.UnavailableException;
import com.datastax.oss.driver.internal.core.loadbalancing.DcInferringLoadBalancingPolicy;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.Writer;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * The airline tenant's batch app in Java (runtime "jvm"): one staged CSV file of flights into the tenant's
 * {@code flights} table, as tenant_apps/README.md says a batch app does. It reads what the platform gives it
 * from the environment, writes the rows with a prepared statement (many in flight at once, each retried while
 * Cassandra is busy), keeps the records it refuses in {@code rejects.csv}, writes {@code result.json} last, and
 * exits 0 when done (rejected rows included), 75 when Cassandra is unavailable (the platform retries the job
 * later), 1 when the file cannot be ingested.
 */
public final class IngestFile {
    static final int EXIT_OK = 0;
    static final int EXIT_FAILED = 1;
    static final int EXIT_TEMPORARY = 75;
    static final int IN_FLIGHT = 64; // writes under way at once
    // how long Cassandra may stay away (-Dretry.seconds=N: the platform passes none; a test does)
    static final Duration RETRY_FOR = Duration.ofSeconds(Long.getLong("retry.seconds", 60));
    static final int MAX_REJECTS_KEPT = 100_000; // rows written to rejects.csv (the count is always complete)

    /** Cassandra stayed unavailable: the platform should retry the job later. */
    static final class Temporary extends Exception {
        private static final long serialVersionUID = 1L;

        Temporary(String why, Throwable cause) {
            super(why, cause);
        }
    }

    public static void main(String[] args) {
        System.exit(run());
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null || v.isEmpty()) {
            throw new IllegalStateException("the platform did not set " + name);
        }
        return v;
    }

    static int run() {
        long t0 = System.nanoTime();
        String keyspace = env("MYSIMBDP_KEYSPACE");
        Path input = Path.of(env("MYSIMBDP_INPUT_FILE"));
        Path output = Path.of(env("MYSIMBDP_OUTPUT_DIR"));
        String fileName = System.getenv().getOrDefault("MYSIMBDP_FILE_NAME", input.getFileName().toString());
        try (CqlSession session = connect(keyspace)) {
            execute(session, Flights.createCql(keyspace));
            long[] counts = ingest(session, keyspace, input, output);
            double seconds = (System.nanoTime() - t0) / 1e9;
            writeResult(output, String.format(Locale.ROOT,
                    "{\"rows_ingested\": %d, \"rows_rejected\": %d, \"seconds\": %.3f, \"table\": \"%s\"}",
                    counts[0], counts[1], seconds, Flights.TABLE));
            System.out.printf(Locale.ROOT, "%s: ingested %d rows into %s.%s, rejected %d, in %.2fs%n",
                    fileName, counts[0], keyspace, Flights.TABLE, counts[1], seconds);
            return EXIT_OK;
        } catch (Temporary e) {
            System.err.println("Cassandra unavailable, the platform will retry: " + oneLine(e));
            return EXIT_TEMPORARY;
        } catch (Flights.Rejected e) {
            return fail(output, fileName, "the file cannot be ingested: ", e.getMessage());
        } catch (Exception e) {
            return fail(output, fileName, "the ingestion stopped: ", oneLine(e));
        }
    }

    static int fail(Path output, String fileName, String what, String why) {
        try {
            writeResult(output, "{\"rows_ingested\": 0, \"rows_rejected\": 0, \"error\": " + json(why) + "}");
        } catch (IOException e) {
            System.err.println("could not write result.json: " + oneLine(e));
        }
        System.err.println(fileName + ": " + what + why);
        return EXIT_FAILED;
    }

    /** A session on the tenant's keyspace, trying again while Cassandra does not answer (RETRY_FOR). */
    static CqlSession connect(String keyspace) throws Temporary, InterruptedException {
        List<InetSocketAddress> points = new ArrayList<>();
        int port = Integer.parseInt(env("MYSIMBDP_CASSANDRA_PORT"));
        for (String host : env("MYSIMBDP_CASSANDRA_HOSTS").split(",")) {
            points.add(InetSocketAddress.createUnresolved(host.strip(), port));
        }
        DriverConfigLoader config = DriverConfigLoader.programmaticBuilder()
                .withClass(DefaultDriverOption.LOAD_BALANCING_POLICY_CLASS, DcInferringLoadBalancingPolicy.class)
                .withDuration(DefaultDriverOption.REQUEST_TIMEOUT, Duration.ofSeconds(20))
                .withDuration(DefaultDriverOption.CONNECTION_CONNECT_TIMEOUT, Duration.ofSeconds(10))
                .withDuration(DefaultDriverOption.CONNECTION_INIT_QUERY_TIMEOUT, Duration.ofSeconds(10))
                .withInt(DefaultDriverOption.CONNECTION_POOL_LOCAL_SIZE, 1)
                .build();
        long deadline = System.nanoTime() + RETRY_FOR.toNanos();
        for (long pause = 500; ; pause = Math.min(pause * 2, 5000)) {
            try {
                return CqlSession.builder()
                        .addContactPoints(points)
                        .withAuthCredentials(env("MYSIMBDP_CASSANDRA_USERNAME"), env("MYSIMBDP_CASSANDRA_PASSWORD"))
                        .withKeyspace(keyspace)
                        .withConfigLoader(config)
                        .build();
            } catch (AllNodesFailedException | DriverTimeoutException e) {
                if (isAuthentication(e) || System.nanoTime() > deadline) {
                    if (isAuthentication(e)) {
                        throw e;
                    }
                    throw new Temporary(oneLine(e), e);
                }
                Thread.sleep(pause);
            }
        }
    }

    static boolean isAuthentication(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof com.datastax.oss.driver.api.core.auth.AuthenticationException) {
                return true;
            }
            if (t instanceof AllNodesFailedException all) {
                for (List<Throwable> errors : all.getAllErrors().values()) {
                    for (Throwable x : errors) {
                        if (isAuthentication(x)) {
                            return true;
                        }
                    }
                }
            }
        }
        return false;
    }

    static boolean retryable(Throwable e) {
        return e instanceof AllNodesFailedException || e instanceof DriverTimeoutException
                || e instanceof QueryConsistencyException || e instanceof UnavailableException
                || e instanceof OverloadedException || e instanceof NoNodeAvailableException;
    }

    static void execute(CqlSession session, String cql) throws Temporary, InterruptedException {
        long deadline = System.nanoTime() + RETRY_FOR.toNanos();
        for (long pause = 500; ; pause = Math.min(pause * 2, 5000)) {
            try {
                session.execute(cql);
                return;
            } catch (RuntimeException e) {
                if (!retryable(e)) {
                    throw e;
                }
                if (System.nanoTime() > deadline) {
                    throw new Temporary(oneLine(e), e);
                }
                Thread.sleep(pause);
            }
        }
    }

    /** Every record of the file into the table; {rows written, rows rejected}. */
    static long[] ingest(CqlSession session, String keyspace, Path input, Path output)
            throws IOException, Flights.Rejected, Temporary, InterruptedException {
        PreparedStatement insert = session.prepare(Flights.insertCql(keyspace));
        Semaphore slots = new Semaphore(IN_FLIGHT);
        AtomicLong written = new AtomicLong();
        AtomicReference<Throwable> failed = new AtomicReference<>();
        long rejected = 0;
        char delimiter = input.toString().toLowerCase(Locale.ROOT).endsWith(".tsv") ? '\t' : ',';
        try (InputStream raw = Files.newInputStream(input);
                BufferedReader reader = new BufferedReader(new InputStreamReader(skipBom(raw), StandardCharsets.UTF_8),
                        1 << 16);
                Writer rejects = Files.newBufferedWriter(output.resolve("rejects.csv"), StandardCharsets.UTF_8)) {
            CsvRecords records = new CsvRecords(reader, delimiter);
            CsvRecords.Record header = records.next();
            if (header == null) {
                throw new Flights.Rejected("the file is empty");
            }
            Flights flights = new Flights(header.fields());
            writeCsv(rejects, concat(List.of("line", "reason"), header.fields()));
            long previous = header.line();
            for (CsvRecords.Record r = records.next(); r != null; r = records.next()) {
                if (failed.get() != null) {
                    break;
                }
                if (r.fields().size() == 1 && r.fields().get(0).isEmpty()) {
                    previous = r.line();
                    continue; // a blank line is no record (as for the csv module)
                }
                Object[] values;
                try {
                    values = flights.convert(r.fields());
                } catch (Flights.Rejected e) {
                    rejected++;
                    if (rejected <= MAX_REJECTS_KEPT) {
                        String why = e.getMessage();
                        if (r.line() - previous > 1) {
                            why += " (this record runs over lines " + (previous + 1) + " to " + r.line()
                                    + ": is a quote left open?)";
                        }
                        writeCsv(rejects, concat(List.of(Long.toString(r.line()), why), r.fields()));
                    }
                    previous = r.line();
                    continue;
                }
                previous = r.line();
                slots.acquire();
                write(session, insert.bind(values), System.nanoTime() + RETRY_FOR.toNanos(), 500)
                        .whenComplete((ok, error) -> {
                            if (error != null) {
                                failed.compareAndSet(null, unwrap(error));
                            } else {
                                written.incrementAndGet();
                            }
                            slots.release();
                        });
            }
        }
        slots.acquire(IN_FLIGHT); // every write answered
        Throwable error = failed.get();
        if (error != null) {
            if (retryable(error)) {
                throw new Temporary(oneLine(error), error);
            }
            throw new IllegalStateException(oneLine(error), error);
        }
        return new long[] {written.get(), rejected};
    }

    /** One write, tried again with back-off while Cassandra is busy or away, until {@code deadline}. */
    static CompletableFuture<Void> write(CqlSession session, BoundStatement row, long deadline, long pause) {
        return session.executeAsync(row).toCompletableFuture().handle((rs, error) -> {
            if (error == null) {
                return CompletableFuture.<Void>completedFuture(null);
            }
            Throwable cause = unwrap(error);
            if (!retryable(cause) || System.nanoTime() > deadline) {
                return CompletableFuture.<Void>failedFuture(cause);
            }
            return CompletableFuture.runAsync(() -> { },
                    CompletableFuture.delayedExecutor(pause, java.util.concurrent.TimeUnit.MILLISECONDS))
                    .thenCompose(x -> write(session, row, deadline, Math.min(pause * 2, 5000)));
        }).thenCompose(f -> f);
    }

    static Throwable unwrap(Throwable e) {
        return e instanceof CompletionException && e.getCause() != null ? e.getCause() : e;
    }

    static InputStream skipBom(InputStream in) throws IOException {
        java.io.PushbackInputStream p = new java.io.PushbackInputStream(in, 3);
        byte[] head = p.readNBytes(3);
        if (!(head.length == 3 && (head[0] & 0xFF) == 0xEF && (head[1] & 0xFF) == 0xBB && (head[2] & 0xFF) == 0xBF)) {
            p.unread(head);
        }
        return p;
    }

    static List<String> concat(List<String> a, List<String> b) {
        List<String> out = new ArrayList<>(a);
        out.addAll(b);
        return out;
    }

    static void writeCsv(Writer w, List<String> fields) throws IOException {
        for (int i = 0; i < fields.size(); i++) {
            String f = fields.get(i);
            if (i > 0) {
                w.write(',');
            }
            if (f.indexOf(',') >= 0 || f.indexOf('"') >= 0 || f.indexOf('\n') >= 0 || f.indexOf('\r') >= 0) {
                w.write('"');
                w.write(f.replace("\"", "\"\""));
                w.write('"');
            } else {
                w.write(f);
            }
        }
        w.write("\r\n");
    }

    /** result.json, written last and whole: into a temporary name first, then renamed. */
    static void writeResult(Path output, String json) throws IOException {
        Path tmp = output.resolve(".result.json.tmp");
        try (BufferedWriter w = Files.newBufferedWriter(tmp, StandardCharsets.UTF_8)) {
            w.write(json);
        }
        Files.move(tmp, output.resolve("result.json"), StandardCopyOption.ATOMIC_MOVE);
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }

    static String oneLine(Throwable e) {
        String m = e.getClass().getSimpleName() + ": " + e.getMessage();
        m = m.replace('\n', ' ').replace('\r', ' ');
        return m.length() > 500 ? m.substring(0, 500) : m;
    }
}
