package io.mysimbdp.client;

/** The login was refused: a wrong user name or password (401), or too many failed or concurrent logins (429). */
public class AuthenticationException extends MysimbdpException {
    private static final long serialVersionUID = 1L;
    private final Integer retryAfter;

    public AuthenticationException(String message, int status, String code, String hint, Integer retryAfter) {
        super(message, status, code, hint);
        this.retryAfter = retryAfter;
    }

    /** Seconds to wait before logging in again (from Retry-After), or null. */
    public Integer retryAfter() {
        return retryAfter;
    }
}
