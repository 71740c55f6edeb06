package io.mysimbdp.client;

import java.io.ByteArrayInputStream;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Objects;

/**
 * The client of a mysimbdp platform, for one tenant: uploads and receipts (batch API), tables and objects
 * (query API). Thread-safe; make one and share it.
 *
 * <pre>{@code
 * MysimbdpClient client = MysimbdpClient.builder().user("airline").password(pw).build();
 * String jobId = client.upload(Path.of("flights.csv"));
 * client.waitForJob(jobId, Duration.ofMinutes(5));
 * for (Map<String, Object> row : client.table("flights").find(Query.where("origin", "EWR"))) { ... }
 * }</pre>
 *
 * <p>Every failure is a {@link MysimbdpException} (unchecked): {@link AuthenticationException},
 * {@link NotFoundException}, {@link BadRequestException}, {@link UnavailableException} or
 * {@link TransportException}, each with the HTTP status and the server's code.
 */
public final class MysimbdpClient {
    final Http http;
    private final URI batch;
    private final URI stream;
    private final URI queryBase;
    private final String user;
    private final String actingFor; // the operator acting for a tenant, or null

    private MysimbdpClient(Http http, URI batch, URI stream, URI query, String user, String actingFor) {
        this.http = http;
        this.batch = batch;
        this.stream = stream;
        this.queryBase = query;
        this.user = user;
        this.actingFor = actingFor;
    }

    public static Builder builder() {
        return new Builder();
    }

    /** How a client is made. Unset values come from the environment, then from the platform's defaults. */
    public static final class Builder {
        private String user = System.getenv("MYSIMBDP_USER");
        private String password = System.getenv("MYSIMBDP_PASSWORD");
        private String batchUrl = env("MYSIMBDP_BATCH_URL", "http://127.0.0.1:8801");
        private String streamUrl = env("MYSIMBDP_STREAM_URL", "http://127.0.0.1:8802");
        private String queryUrl = env("MYSIMBDP_QUERY_URL", "http://127.0.0.1:8803");
        private Duration connectTimeout = Duration.ofSeconds(10);
        private Duration requestTimeout = Duration.ofSeconds(90);
        private Duration transferTimeout = Duration.ofHours(2);
        private Duration patience = Duration.ofSeconds(30);

        private Builder() {}

        private static String env(String name, String dflt) {
            String v = System.getenv(name);
            return v == null || v.isBlank() ? dflt : v;
        }

        /** The tenant's name (or the operator's). Default: env MYSIMBDP_USER. */
        public Builder user(String user) {
            this.user = user;
            return this;
        }

        /** Default: env MYSIMBDP_PASSWORD. */
        public Builder password(String password) {
            this.password = password;
            return this;
        }

        /** The upload API. Default: env MYSIMBDP_BATCH_URL, else http://127.0.0.1:8801. */
        public Builder batchUrl(String url) {
            this.batchUrl = url;
            return this;
        }

        /** The stream API. Default: env MYSIMBDP_STREAM_URL, else http://127.0.0.1:8802. */
        public Builder streamUrl(String url) {
            this.streamUrl = url;
            return this;
        }

        /** The query API. Default: env MYSIMBDP_QUERY_URL, else http://127.0.0.1:8803. */
        public Builder queryUrl(String url) {
            this.queryUrl = url;
            return this;
        }

        /** How long to wait for a connection (default 10 s). */
        public Builder connectTimeout(Duration d) {
            this.connectTimeout = Objects.requireNonNull(d);
            return this;
        }

        /** How long to wait for the answer to a request without a large body (default 90 s). */
        public Builder requestTimeout(Duration d) {
            this.requestTimeout = Objects.requireNonNull(d);
            return this;
        }

        /** How long an upload request (a file's bytes, an object's) may take to be answered (default 2 h). */
        public Builder transferTimeout(Duration d) {
            this.transferTimeout = Objects.requireNonNull(d);
            return this;
        }

        /**
         * How long to keep asking again while the server answers "not now" (busy, 503) before the error is
         * thrown (default 30 s; {@link Duration#ZERO}: never ask again).
         */
        public Builder retryPatience(Duration d) {
            this.patience = Objects.requireNonNull(d);
            return this;
        }

        public MysimbdpClient build() {
            if (user == null || user.isEmpty() || password == null) {
                throw new IllegalArgumentException("a user and a password are needed (or env MYSIMBDP_USER and "
                        + "MYSIMBDP_PASSWORD)");
            }
            HttpClient hc = HttpClient.newBuilder()
                    .version(HttpClient.Version.HTTP_1_1)
                    .connectTimeout(connectTimeout)
                    .followRedirects(HttpClient.Redirect.NEVER)
                    .build();
            Http http = new Http(hc, user, password, requestTimeout, transferTimeout, patience);
            return new MysimbdpClient(http, base(batchUrl), base(streamUrl), base(queryUrl), user, null);
        }

        private static URI base(String url) {
            String u = Objects.requireNonNull(url, "url").trim();
            while (u.endsWith("/")) {
                u = u.substring(0, u.length() - 1);
            }
            URI uri = URI.create(u);
            if (uri.getScheme() == null || uri.getHost() == null) {
                throw new IllegalArgumentException("not an http(s) URL: " + url);
            }
            return uri;
        }
    }

    /** The same client, for an operator acting for {@code tenant} on the query API (/v1/tenants/t/...). */
    public MysimbdpClient actingFor(String tenant) {
        return new MysimbdpClient(http, batch, stream, queryBase, user, Objects.requireNonNull(tenant));
    }

    public String user() {
        return user;
    }

    public URI batchUrl() {
        return batch;
    }

    public URI streamUrl() {
        return stream;
    }

    public URI queryUrl() {
        return queryBase;
    }

    URI query(String pathAndQuery) {
        return URI.create(queryBase + pathAndQuery);
    }

    private URI batch(String pathAndQuery) {
        return URI.create(batch + pathAndQuery);
    }

    private String prefix() {
        return actingFor == null ? "/v1" : "/v1/tenants/" + Http.seg(actingFor, false);
    }

    String tablesPath() {
        return prefix() + "/tables";
    }

    // --- the batch API: uploads and receipts -------------------------------------------------------------

    /** Uploads a file (resuming an earlier interrupted upload of it) and returns the receipt's job id. */
    public String upload(Path file) {
        return uploadFile(file, file.getFileName().toString()).jobId();
    }

    /** Uploads a file under {@code name} and returns how it went (staged or duplicate, resumed from where). */
    public UploadResult uploadFile(Path file, String name) {
        return openUpload(file, name).finish();
    }

    /** Opens (or resumes) the upload of a file without sending it yet: send it with {@link Upload#finish()}. */
    public Upload openUpload(Path file) {
        return openUpload(file, file.getFileName().toString());
    }

    public Upload openUpload(Path file, String name) {
        return Upload.open(http, batch, file, name);
    }

    /** The tenant's constraints (GET /v1/constraints). */
    public Map<String, Object> constraints() {
        String what = "reading the constraints";
        return Http.parse(http.send(() -> http.request(batch("/v1/constraints"), http.requestTimeout).GET().build(),
                true, what).body(), what);
    }

    /** One receipt. */
    public Job job(String jobId) {
        String what = "reading job " + jobId;
        HttpResponse<byte[]> r = http.send(() -> http.request(batch("/v1/jobs/" + Http.seg(jobId, false)),
                http.requestTimeout).GET().build(), true, what);
        return new Job(Http.parse(r.body(), what));
    }

    /** The latest receipts (at most 100), newest first. */
    public List<Job> jobs() {
        return jobs(null, 100);
    }

    /** The latest receipts with this status (null: any), at most {@code limit} (1-1000), newest first. */
    public List<Job> jobs(String status, int limit) {
        String q = "/v1/jobs?limit=" + limit + (status == null ? "" : "&status=" + Http.q(status));
        String what = "listing jobs";
        Map<String, Object> m = Http.parse(http.send(() -> http.request(batch(q), http.requestTimeout).GET().build(),
                true, what).body(), what);
        List<Job> out = new ArrayList<>();
        for (Object o : (List<?>) m.getOrDefault("jobs", List.of())) {
            @SuppressWarnings("unchecked")
            Map<String, Object> j = (Map<String, Object>) o;
            out.add(new Job(j));
        }
        return out;
    }

    /**
     * Asks for the receipt until the job succeeded or failed, and returns it; throws a
     * {@link MysimbdpException} with code {@code job_timeout} when it is not over within {@code timeout}.
     */
    public Job waitForJob(String jobId, Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        long pause = 200;
        while (true) {
            Job j = job(jobId);
            if (j.isFinal()) {
                return j;
            }
            if (System.nanoTime() > deadline) {
                throw new MysimbdpException("job " + jobId + " is still " + j.status() + " after " + timeout, 0,
                        "job_timeout", "wait longer, or look at GET /v1/jobs/" + jobId);
            }
            Http.sleep(Duration.ofMillis(pause));
            pause = Math.min(pause * 2, 2000);
        }
    }

    // --- the query API: tables ---------------------------------------------------------------------------

    /** A table of the tenant (nothing is asked of the server until it is used). */
    public Table table(String name) {
        return new Table(this, Objects.requireNonNull(name));
    }

    /** The tenant's tables. */
    public List<TableInfo> tables() {
        String what = "listing tables";
        Map<String, Object> d = Http.data(http.send(() -> http.request(query(tablesPath()), http.requestTimeout).GET()
                .build(), true, what).body(), what);
        List<TableInfo> out = new ArrayList<>();
        for (Object o : (List<?>) d.getOrDefault("tables", List.of())) {
            @SuppressWarnings("unchecked")
            Map<String, Object> t = (Map<String, Object>) o;
            out.add(new TableInfo(t));
        }
        return out;
    }

    // --- the query API: objects --------------------------------------------------------------------------

    private URI object(String key, String queryString) {
        return query(prefix() + "/objects/" + Http.seg(key, true) + queryString);
    }

    /**
     * Stores {@code length} bytes of {@code in} under {@code key}, streamed (constant memory). {@code contentType}
     * null: application/octet-stream; {@code ttlSeconds} null: kept until deleted. The stream is not closed.
     */
    public ObjectInfo putObject(String key, InputStream in, long length, String contentType, Integer ttlSeconds) {
        return putObject(key, in, length, contentType, ttlSeconds, null);
    }

    /** As above, with the bytes' SHA-256 (hex): the server refuses them ({@code checksum_mismatch}) if it differs. */
    public ObjectInfo putObject(String key, InputStream in, long length, String contentType, Integer ttlSeconds,
            String sha256Hex) {
        String what = "storing object " + key;
        HttpRequest.Builder b = http.request(object(key, ttlSeconds == null ? "" : "?ttl=" + ttlSeconds),
                http.transferTimeout)
                .header("Content-Type", contentType == null ? "application/octet-stream" : contentType)
                .PUT(HttpRequest.BodyPublishers.fromPublisher(HttpRequest.BodyPublishers.ofInputStream(
                        () -> new FilterInputStream(in) {
                            @Override
                            public void close() {} // the caller's stream: left open
                        }), length));
        if (sha256Hex != null) {
            b.header("X-Checksum-Sha256", sha256Hex.toLowerCase(java.util.Locale.ROOT));
        }
        HttpResponse<byte[]> r = http.sendOnce(b.build(), HttpResponse.BodyHandlers.ofByteArray(), what);
        if (r.statusCode() >= 400) {
            throw Http.error(r.statusCode(), r.headers(), r.body(), what);
        }
        return ObjectInfo.of(Http.data(r.body(), what));
    }

    /** Stores a file under {@code key}; its SHA-256 is computed first and checked by the server. */
    public ObjectInfo putObject(String key, Path file, String contentType, Integer ttlSeconds) {
        try {
            String sha = Digests.sha256(file);
            try (InputStream in = Files.newInputStream(file)) {
                return putObject(key, in, Files.size(file), contentType, ttlSeconds, sha);
            }
        } catch (IOException e) {
            throw new MysimbdpException("cannot read " + file + ": " + e.getMessage(), 0, "local_file", null, e);
        }
    }

    /** Stores bytes under {@code key}, with their SHA-256. */
    public ObjectInfo putObject(String key, byte[] data, String contentType, Integer ttlSeconds) {
        return putObject(key, new ByteArrayInputStream(data), data.length, contentType, ttlSeconds,
                Digests.sha256(data));
    }

    /** The object's bytes, streamed: close the stream. A body cut short raises an IOException when read. */
    public InputStream getObject(String key) {
        return getRange(key, null);
    }

    /** Bytes {@code first} to {@code last} (inclusive; last &lt; 0: to the end) of the object (HTTP Range). */
    public InputStream getObject(String key, long first, long last) {
        if (first < 0 || (last >= 0 && last < first)) {
            throw new IllegalArgumentException("a range is 0 <= first <= last");
        }
        return getRange(key, "bytes=" + first + "-" + (last >= 0 ? Long.toString(last) : ""));
    }

    private InputStream getRange(String key, String range) {
        String what = "reading object " + key;
        HttpRequest.Builder b = http.request(object(key, ""), http.requestTimeout).GET();
        if (range != null) {
            b.header("Range", range);
        }
        HttpRequest req = b.build();
        HttpResponse<InputStream> r = http.sendOnce(req, HttpResponse.BodyHandlers.ofInputStream(), what);
        int status = r.statusCode();
        if (status == 503 || (status == 429)) { // not now: ask once more after the pause the server asked for
            Integer after = Http.retryAfter(r.headers());
            try {
                Http.check(r, what);
            } catch (MysimbdpException e) {
                if (http.patience.isZero()) {
                    throw e;
                }
                Http.sleep(Duration.ofSeconds(Math.min(after == null ? 1 : after, 10)));
                r = http.sendOnce(req, HttpResponse.BodyHandlers.ofInputStream(), what);
            }
        }
        Http.check(r, what);
        long length = r.headers().firstValueAsLong("Content-Length").orElse(-1L);
        return length < 0 ? r.body() : new Exact(r.body(), length);
    }

    /** The object's description, from the headers of a HEAD request. */
    public ObjectInfo headObject(String key) {
        String what = "describing object " + key;
        HttpResponse<byte[]> r;
        try {
            r = http.send(() -> http.request(object(key, ""), http.requestTimeout)
                    .method("HEAD", HttpRequest.BodyPublishers.noBody()).build(), true, what);
        } catch (NotFoundException e) { // a HEAD answer has no body, so no code: it can only be this
            throw new NotFoundException(what + ": no object '" + key + "'", 404,
                    e.code().startsWith("http_") ? "no_such_object" : e.code(), e.hint());
        }
        HttpHeaders h = r.headers();
        return new ObjectInfo(key, h.firstValueAsLong("Content-Length").orElse(-1L),
                h.firstValue("Content-Type").orElse(null), h.firstValue("X-Checksum-Sha256").orElse(null),
                h.firstValue("X-Created").orElse(null), h.firstValue("X-Expires").orElse(null));
    }

    /** Deletes the object. */
    public void deleteObject(String key) {
        http.send(() -> http.request(object(key, ""), http.requestTimeout).DELETE().build(), true,
                "deleting object " + key);
    }

    /** One page of the objects whose key starts with {@code prefix} (null or "": all), by key. */
    @SuppressWarnings("unchecked")
    public ObjectPage listObjectsPage(String prefix, Integer pageSize, String pageToken) {
        StringBuilder q = new StringBuilder(prefix() + "/objects?prefix=").append(Http.q(prefix == null ? "" : prefix));
        if (pageSize != null) {
            q.append("&page_size=").append(pageSize);
        }
        if (pageToken != null) {
            q.append("&page_token=").append(Http.q(pageToken));
        }
        String what = "listing objects";
        Map<String, Object> d = Http.data(http.send(() -> http.request(query(q.toString()), http.requestTimeout).GET()
                .build(), true, what).body(), what);
        List<ObjectInfo> out = new ArrayList<>();
        for (Object o : (List<Object>) d.getOrDefault("objects", List.of())) {
            out.add(ObjectInfo.of((Map<String, Object>) o));
        }
        return new ObjectPage(out, Http.str(d.get("next_page_token")));
    }

    /** Every object whose key starts with {@code prefix}, a page at a time as the iteration goes. */
    public Iterable<ObjectInfo> listObjects(String prefix) {
        return listObjects(prefix, null);
    }

    public Iterable<ObjectInfo> listObjects(String prefix, Integer pageSize) {
        return () -> new Iterator<>() {
            private Iterator<ObjectInfo> items = List.<ObjectInfo>of().iterator();
            private String token;
            private boolean started;

            @Override
            public boolean hasNext() {
                while (!items.hasNext()) {
                    if (started && token == null) {
                        return false;
                    }
                    ObjectPage p = listObjectsPage(prefix, pageSize, token);
                    started = true;
                    token = p.nextPageToken();
                    items = p.objects().iterator();
                }
                return true;
            }

            @Override
            public ObjectInfo next() {
                if (!hasNext()) {
                    throw new NoSuchElementException();
                }
                return items.next();
            }
        };
    }

    /** A body that must be exactly {@code length} bytes: one cut short is an error, never a short file. */
    private static final class Exact extends FilterInputStream {
        private long left;

        Exact(InputStream in, long length) {
            super(in);
            this.left = length;
        }

        @Override
        public int read() throws IOException {
            int b = super.read();
            if (b < 0) {
                ended();
            } else {
                left--;
            }
            return b;
        }

        @Override
        public int read(byte[] buf, int off, int len) throws IOException {
            int n = super.read(buf, off, len);
            if (n < 0) {
                ended();
            } else {
                left -= n;
            }
            return n;
        }

        @Override
        public long skip(long n) throws IOException {
            long k = super.skip(n);
            left -= k;
            return k;
        }

        private void ended() throws IOException {
            if (left > 0) {
                throw new IOException("the object's body ended " + left + " bytes early (the connection broke off)");
            }
        }
    }

    @Override
    public String toString() {
        return "MysimbdpClient(" + user + (actingFor == null ? "" : " for " + actingFor) + ", " + batch + ", "
                + queryBase + ")";
    }
}
