package io.mysimbdp.client;

import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.channels.Channels;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A resumable upload of one file to the batch API.
 *
 * <p>Opening it ({@link MysimbdpClient#openUpload}) declares the file's name, size and SHA-256; the server
 * answers with the session and how many bytes it already has (an earlier, interrupted upload of the same
 * file by any client is resumed). {@link #finish()} sends the rest from the server's offset, asking the
 * server again for its offset whenever the connection breaks, and returns the receipt's id once the server
 * has checked the whole file's checksum. {@link #sendPart(long)} sends only some bytes (then stop, and
 * resume later, even from another process).
 */
public final class Upload {
    private static final int ATTEMPTS = 5; // broken connections in a row before giving up
    private static final Duration BUSY_PATIENCE = Duration.ofSeconds(120);

    private final Http http;
    private final URI base;
    private final Path file;
    private final String name;
    private final long size;
    private final String sha256;
    private final long modified;
    private String id;
    private long offset;
    private long resumedFrom;
    private UploadResult result;

    private Upload(Http http, URI base, Path file, String name, long size, String sha256, long modified) {
        this.http = http;
        this.base = base;
        this.file = file;
        this.name = name;
        this.size = size;
        this.sha256 = sha256;
        this.modified = modified;
    }

    static Upload open(Http http, URI base, Path file, String name) {
        long size;
        long modified;
        String sha;
        try {
            size = Files.size(file);
            modified = Files.getLastModifiedTime(file).toMillis();
            sha = Digests.sha256(file);
        } catch (IOException e) {
            throw new MysimbdpException("cannot read " + file + ": " + e.getMessage(), 0, "local_file", null, e);
        }
        Upload u = new Upload(http, base, file, name, size, sha, modified);
        u.reopen();
        u.resumedFrom = u.offset;
        return u;
    }

    /** POST /v1/uploads: open the session, or find the one this file already has. */
    private void reopen() {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("name", name);
        body.put("size", size);
        body.put("sha256", sha256);
        HttpResponse<byte[]> resp = http.send(() -> http.request(base.resolve("/v1/uploads"), http.requestTimeout)
                .header("Content-Type", "application/json").POST(Http.json(body)).build(), true,
                "opening the upload of " + name);
        Map<String, Object> m = Http.parse(resp.body(), "opening the upload of " + name);
        if ("duplicate".equals(m.get("status"))) {
            result = new UploadResult(Http.str(m.get("job_id")), "duplicate", resumedFrom);
            offset = size;
            return;
        }
        id = Http.str(m.get("upload_id"));
        offset = ((Number) m.get("offset")).longValue();
    }

    /** The upload session's id (null when the content was a duplicate from the start). */
    public String id() {
        return id;
    }

    /** The bytes the server has (as far as this client knows). */
    public long offset() {
        return offset;
    }

    /** The bytes the server had when this upload was opened (more than 0: an earlier upload is resumed). */
    public long resumedFrom() {
        return resumedFrom;
    }

    public long size() {
        return size;
    }

    public String sha256() {
        return sha256;
    }

    /** The result once the upload is complete (or a duplicate), else null. */
    public UploadResult result() {
        return result;
    }

    /** Asks the server how many bytes it has (HEAD /v1/uploads/id); null when the session is gone. */
    public Long serverOffset() {
        if (id == null) {
            return null;
        }
        try {
            HttpResponse<byte[]> r = http.send(() -> http.request(base.resolve("/v1/uploads/" + id),
                    http.requestTimeout).method("HEAD", HttpRequest.BodyPublishers.noBody()).build(), true,
                    "asking how much of " + name + " arrived");
            return Long.parseLong(r.headers().firstValue("Upload-Offset").orElseThrow());
        } catch (NotFoundException e) {
            return null;
        }
    }

    /**
     * Sends at most {@code maxBytes} more bytes from the current offset (one PATCH) and returns the new offset.
     * When the last byte is sent the upload completes and {@link #result()} is set.
     */
    public long sendPart(long maxBytes) {
        if (result != null) {
            return offset;
        }
        checkUnchanged();
        long len = Math.max(0L, Math.min(maxBytes, size - offset));
        final long from = offset;
        HttpRequest req = http.request(base.resolve("/v1/uploads/" + id), http.transferTimeout)
                .header("Upload-Offset", Long.toString(from))
                .header("Content-Type", "application/octet-stream")
                .method("PATCH", HttpRequest.BodyPublishers.fromPublisher(
                        HttpRequest.BodyPublishers.ofInputStream(() -> slice(from, len)), len))
                .build();
        HttpResponse<byte[]> resp = http.sendOnce(req, HttpResponse.BodyHandlers.ofByteArray(), "uploading " + name);
        if (resp.statusCode() >= 400) {
            throw Http.error(resp.statusCode(), resp.headers(), resp.body(), "uploading " + name);
        }
        Map<String, Object> m = Http.parse(resp.body(), "uploading " + name);
        Object status = m.get("status");
        if ("staged".equals(status)) {
            Map<?, ?> job = (Map<?, ?>) m.get("job");
            offset = size;
            result = new UploadResult(Http.str(job.get("job_id")), "staged", resumedFrom);
        } else if ("duplicate".equals(status)) {
            offset = size;
            result = new UploadResult(Http.str(m.get("job_id")), "duplicate", resumedFrom);
        } else {
            offset = ((Number) m.get("offset")).longValue();
        }
        return offset;
    }

    /** Sends the rest, resuming after broken connections, and returns how the upload ended. */
    public UploadResult finish() {
        int breaks = 0;
        boolean reopened = false;
        long busySince = -1;
        long busyAt = -1;
        long waitedUntil = System.nanoTime() + http.patience.toNanos();
        while (result == null) {
            try {
                sendPart(size - offset);
                breaks = 0;
                continue;
            } catch (TransportException e) {
                if (++breaks >= ATTEMPTS) {
                    throw e;
                }
                Http.sleep(Duration.ofMillis(500L << Math.min(breaks - 1, 4)));
            } catch (NotFoundException e) { // the session ended (expired, or completed by another client)
                if (reopened) {
                    throw e;
                }
                reopened = true;
                reopen();
                continue;
            } catch (AuthenticationException | UnavailableException e) {
                boolean busy = "login_busy".equals(e.code()) || e instanceof UnavailableException;
                if (!busy || System.nanoTime() > waitedUntil) {
                    throw e;
                }
                Http.sleep(Duration.ofSeconds(1));
            } catch (BadRequestException e) {
                switch (e.code()) {
                    case "offset_mismatch", "body_ended_early", "too_many_requests", "too_many_connections" -> { }
                    case "upload_busy" -> { // another client is sending this very file: wait while it gets on
                        Long known = serverOffset();
                        if (known == null || known != busyAt) {
                            busySince = System.nanoTime();
                            busyAt = known == null ? -1 : known;
                        } else if (System.nanoTime() - busySince > BUSY_PATIENCE.toNanos()) {
                            throw e;
                        }
                        Http.sleep(Duration.ofMillis(500));
                    }
                    default -> throw e;
                }
            }
            Long known = serverOffset(); // whatever went wrong: go on from what the server has
            if (known == null) {
                if (reopened) {
                    throw new MysimbdpException("the upload of " + name + " was ended on the server", 0,
                            "upload_ended", "upload the file again");
                }
                reopened = true;
                reopen();
            } else {
                offset = known;
            }
        }
        return result;
    }

    /** Abandons the upload (DELETE /v1/uploads/id): what arrived is thrown away. */
    public void abort() {
        if (id == null || result != null) {
            return;
        }
        http.send(() -> http.request(base.resolve("/v1/uploads/" + id), http.requestTimeout).DELETE().build(), true,
                "abandoning the upload of " + name);
    }

    private void checkUnchanged() {
        try {
            if (Files.size(file) != size || Files.getLastModifiedTime(file).toMillis() != modified) {
                throw new MysimbdpException(file + " changed while being uploaded", 0, "source_changed",
                        "upload it again once it is complete");
            }
        } catch (IOException e) {
            throw new MysimbdpException("cannot read " + file + ": " + e.getMessage(), 0, "local_file", null, e);
        }
    }

    private InputStream slice(long from, long len) {
        try {
            FileChannel ch = FileChannel.open(file, StandardOpenOption.READ);
            ch.position(from);
            return new Bounded(Channels.newInputStream(ch), len);
        } catch (IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }

    /** The first {@code left} bytes of a stream; closed as soon as they are read. */
    private static final class Bounded extends InputStream {
        private final InputStream in;
        private long left;

        Bounded(InputStream in, long left) {
            this.in = in;
            this.left = left;
        }

        @Override
        public int read() throws IOException {
            byte[] one = new byte[1];
            return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
        }

        @Override
        public int read(byte[] b, int off, int len) throws IOException {
            if (left <= 0) {
                in.close();
                return -1;
            }
            int n = in.read(b, off, (int) Math.min(len, left));
            if (n < 0) {
                in.close();
                throw new IOException("the file is shorter than declared");
            }
            left -= n;
            return n;
        }

        @Override
        public void close() throws IOException {
            in.close();
        }
    }
}
