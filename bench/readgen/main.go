// readgen: an HTTP load generator for the query API's point-read benchmark (compiled, so that the load
// itself takes little of the CPU that the API and Cassandra share on a 2-core machine, as wrk or a Go or
// Java service calling the API would).
//
// It reads request bodies (one JSON document a line) from -bodies, and POSTs them to -url from -c
// goroutines, each with its own kept-alive connection, every body once (the bodies are dealt out in turn).
// Every answer must be 200 and contain -expect. It prints one JSON line: seconds, requests and each
// request's latency in milliseconds.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to POST to")
	user := flag.String("user", "", "user name (HTTP Basic)")
	bodies := flag.String("bodies", "", "file of request bodies, one a line")
	conc := flag.Int("c", 1, "concurrent clients (one connection each)")
	expect := flag.String("expect", "", "text every answer must contain")
	flag.Parse()
	pass := os.Getenv("READGEN_PASSWORD")

	f, err := os.Open(*bodies)
	if err != nil {
		fail(err)
	}
	var work [][]byte
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		work = append(work, append([]byte(nil), sc.Bytes()...))
	}
	f.Close()
	if len(work) == 0 {
		fail(fmt.Errorf("no bodies in %s", *bodies))
	}

	transport := &http.Transport{MaxIdleConnsPerHost: *conc, MaxConnsPerHost: *conc, DisableCompression: true}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	send := func(body []byte) error {
		req, err := http.NewRequest("POST", *url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth(*user, pass)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		answer, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || !bytes.Contains(answer, []byte(*expect)) {
			return fmt.Errorf("answer %d: %.300s", resp.StatusCode, answer)
		}
		return nil
	}
	// each client warms its connection before the clock starts
	var warm sync.WaitGroup
	for i := 0; i < *conc; i++ {
		warm.Add(1)
		go func() { defer warm.Done(); check(send(work[0])) }()
	}
	warm.Wait()

	lat := make([][]float64, *conc)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < *conc; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := i; j < len(work); j += *conc {
				t := time.Now()
				check(send(work[j]))
				lat[i] = append(lat[i], float64(time.Since(t).Microseconds())/1000)
			}
		}(i)
	}
	wg.Wait()
	secs := time.Since(t0).Seconds()
	all := []float64{}
	for _, l := range lat {
		all = append(all, l...)
	}
	out, _ := json.Marshal(map[string]any{"seconds": secs, "requests": len(all), "latencies_ms": all})
	fmt.Println(string(out))
}

func check(err error) {
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "readgen:", err)
	os.Exit(1)
}
