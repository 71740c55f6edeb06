package io.mysimbdp.client;

import java.util.Collections;
import java.util.Map;

/** A receipt of the batch API: one file, from staged to succeeded or failed. */
public final class Job {
    private final Map<String, Object> raw;

    Job(Map<String, Object> raw) {
        this.raw = Collections.unmodifiableMap(raw);
    }

    public String id() {
        return Http.str(raw.get("job_id"));
    }

    /** staged, running, retrying, succeeded or failed. */
    public String status() {
        return Http.str(raw.get("status"));
    }

    /** Whether the job is over (succeeded or failed). */
    public boolean isFinal() {
        return "succeeded".equals(status()) || "failed".equals(status());
    }

    public String fileName() {
        return Http.str(raw.get("file_name"));
    }

    /** Rows written by the tenant's app, once it ran (else null). */
    public Long rowsIngested() {
        return num(raw.get("rows_ingested"));
    }

    /** Rows the app rejected, once it ran (else null). */
    public Long rowsRejected() {
        return num(raw.get("rows_rejected"));
    }

    /** Why it failed, when it did. */
    public String reason() {
        return Http.str(raw.get("reason"));
    }

    /** Every field of the receipt, as the API sent it. */
    public Map<String, Object> raw() {
        return raw;
    }

    private static Long num(Object o) {
        return o instanceof Number ? ((Number) o).longValue() : null;
    }

    @Override
    public String toString() {
        return "Job" + raw;
    }
}
