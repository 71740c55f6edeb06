package io.mysimbdp.client;

/** The formats of a table export. */
public enum Format {
    /** One JSON object per line. */
    NDJSON("ndjson"),
    /** A header line, then one line per row. */
    CSV("csv");

    final String wire;

    Format(String wire) {
        this.wire = wire;
    }
}
