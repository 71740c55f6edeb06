package io.mysimbdp.client;

import java.util.List;

/**
 * One page of a listing of objects.
 *
 * @param objects the objects, by key
 * @param nextPageToken the token for the next page (same prefix and page size), or null after the last
 */
public record ObjectPage(List<ObjectInfo> objects, String nextPageToken) {}
