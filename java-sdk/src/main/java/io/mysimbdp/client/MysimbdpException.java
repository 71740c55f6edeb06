package io.mysimbdp.client;

/**
 * The root of every error this client raises (unchecked).
 *
 * <p>It carries the HTTP status (0 when there was no answer), the server's machine-readable {@code code}
 * (e.g. {@code no_such_table}, {@code needs_index}, {@code bad_value}), its message and, when it gave one,
 * a hint saying what to do. Match on {@link #code()}, never on the message.
 */
public class MysimbdpException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String code;
    private final String hint;

    public MysimbdpException(String message, int status, String code, String hint, Throwable cause) {
        super(message, cause);
        this.status = status;
        this.code = code == null ? "" : code;
        this.hint = hint;
    }

    public MysimbdpException(String message, int status, String code, String hint) {
        this(message, status, code, hint, null);
    }

    /** The HTTP status of the answer, or 0 when the server did not answer. */
    public int status() {
        return status;
    }

    /** The server's error code ("" when it gave none). */
    public String code() {
        return code;
    }

    /** What to do about it, when the server said; otherwise null. */
    public String hint() {
        return hint;
    }

    @Override
    public String toString() {
        StringBuilder sb = new StringBuilder(getClass().getSimpleName()).append(": ");
        if (status > 0) {
            sb.append(status).append(' ');
        }
        if (!code.isEmpty()) {
            sb.append('[').append(code).append("] ");
        }
        sb.append(getMessage());
        if (hint != null && !hint.isEmpty()) {
            sb.append(" (").append(hint).append(')');
        }
        return sb.toString();
    }
}
