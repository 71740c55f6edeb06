// loadgen: an MQTT QoS 1 load generator for the stream benchmarks (a compiled publisher, so that the
// load itself does not eat the CPU the platform needs on a 2-core machine).
//
// It publishes lines of a CSV file (header skipped) as "<seq>,<sent_us>,<line>" to one topic, with a
// window of messages in flight, optionally at a fixed rate, and prints one JSON line of totals.
//
// With -batch N it sends envelopes of up to N records (or what came in -linger-ms), the format of
// mysimbdp/inbox.py that mysimbdp-publish uses, and with -confirm it counts a record as acked only once
// the platform's inbox writer confirmed its envelope on confirm/<user>/<publisher id> (the window is then
// in envelopes waiting for confirmation).
package main

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
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
	batch := flag.Int("batch", 0, "records per envelope (0: one plain record per message)")
	linger := flag.Float64("linger-ms", 5, "send an envelope that is not full after this long")
	confirm := flag.Bool("confirm", false, "count records acked when the inbox writer confirms them")
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
	if *batch > 0 {
		envelopes(c, *user, *topic, lines, *start, *count, *rate, *window, *batch, *linger, *confirm)
		return
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

// envelopes: records in envelopes, each waiting for the broker's PUBACK or (-confirm) the writer's confirmation.
func envelopes(c mqtt.Client, user, topic string, lines []string, start, count int, rate float64, window, batch int, linger float64, confirm bool) {
	pub := make([]byte, 8)
	rand.Read(pub)
	id := hex.EncodeToString(pub)
	var mu sync.Mutex
	waiting := map[int]int{} // first record -> records, until confirmed
	var acked, failed int64
	slots := make(chan struct{}, window)
	if confirm {
		ready := c.Subscribe("confirm/"+user+"/"+id, 0, func(_ mqtt.Client, m mqtt.Message) {
			for _, ln := range strings.Split(string(m.Payload()), "\n") {
				f := strings.Fields(ln)
				if len(f) < 2 {
					continue
				}
				for _, first := range f[1:] {
					n, _ := strconv.Atoi(first)
					mu.Lock()
					k, ok := waiting[n]
					delete(waiting, n)
					mu.Unlock()
					if !ok {
						continue
					}
					if f[0] == "ok" {
						atomic.AddInt64(&acked, int64(k))
					} else {
						atomic.AddInt64(&failed, int64(k))
					}
					<-slots
				}
			}
		})
		ready.Wait()
	}
	var wg sync.WaitGroup
	t0 := time.Now()
	var recs []string
	first := start
	began := time.Now()
	send := func() {
		if len(recs) == 0 {
			return
		}
		sizes := make([]string, len(recs))
		for i, r := range recs {
			sizes[i] = strconv.Itoa(len(r))
		}
		payload := "MB1 " + id + " " + strconv.Itoa(first) + " " + strings.Join(sizes, ",") + "\n" + strings.Join(recs, "")
		k := len(recs)
		slots <- struct{}{}
		if confirm {
			mu.Lock()
			waiting[first] = k
			mu.Unlock()
		}
		wg.Add(1)
		tok := c.Publish(topic, 1, false, payload)
		go func(t mqtt.Token) {
			t.Wait()
			if t.Error() != nil {
				atomic.AddInt64(&failed, int64(k))
			} else if !confirm {
				atomic.AddInt64(&acked, int64(k))
				<-slots
			}
			wg.Done()
		}(tok)
		recs = recs[:0]
	}
	for i := 0; i < count; i++ {
		if rate > 0 {
			if ahead := time.Duration(float64(i+1)/rate*1e9) - time.Since(t0); ahead > 0 {
				if len(recs) > 0 && time.Since(began)+ahead > time.Duration(linger*1e6) {
					send()
				}
				time.Sleep(ahead)
			}
		}
		if len(recs) == 0 {
			first, began = start+i, time.Now()
		}
		seq := start + i
		recs = append(recs, strconv.Itoa(seq)+","+strconv.FormatInt(time.Now().UnixMicro(), 10)+","+lines[seq%len(lines)])
		if len(recs) >= batch || time.Since(began) > time.Duration(linger*1e6) {
			send()
		}
	}
	send()
	wg.Wait()
	for deadline := time.Now().Add(120 * time.Second); confirm && time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if atomic.LoadInt64(&acked)+atomic.LoadInt64(&failed) >= int64(count) {
			break
		}
	}
	t1 := time.Now()
	c.Disconnect(100)
	out, _ := json.Marshal(map[string]any{"sent": count, "acked": acked, "failed": failed,
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
