package io.mysimbdp.client;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;

/**
 * The example of README.md, compiled by the build and run by {@link PlatformIT}; {@link ReadmeTest} checks that
 * the README shows exactly the lines between the markers.
 */
final class ReadmeExample {
    private ReadmeExample() {}

    // README-BEGIN
    static long example(Path csvFile, Path exportFile) throws IOException {
        // user, password and URLs from env MYSIMBDP_USER, MYSIMBDP_PASSWORD, MYSIMBDP_*_URL
        MysimbdpClient client = MysimbdpClient.builder().build();

        // upload a file (resumable: run it again after a failure and it goes on) and wait for its receipt
        String jobId = client.upload(csvFile);
        Job job = client.waitForJob(jobId, Duration.ofMinutes(5));
        System.out.println(job.status() + ": " + job.rowsIngested() + " rows");

        // query one partition; the iteration fetches the pages by itself
        Table flights = client.table("flights");
        Query q = Query.where("origin", "EWR").eq("year", 2013).eq("month", 1).eq("day", 1)
                .gte("carrier", "UA").columns("carrier", "flight", "dep_delay").pageSize(100);
        for (Map<String, Object> row : flights.find(q)) {
            System.out.println(row);
        }

        // the whole table as CSV, streamed to a file; the row count comes from the server's end line
        try (OutputStream out = Files.newOutputStream(exportFile)) {
            return flights.export(Format.CSV, out);
        }
    }
    // README-END
}
