package io.mysimbdp.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;

import java.net.http.HttpHeaders;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Offline checks of the pieces that need no server: error answers to exceptions, queries to JSON. */
class ErrorMappingTest {
    private static HttpHeaders headers(Map<String, List<String>> h) {
        return HttpHeaders.of(h, (a, b) -> true);
    }

    private static byte[] body(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    @Test
    void errorAnswersBecomeTheirExceptions() {
        MysimbdpException e = Http.error(404, headers(Map.of()),
                body("{\"error\": \"no table 'x'\", \"code\": \"no_such_table\", \"hint\": \"GET /v1/tables\"}"), "q");
        assertInstanceOf(NotFoundException.class, e);
        assertEquals("no_such_table", e.code());
        assertEquals("GET /v1/tables", e.hint());
        assertEquals(404, e.status());

        e = Http.error(503, headers(Map.of("Retry-After", List.of("5"))),
                body("{\"error\": \"down\", \"code\": \"database_unavailable\"}"), "q");
        assertInstanceOf(UnavailableException.class, e);
        assertEquals(5, ((UnavailableException) e).retryAfter());

        e = Http.error(429, headers(Map.of("Retry-After", List.of("30"))),
                body("{\"error\": \"locked\", \"code\": \"too_many_attempts\"}"), "q");
        assertInstanceOf(AuthenticationException.class, e);
        assertEquals(30, ((AuthenticationException) e).retryAfter());

        e = Http.error(401, headers(Map.of()), body("{\"error\": \"wrong\", \"code\": \"unauthorized\"}"), "q");
        assertInstanceOf(AuthenticationException.class, e);

        e = Http.error(416, headers(Map.of()), body("not json"), "q");
        assertInstanceOf(BadRequestException.class, e);
        assertEquals("http_416", e.code());
        assertNull(e.hint());
    }

    @Test
    void queriesAreTheApisJson() {
        Query q = Query.where("origin", "EWR").eq("year", 2013).gte("time_hour", "2013-01-01T05:00:00Z")
                .lt("time_hour", "2013-01-01T09:00:00Z").columns("carrier").limit(10).pageSize(2);
        assertEquals(Map.of("where", Map.of("origin", "EWR", "year", 2013, "time_hour",
                Map.of("gte", "2013-01-01T05:00:00Z", "lt", "2013-01-01T09:00:00Z")),
                "columns", List.of("carrier"), "limit", 10, "page_size", 2, "page_token", "t"), q.body("t"));
        assertEquals(Map.of("where", Map.of("a", Map.of("eq", 1, "lt", 5))), Query.where("a", 1).lt("a", 5).body(null));
    }

    @Test
    void pathSegmentsAreEncoded() {
        assertEquals("a/b%20c/%C3%A9", Http.seg("a/b c/é", true));
        assertEquals("a%2Fb", Http.seg("a/b", false));
    }
}
