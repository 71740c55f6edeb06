// loadgen: an MQTT QoS 1 load generator for the stream benchmarks (a compiled publisher, so that the
// load itself does not eat the CPU the platform needs on a 2-core machine).
//
// It publishes lines of a CSV file (header skipped) as "<seq>,<sent_us>,<line>" to one topic, with a
// window of messages in flight, optionally at a fixed rate, and prints one JSON line of totals.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

func main() {
	broker := flag.String("broker", "tcp://127.0.0.1:1883", "broker URL")
	user := flag.String("user", "", "user name")
	pass := flag.String("pass", "", "password (or $LOADGEN_PASSWORD)")
	topic := flag.String("topic", "", "topic")
	file := flag.String("file", "", "CSV file (its header is skipped)")
	start := flag.Int("start", 0, "first line (0 = the first data line); also the first seq")
	count := flag.Int("count", 1000, "messages to send (lines are reused if the file is shorter)")
	rate := flag.Float64("rate", 0, "messages a second (0 = as fast as the window allows)")
	window := flag.Int("window", 200, "messages in flight")
	flag.Parse()
	if *pass == "" {
		*pass = os.Getenv("LOADGEN_PASSWORD")
	}

	lines, err := readLines(*file)
	if err != nil || len(lines) == 0 {
		fmt.Fprintln(os.Stderr, "loadgen: cannot read", *file, err)
		os.Exit(2)
	}
	opts := mqtt.NewClientOptions().AddBroker(*broker).SetUsername(*user).SetPassword(*pass).
		SetClientID(fmt.Sprintf("loadgen-%d-%d", os.Getpid(), time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(false).SetMaxResumePubInFlight(*window)
	c := mqtt.NewClient(opts)
	if t := c.Connect(); t.Wait() && t.Error() != nil {
		fmt.Fprintln(os.Stderr, "loadgen: connect:", t.Error())
		os.Exit(3)
	}
	slots := make(chan struct{}, *window)
	var acked, failed int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < *count; i++ {
		if *rate > 0 {
			if ahead := time.Duration(float64(i+1)/(*rate)*1e9) - time.Since(t0); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		seq := *start + i
		payload := strconv.Itoa(seq) + "," + strconv.FormatInt(time.Now().UnixMicro(), 10) + "," + lines[(*start+i)%len(lines)]
		slots <- struct{}{}
		wg.Add(1)
		tok := c.Publish(*topic, 1, false, payload)
		go func(t mqtt.Token) {
			t.Wait()
			if t.Error() != nil {
				atomic.AddInt64(&failed, 1)
			} else {
				atomic.AddInt64(&acked, 1)
			}
			<-slots
			wg.Done()
		}(tok)
	}
	wg.Wait()
	t1 := time.Now()
	c.Disconnect(100)
	out, _ := json.Marshal(map[string]any{"sent": *count, "acked": acked, "failed": failed,
		"t0": float64(t0.UnixNano()) / 1e9, "t1": float64(t1.UnixNano()) / 1e9})
	fmt.Println(string(out))
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	first := true
	for s.Scan() {
		if first {
			first = false
			continue
		}
		if len(s.Text()) > 0 {
			out = append(out, s.Text())
		}
	}
	return out, s.Err()
}
