package io.mysimbdp.client;

/**
 * Any other 4xx: a request the caller can fix. Typical codes: {@code bad_query}, {@code bad_value},
 * {@code needs_index}, {@code bad_page_token}, {@code quota_exceeded}, {@code range_not_satisfiable},
 * {@code checksum_mismatch}, {@code unknown_column}.
 */
public class BadRequestException extends MysimbdpException {
    private static final long serialVersionUID = 1L;

    public BadRequestException(String message, int status, String code, String hint) {
        super(message, status, code, hint);
    }
}
