import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A JVM tenant app for tests/test_runtimes.py: the scenario named in the first line of its input file. "identity" prints one line
 * "RESULT {json}" with who and where it runs (user, capabilities, the JVM's heap and processors, which paths it
 * may write); "heap" fills its heap; "native" takes memory outside the heap (as native code or a leak in a
 * library would) until the sandbox stops it.
 */
public final class Probe {
    public static void main(String[] args) throws Exception {
        String scenario = Files.readAllLines(Path.of(System.getenv("MYSIMBDP_INPUT_FILE"))).get(0).strip();
        switch (scenario) {
            case "identity" -> identity();
            case "heap" -> {
                List<long[]> hog = new ArrayList<>();
                while (true) {
                    hog.add(new long[1 << 20]);
                }
            }
            case "native" -> {
                Field f = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
                f.setAccessible(true);
                sun.misc.Unsafe unsafe = (sun.misc.Unsafe) f.get(null);
                for (int i = 0; i < 64; i++) { // 64 x 64 MiB, every page touched
                    long at = unsafe.allocateMemory(64L << 20);
                    unsafe.setMemory(at, 64L << 20, (byte) 1);
                    System.out.println("allocated " + ((i + 1) * 64) + " MiB outside the heap");
                }
            }
            default -> throw new IllegalArgumentException("unknown scenario " + scenario);
        }
        Files.writeString(Path.of(System.getenv("MYSIMBDP_OUTPUT_DIR"), "result.json"),
                "{\"rows_ingested\": 0, \"rows_rejected\": 0}");
    }

    static void identity() throws IOException {
        Map<String, String> status = new LinkedHashMap<>();
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            int colon = line.indexOf(':');
            if (colon > 0) {
                status.put(line.substring(0, colon), line.substring(colon + 1).strip());
            }
        }
        StringBuilder writes = new StringBuilder();
        for (String p : new String[] {"/evil", "/etc/evil", "/app/evil", "/usr/lib/evil", "/tmp/ok", "/output/ok"}) {
            String outcome;
            try {
                Files.writeString(Path.of(p), "x");
                outcome = "written";
            } catch (IOException e) {
                outcome = e.getClass().getSimpleName();
            }
            writes.append(writes.length() == 0 ? "" : ", ").append('"').append(p).append("\": \"").append(outcome)
                    .append('"');
        }
        System.out.println("RESULT {\"uid\": " + status.get("Uid").split("\\s+")[0]
                + ", \"cap_eff\": \"" + status.get("CapEff") + "\""
                + ", \"no_new_privs\": \"" + status.getOrDefault("NoNewPrivs", "") + "\""
                + ", \"max_heap_mb\": " + (Runtime.getRuntime().maxMemory() >> 20)
                + ", \"processors\": " + Runtime.getRuntime().availableProcessors()
                + ", \"writes\": {" + writes + "}}");
    }
}
