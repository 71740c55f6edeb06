package io.mysimbdp.client;

import java.util.List;
import java.util.Map;

/**
 * One page of a query's rows.
 *
 * @param rows the rows, column name to value (numbers, strings; timestamps as ISO 8601 strings)
 * @param nextPageToken the token for the next page with the same query, or null after the last page
 */
public record Page(List<Map<String, Object>> rows, String nextPageToken) {
    public boolean hasNext() {
        return nextPageToken != null;
    }
}
