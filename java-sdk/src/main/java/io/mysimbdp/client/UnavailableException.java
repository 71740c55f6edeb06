package io.mysimbdp.client;

/** 503 (or another 5xx): a service the platform needs is down or busy; try again after {@link #retryAfter()}. */
public class UnavailableException extends MysimbdpException {
    private static final long serialVersionUID = 1L;
    private final Integer retryAfter;

    public UnavailableException(String message, int status, String code, String hint, Integer retryAfter) {
        super(message, status, code, hint);
        this.retryAfter = retryAfter;
    }

    /** Seconds the server asked to wait (Retry-After), or null. */
    public Integer retryAfter() {
        return retryAfter;
    }
}
