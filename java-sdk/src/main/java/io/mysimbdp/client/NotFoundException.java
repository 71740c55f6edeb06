package io.mysimbdp.client;

/** 404: no such table, row, object, job or upload (see {@link #code()}, e.g. {@code no_such_table}). */
public class NotFoundException extends MysimbdpException {
    private static final long serialVersionUID = 1L;

    public NotFoundException(String message, int status, String code, String hint) {
        super(message, status, code, hint);
    }
}
