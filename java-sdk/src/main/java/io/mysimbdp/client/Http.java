package io.mysimbdp.client;

import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.databind.ser.std.ToStringSerializer;
import java.io.IOException;
import java.io.InputStream;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZonedDateTime;
import java.util.Base64;
import java.util.Map;
import java.util.Set;
import java.util.function.Supplier;

/** The HTTP layer shared by every call: authentication, JSON, error answers as exceptions, polite retries. */
final class Http {
    static final ObjectMapper JSON = makeMapper();
    static final TypeReference<Map<String, Object>> MAP = new TypeReference<>() {};
    /** "Not now" answers (429) that mean the request was not handled: it is safe to ask again. */
    private static final Set<String> BUSY = Set.of("login_busy", "too_many_requests", "too_many_connections");

    final HttpClient client;
    final String authorization;
    final Duration requestTimeout;
    final Duration transferTimeout;
    final Duration patience;

    Http(HttpClient client, String user, String password, Duration requestTimeout, Duration transferTimeout,
            Duration patience) {
        this.client = client;
        this.authorization = "Basic " + Base64.getEncoder()
                .encodeToString((user + ":" + password).getBytes(StandardCharsets.UTF_8));
        this.requestTimeout = requestTimeout;
        this.transferTimeout = transferTimeout;
        this.patience = patience;
    }

    private static ObjectMapper makeMapper() {
        SimpleModule times = new SimpleModule("mysimbdp-times");
        for (Class<?> c : new Class<?>[] {Instant.class, LocalDate.class, LocalDateTime.class, OffsetDateTime.class,
                ZonedDateTime.class}) {
            times.addSerializer(c, ToStringSerializer.instance); // ISO 8601, as the API takes them
        }
        return new ObjectMapper()
                .registerModule(times)
                .disable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);
    }

    HttpRequest.Builder request(URI uri, Duration timeout) {
        return HttpRequest.newBuilder(uri).timeout(timeout).header("Authorization", authorization);
    }

    static HttpRequest.BodyPublisher json(Object body) {
        try {
            return HttpRequest.BodyPublishers.ofByteArray(JSON.writeValueAsBytes(body));
        } catch (IOException e) {
            throw new IllegalArgumentException("the request cannot be written as JSON: " + e.getMessage(), e);
        }
    }

    /**
     * Send a request that can be built again (its body is not a one-off stream), asking again while the server
     * answers "not now" (busy logins, too many requests; 503 too when {@code idempotent}) until the patience is
     * spent. Any other answer of 400 or more becomes an exception.
     */
    HttpResponse<byte[]> send(Supplier<HttpRequest> make, boolean idempotent, String what) {
        long deadline = System.nanoTime() + patience.toNanos();
        int broken = 0;
        while (true) {
            HttpRequest req = make.get();
            HttpResponse<byte[]> resp;
            try {
                resp = client.send(req, HttpResponse.BodyHandlers.ofByteArray());
            } catch (ConnectException e) { // nothing was sent
                if (++broken > 2 || System.nanoTime() > deadline) {
                    throw transport(what, req.uri(), e);
                }
                sleep(Duration.ofMillis(500L * broken));
                continue;
            } catch (IOException e) {
                if (!idempotent || ++broken > 2 || System.nanoTime() > deadline) {
                    throw transport(what, req.uri(), e);
                }
                sleep(Duration.ofMillis(500L * broken));
                continue;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new TransportException(what + ": interrupted", e);
            }
            int status = resp.statusCode();
            if (status >= 400) {
                MysimbdpException err = error(status, resp.headers(), resp.body(), what);
                boolean again = (status == 429 && BUSY.contains(err.code())) || (status == 503 && idempotent);
                long left = deadline - System.nanoTime();
                if (again && left > 0) {
                    Integer after = retryAfter(resp.headers());
                    long waitMs = Math.min(Math.min(after == null ? 1000L : after * 1000L, 10_000L), left / 1_000_000L);
                    sleep(Duration.ofMillis(Math.max(100L, waitMs)));
                    continue;
                }
                throw err;
            }
            return resp;
        }
    }

    /** Send once, with any body handler (a stream, say); the status is NOT checked. */
    <T> HttpResponse<T> sendOnce(HttpRequest req, HttpResponse.BodyHandler<T> handler, String what) {
        try {
            return client.send(req, handler);
        } catch (IOException e) {
            throw transport(what, req.uri(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new TransportException(what + ": interrupted", e);
        }
    }

    /** Check a streamed answer: an error answer's body is read (it is small) and thrown. */
    static HttpResponse<InputStream> check(HttpResponse<InputStream> resp, String what) {
        if (resp.statusCode() < 400) {
            return resp;
        }
        byte[] body;
        try (InputStream in = resp.body()) {
            body = in.readNBytes(64 * 1024);
        } catch (IOException e) {
            body = new byte[0];
        }
        throw error(resp.statusCode(), resp.headers(), body, what);
    }

    static TransportException transport(String what, URI uri, IOException e) {
        String why = e instanceof HttpTimeoutException ? "no answer in time" : e.getClass().getSimpleName()
                + (e.getMessage() == null ? "" : ": " + e.getMessage());
        return new TransportException(what + ": " + uri.getScheme() + "://" + uri.getAuthority() + " - " + why, e);
    }

    static Integer retryAfter(HttpHeaders headers) {
        String v = headers.firstValue("Retry-After").orElse("").trim();
        if (v.isEmpty() || v.length() > 9 || !v.chars().allMatch(Character::isDigit)) {
            return null;
        }
        return Integer.valueOf(v);
    }

    /** The exception for an error answer {@code {"error", "code", "hint"}}. */
    static MysimbdpException error(int status, HttpHeaders headers, byte[] body, String what) {
        String message = null;
        String code = null;
        String hint = null;
        if (body != null && body.length > 0) {
            try {
                Map<String, Object> m = JSON.readValue(body, MAP);
                message = str(m.get("error"));
                code = str(m.get("code"));
                hint = str(m.get("hint"));
            } catch (IOException | RuntimeException e) {
                // not the API's JSON (a proxy's page, say): keep the status
            }
        }
        if (code == null || code.isEmpty()) {
            code = "http_" + status;
        }
        if (message == null || message.isEmpty()) {
            message = "the server answered " + status;
        }
        String full = what + ": " + message;
        Integer after = retryAfter(headers);
        if (status == 401 || (status == 429 && ("too_many_attempts".equals(code) || "login_busy".equals(code)))) {
            return new AuthenticationException(full, status, code, hint, after);
        }
        if (status == 404) {
            return new NotFoundException(full, status, code, hint);
        }
        if (status >= 400 && status < 500) {
            return new BadRequestException(full, status, code, hint);
        }
        return new UnavailableException(full, status, code, hint, after);
    }

    static Map<String, Object> parse(byte[] body, String what) {
        try {
            return JSON.readValue(body, MAP);
        } catch (IOException e) {
            throw new TransportException(what + ": the answer is not JSON", e);
        }
    }

    /** The {@code data} member of a query API answer. */
    @SuppressWarnings("unchecked")
    static Map<String, Object> data(byte[] body, String what) {
        Object d = parse(body, what).get("data");
        if (!(d instanceof Map)) {
            throw new TransportException(what + ": the answer has no data", null);
        }
        return (Map<String, Object>) d;
    }

    static String str(Object o) {
        return o == null ? null : o.toString();
    }

    static void sleep(Duration d) {
        try {
            Thread.sleep(Math.max(0L, d.toMillis()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new TransportException("interrupted", e);
        }
    }

    /** A path segment, percent-encoded (only unreserved characters stay; with {@code keepSlash}, '/' too). */
    static String seg(String s, boolean keepSlash) {
        StringBuilder sb = new StringBuilder();
        for (byte b : s.getBytes(StandardCharsets.UTF_8)) {
            char c = (char) (b & 0xff);
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.'
                    || c == '_' || c == '~' || (keepSlash && c == '/')) {
                sb.append(c);
            } else {
                sb.append('%').append(String.format("%02X", b & 0xff));
            }
        }
        return sb.toString();
    }

    /** A query-string value, percent-encoded. */
    static String q(String s) {
        return seg(s, false);
    }
}
