package io.mysimbdp.client;

/**
 * How an upload ended.
 *
 * @param jobId the receipt's id
 * @param status {@code staged} (the file is waiting for ingestion) or {@code duplicate} (this content was
 *     received before: {@code jobId} is that earlier job)
 * @param resumedFrom how many bytes the server already had when this client started sending (0 for a new upload)
 */
public record UploadResult(String jobId, String status, long resumedFrom) {
    public boolean isDuplicate() {
        return "duplicate".equals(status);
    }
}
