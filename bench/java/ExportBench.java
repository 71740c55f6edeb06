import io.mysimbdp.client.Format;
import io.mysimbdp.client.MysimbdpClient;

import java.io.OutputStream;

/** The Java SDK's export of one table, timed: `ExportBench <user> <password> <queryUrl> <table> ndjson|csv`. */
public class ExportBench {
    public static void main(String[] args) {
        MysimbdpClient client = MysimbdpClient.builder().user(args[0]).password(args[1]).queryUrl(args[2]).build();
        Format format = args[4].equals("csv") ? Format.CSV : Format.NDJSON;
        long t0 = System.nanoTime();
        long rows = client.table(args[3]).export(format, OutputStream.nullOutputStream());
        double seconds = (System.nanoTime() - t0) / 1e9;
        System.out.printf("%d %.3f%n", rows, seconds);
    }
}
