package io.mysimbdp.samples.airline;

import java.io.IOException;
import java.io.Reader;
import java.util.ArrayList;
import java.util.List;

/**
 * CSV records as Python's csv module reads them (the platform's record reader does the same): a quote opens a
 * quoted field only at the start of a field, where commas and line ends are data and a doubled quote is one
 * quote; anywhere else a quote is an ordinary character. Line ends are LF or CRLF. A record is returned with the
 * number of the line it ends on, for the rejects file.
 */
final class CsvRecords {
    /** One record: its fields, and the line (1-based) it ends on. */
    record Record(List<String> fields, long line) {}

    private static final int MAX_FIELD_CHARS = 1 << 20; // a field larger than this is cut (the row is refused)

    private final Reader in;
    private final char delimiter;
    private long line = 1;
    private int pushed = -2;

    CsvRecords(Reader in, char delimiter) {
        this.in = in;
        this.delimiter = delimiter;
    }

    private int read() throws IOException {
        if (pushed != -2) {
            int c = pushed;
            pushed = -2;
            return c;
        }
        return in.read();
    }

    /** The next record, or null at the end of the input. */
    Record next() throws IOException {
        int c = read();
        if (c == -1) {
            return null;
        }
        List<String> fields = new ArrayList<>();
        StringBuilder field = new StringBuilder();
        boolean quoted = false; // inside a quoted field
        boolean atStart = true; // nothing of the current field read yet
        while (true) {
            if (c == -1) {
                fields.add(field.toString());
                return new Record(fields, line);
            }
            char ch = (char) c;
            if (quoted) {
                if (ch == '"') {
                    int n = read();
                    if (n == '"') {
                        append(field, '"');
                    } else {
                        quoted = false;
                        c = n;
                        continue;
                    }
                } else {
                    if (ch == '\n') {
                        line++;
                    }
                    append(field, ch);
                }
            } else if (ch == '"' && atStart) {
                quoted = true;
                atStart = false;
            } else if (ch == delimiter) {
                fields.add(field.toString());
                field.setLength(0);
                atStart = true;
            } else if (ch == '\r' || ch == '\n') {
                if (ch == '\r') {
                    int n = read();
                    if (n != '\n') {
                        pushed = n;
                    }
                }
                fields.add(field.toString());
                Record r = new Record(fields, line);
                line++;
                return r;
            } else {
                append(field, ch);
                atStart = false;
            }
            c = read();
        }
    }

    private static void append(StringBuilder field, char ch) {
        if (field.length() < MAX_FIELD_CHARS) {
            field.append(ch);
        }
    }
}
