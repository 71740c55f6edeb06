package io.mysimbdp.client;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/** The README's example is the code of {@link ReadmeExample}, which the build compiles: it cannot drift. */
class ReadmeTest {
    @Test
    void readmeShowsTheCompiledExample() throws IOException {
        List<String> src = Files.readAllLines(Path.of("src/test/java/io/mysimbdp/client/ReadmeExample.java"));
        int begin = src.indexOf("    // README-BEGIN");
        int end = src.indexOf("    // README-END");
        assertTrue(begin >= 0 && end > begin, "the README markers are missing in ReadmeExample.java");
        String block = src.subList(begin + 1, end).stream()
                .map(l -> l.startsWith("    ") ? l.substring(4) : l)
                .collect(Collectors.joining("\n", "```java\n", "\n```\n"));
        String readme = Files.readString(Path.of("README.md"));
        assertTrue(readme.contains(block), "README.md must contain, exactly, the example of ReadmeExample.java:\n"
                + block);
    }
}
