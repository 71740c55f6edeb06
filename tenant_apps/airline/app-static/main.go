// The airline tenant's batch app as one statically linked executable (runtime "static"): one staged CSV file
// of flights into the tenant's flights table, with the same columns, key and conversions as the Python app
// (../app/flights.py), as tenant_apps/README.md says a batch app does. Build it with
//
//	CGO_ENABLED=0 go build -trimpath -ldflags=-s -o ingest-file .
//
// It exits 0 when done (rejected rows included), 75 when Cassandra is unavailable (the platform retries the
// job later), 1 when the file cannot be ingested.
package main

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gocql/gocql"
)

const (
	exitOK        = 0
	exitFailed    = 1
	exitTemporary = 75
	inFlight      = 64     // writes under way at once
	maxKeyBytes   = 65535  // Cassandra refuses a larger key value
	maxRejectRows = 100000 // rows kept in rejects.csv (the count is always complete)
	table         = "flights"
	primaryKey    = "((origin, year, month, day), carrier, flight, sched_dep_time)"
)

var columns = [][2]string{
	{"year", "int"}, {"month", "int"}, {"day", "int"}, {"dep_time", "int"}, {"sched_dep_time", "int"},
	{"dep_delay", "int"}, {"arr_time", "int"}, {"sched_arr_time", "int"}, {"arr_delay", "int"},
	{"carrier", "text"}, {"flight", "int"}, {"tailnum", "text"}, {"origin", "text"}, {"dest", "text"},
	{"air_time", "int"}, {"distance", "int"}, {"hour", "int"}, {"minute", "int"}, {"time_hour", "timestamp"},
}

var keyColumns = map[string]bool{
	"origin": true, "year": true, "month": true, "day": true, "carrier": true, "flight": true, "sched_dep_time": true,
}

var nulls = map[string]bool{"": true, "NA": true, "N/A": true, "null": true, "NULL": true}

// rejected: this record cannot be a row; the message says why.
type rejected struct{ why string }

func (r rejected) Error() string { return r.why }

// temporary: Cassandra stayed unavailable; the platform should retry the job later.
type temporary struct{ err error }

func (t temporary) Error() string { return t.err.Error() }

// how long Cassandra may stay away (the platform passes no flag; a test does)
var retryFor = flag.Duration("retry-for", 60*time.Second, "how long to wait for Cassandra before exiting 75")

func main() {
	flag.Parse()
	os.Exit(run())
}

func env(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fmt.Fprintf(os.Stderr, "the platform did not set %s\n", name)
		os.Exit(exitFailed)
	}
	return v
}

func run() int {
	t0 := time.Now()
	keyspace := env("MYSIMBDP_KEYSPACE")
	input := env("MYSIMBDP_INPUT_FILE")
	output := env("MYSIMBDP_OUTPUT_DIR")
	fileName := os.Getenv("MYSIMBDP_FILE_NAME")
	if fileName == "" {
		fileName = filepath.Base(input)
	}
	fail := func(what string, err error) int {
		writeResult(output, map[string]any{"rows_ingested": 0, "rows_rejected": 0, "error": err.Error()})
		fmt.Fprintf(os.Stderr, "%s: %s%s\n", fileName, what, oneLine(err))
		return exitFailed
	}
	session, err := connect(keyspace)
	if err == nil {
		defer session.Close()
		err = retrying(func() error { return session.Query(createCQL(keyspace)).Exec() })
	}
	var rows, rejects int64
	if err == nil {
		rows, rejects, err = ingest(session, keyspace, input, output)
	}
	var tmp temporary
	var bad rejected
	switch {
	case errors.As(err, &tmp):
		fmt.Fprintf(os.Stderr, "Cassandra unavailable, the platform will retry: %s\n", oneLine(err))
		return exitTemporary
	case errors.As(err, &bad):
		return fail("the file cannot be ingested: ", err)
	case err != nil:
		return fail("the ingestion stopped: ", err)
	}
	seconds := time.Since(t0).Seconds()
	writeResult(output, map[string]any{
		"rows_ingested": rows, "rows_rejected": rejects, "seconds": float64(int64(seconds*1000)) / 1000, "table": table,
	})
	fmt.Printf("%s: ingested %d rows into %s.%s, rejected %d, in %.2fs\n", fileName, rows, keyspace, table, rejects, seconds)
	return exitOK
}

// connect: a session on the tenant's keyspace, trying again while Cassandra does not answer (retryFor).
func connect(keyspace string) (*gocql.Session, error) {
	port, err := strconv.Atoi(env("MYSIMBDP_CASSANDRA_PORT"))
	if err != nil {
		return nil, err
	}
	hosts := strings.Split(env("MYSIMBDP_CASSANDRA_HOSTS"), ",")
	for i := range hosts {
		hosts[i] = strings.TrimSpace(hosts[i])
	}
	cluster := gocql.NewCluster(hosts...)
	cluster.Port = port
	cluster.Keyspace = keyspace
	cluster.Authenticator = gocql.PasswordAuthenticator{
		Username: env("MYSIMBDP_CASSANDRA_USERNAME"), Password: env("MYSIMBDP_CASSANDRA_PASSWORD"),
	}
	cluster.Consistency = gocql.LocalOne
	cluster.Timeout = 20 * time.Second
	cluster.ConnectTimeout = 10 * time.Second
	cluster.NumConns = 1
	// only the address the platform gave: the node's own idea of its address is not reachable from the sandbox
	cluster.DisableInitialHostLookup = true
	cluster.Events.DisableTopologyEvents = true
	cluster.Events.DisableNodeStatusEvents = true
	deadline := time.Now().Add(*retryFor)
	for pause := 500 * time.Millisecond; ; pause = backOff(pause) {
		session, err := cluster.CreateSession()
		if err == nil {
			return session, nil
		}
		if strings.Contains(err.Error(), "authentication") || strings.Contains(err.Error(), "Provided username") {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, temporary{err}
		}
		time.Sleep(pause)
	}
}

// backOff: the next pause, twice the last one, at most 5 s.
func backOff(pause time.Duration) time.Duration {
	if pause >= 2500*time.Millisecond {
		return 5 * time.Second
	}
	return pause * 2
}

// retryable: Cassandra is busy or away (not: the request itself is wrong).
func retryable(err error) bool {
	var timeout gocql.RequestErrWriteTimeout
	var unavailable *gocql.RequestErrUnavailable
	var overloaded interface{ Code() int }
	if errors.As(err, &timeout) || errors.As(err, &unavailable) || errors.Is(err, gocql.ErrNoConnections) ||
		errors.Is(err, gocql.ErrTimeoutNoResponse) || errors.Is(err, gocql.ErrConnectionClosed) {
		return true
	}
	if errors.As(err, &overloaded) && overloaded.Code() == gocql.ErrCodeOverloaded {
		return true
	}
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// retrying: do, again with back-off while Cassandra is busy or away, for at most retryFor.
func retrying(do func() error) error {
	deadline := time.Now().Add(*retryFor)
	for pause := 500 * time.Millisecond; ; pause = backOff(pause) {
		err := do()
		if err == nil || !retryable(err) {
			return err
		}
		if time.Now().After(deadline) {
			return temporary{err}
		}
		time.Sleep(pause)
	}
}

func createCQL(keyspace string) string {
	cols := make([]string, len(columns))
	for i, c := range columns {
		cols[i] = c[0] + " " + c[1]
	}
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s (%s, PRIMARY KEY %s)", keyspace, table, strings.Join(cols, ", "), primaryKey)
}

func insertCQL(keyspace string) string {
	cols := make([]string, len(columns))
	marks := make([]string, len(columns))
	for i, c := range columns {
		cols[i], marks[i] = c[0], "?"
	}
	return fmt.Sprintf("INSERT INTO %s.%s (%s) VALUES (%s)", keyspace, table, strings.Join(cols, ", "), strings.Join(marks, ", "))
}

// ingest: every record of the file into the table; rows written, rows rejected.
func ingest(session *gocql.Session, keyspace, input, output string) (int64, int64, error) {
	in, err := os.Open(input)
	if err != nil {
		return 0, 0, err
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(output, "rejects.csv"))
	if err != nil {
		return 0, 0, err
	}
	defer out.Close()
	reader := csv.NewReader(in)
	reader.FieldsPerRecord = -1 // a record of another width is a rejected row, not the end of the file
	reader.LazyQuotes = true    // a quote inside an unquoted field is a character, as for Python's csv module
	reader.ReuseRecord = false
	if strings.HasSuffix(strings.ToLower(input), ".tsv") {
		reader.Comma = '\t'
	}
	rejects := csv.NewWriter(out)
	defer rejects.Flush()
	header, err := reader.Read()
	if err == io.EOF {
		return 0, 0, rejected{"the file is empty"}
	} else if err != nil {
		return 0, 0, rejected{err.Error()}
	}
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\uFEFF")
	}
	order, err := columnOrder(header)
	if err != nil {
		return 0, 0, err
	}
	rejects.Write(append([]string{"line", "reason"}, header...))
	insert := insertCQL(keyspace)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		written  int64
		refused  int64
	)
	slots := make(chan struct{}, inFlight)
	for {
		record, err := reader.Read()
		if err == io.EOF {
			break
		}
		line, _ := reader.FieldPos(0)
		if err != nil {
			refused++
			if refused <= maxRejectRows {
				rejects.Write([]string{strconv.Itoa(line), oneLine(err)})
			}
			continue
		}
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop {
			break
		}
		values, err := convert(record, order, len(header))
		if err != nil {
			refused++
			if refused <= maxRejectRows {
				rejects.Write(append([]string{strconv.Itoa(line), err.Error()}, record...))
			}
			continue
		}
		slots <- struct{}{}
		wg.Add(1)
		go func(values []any) {
			defer wg.Done()
			defer func() { <-slots }()
			err := retrying(func() error { return session.Query(insert, values...).Exec() })
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			} else if err == nil {
				written++
			}
		}(values)
	}
	wg.Wait()
	return written, refused, firstErr
}

func columnOrder(header []string) ([]int, error) {
	positions := map[string]int{}
	for i, h := range header {
		name := strings.ToLower(strings.TrimSpace(h))
		if _, seen := positions[name]; !seen {
			positions[name] = i
		}
	}
	order := make([]int, len(columns))
	var missing []string
	for i, c := range columns {
		p, ok := positions[c[0]]
		if !ok {
			p = -1
			if keyColumns[c[0]] {
				missing = append(missing, c[0])
			}
		}
		order[i] = p
	}
	if len(missing) > 0 {
		return nil, rejected{"the header lacks the key column(s) " + strings.Join(missing, ", ")}
	}
	return order, nil
}

// convert: one record as the row's values, in the columns' order. What is wrong with a bad record is said as
// the Python app says it: a value that does not convert first (or bytes that are not UTF-8 in the same or an
// earlier column), then an empty or oversized key, then any other bytes that are not UTF-8 or an integer with "_".
func convert(record []string, order []int, width int) ([]any, error) {
	if len(record) != width {
		return nil, rejected{fmt.Sprintf("%d fields where the header has %d", len(record), width)}
	}
	values := make([]any, len(columns))
	problem, unconverted := "", false
	for i, c := range columns {
		name, typ := c[0], c[1]
		raw := ""
		if order[i] >= 0 {
			raw = record[order[i]]
		}
		if nulls[raw] {
			continue
		}
		why := ""
		if !utf8.ValidString(raw) {
			why = "column " + name + " is not valid UTF-8"
		} else if typ == "int" && strings.Contains(raw, "_") { // Python reads 5_17 as 517; a CSV does not
			why = fmt.Sprintf("column %s: '%s' is not a valid int", name, shown(raw))
		}
		var err error
		switch typ {
		case "int":
			var n int64
			n, err = strconv.ParseInt(strings.TrimSpace(raw), 10, 32)
			values[i] = int32(n)
		case "timestamp":
			values[i], err = timestamp(raw)
		default:
			values[i] = raw
		}
		if err != nil {
			unconverted = true
			if why == "" {
				why = fmt.Sprintf("column %s: '%s' is not a valid %s", name, shown(raw), typ)
			}
		}
		if why != "" && problem == "" {
			problem = why
		}
	}
	if unconverted {
		return nil, rejected{problem}
	}
	for i, c := range columns {
		if !keyColumns[c[0]] {
			continue
		}
		if values[i] == nil {
			return nil, rejected{"key column " + c[0] + " is empty"}
		}
		if text, ok := values[i].(string); ok && len(text) > maxKeyBytes {
			return nil, rejected{fmt.Sprintf("key column %s is longer than Cassandra's %d bytes", c[0], maxKeyBytes)}
		}
	}
	if problem != "" {
		return nil, rejected{problem}
	}
	return values, nil
}

func shown(raw string) string {
	if utf8.RuneCountInString(raw) > 40 {
		return string([]rune(raw)[:40])
	}
	return raw
}

// timestamp: an ISO 8601 time (UTC when it names no zone), as Python's datetime.fromisoformat reads it.
func timestamp(raw string) (time.Time, error) {
	t := strings.TrimSpace(raw)
	if len(t) > 10 && t[10] == ' ' {
		t = t[:10] + "T" + t[11:]
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02"} {
		if v, err := time.Parse(layout, t); err == nil {
			return v.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not a timestamp")
}

// writeResult: result.json, written last and whole (a temporary name, then renamed).
func writeResult(output string, result map[string]any) {
	body, _ := json.Marshal(result)
	tmp := filepath.Join(output, ".result.json.tmp")
	if err := os.WriteFile(tmp, body, 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "could not write result.json: %v\n", err)
		return
	}
	if err := os.Rename(tmp, filepath.Join(output, "result.json")); err != nil {
		fmt.Fprintf(os.Stderr, "could not write result.json: %v\n", err)
	}
}

func oneLine(err error) string {
	m := strings.NewReplacer("\n", " ", "\r", " ").Replace(err.Error())
	if len(m) > 500 {
		m = m[:500]
	}
	return m
}
