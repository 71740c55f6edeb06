package io.mysimbdp.client;

import java.util.Map;

/**
 * A stored binary object.
 *
 * @param key its key
 * @param size its length in bytes
 * @param contentType its media type
 * @param sha256 the SHA-256 of its bytes, hex
 * @param created when it was written (ISO 8601)
 * @param expires when it expires (ISO 8601), or null if never
 */
public record ObjectInfo(String key, long size, String contentType, String sha256, String created, String expires) {
    static ObjectInfo of(Map<String, Object> m) {
        Object size = m.get("size");
        return new ObjectInfo(Http.str(m.get("key")), size instanceof Number ? ((Number) size).longValue() : -1L,
                Http.str(m.get("content_type")), Http.str(m.get("sha256")), Http.str(m.get("created")),
                Http.str(m.get("expires")));
    }
}
