package io.mysimbdp.client;

/** No usable answer: the connection failed or broke off, or timed out, or the answer was not what the API sends. */
public class TransportException extends MysimbdpException {
    private static final long serialVersionUID = 1L;

    public TransportException(String message, Throwable cause) {
        super(message, 0, "transport", null, cause);
    }
}
