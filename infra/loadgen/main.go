// Command loadgen plays many HTTP consumers for `shelfproof bench verify`: each on its own loopback
// address with one keep-alive connection (or a new connection per scan), all together sending at a fixed offered rate (open loop:
// latency counts from when a request was due). It reads a JSON spec on stdin and writes samples as
// JSON on stdout. Written in Go so that the load itself costs little of a small machine's CPU.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"time"
)

type spec struct {
	Port    int      `json:"port"`
	Paths   []string `json:"paths"`
	Rate    float64  `json:"rate"`
	Clients int      `json:"clients"`
	Seconds float64  `json:"seconds"`
	Warmup  float64  `json:"warmup"`
	// A new TCP connection for every scan, as phones opening a QR link do (no keep-alive).
	ConnectionPerScan bool `json:"connection_per_scan"`
}

type sample struct {
	latency float64
	done    float64 // seconds from the start of the measured window to the response
	status  int
	verdict string
}

func clientAddress(n int) string { return fmt.Sprintf("127.1.%d.%d", n/250, n%250+1) }

func consumer(n int, s spec, paths []string, start, measureFrom, end time.Time, out chan<- []sample, wg *sync.WaitGroup) {
	defer wg.Done()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(clientAddress(n))}, Timeout: 10 * time.Second}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext: dialer.DialContext, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1, DisableCompression: true,
			DisableKeepAlives: s.ConnectionPerScan,
		},
		Timeout: 30 * time.Second,
	}
	interval := time.Duration(float64(s.Clients) / s.Rate * float64(time.Second))
	due := start.Add(time.Duration(rand.Int63n(int64(interval))))
	var mine []sample
	for i := 0; due.Before(end); i++ {
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d%s", s.Port, paths[i%len(paths)])
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		status, verdict := 0, ""
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			status = resp.StatusCode
			if status == 200 && bytes.HasPrefix(body, []byte(`{"verdict":"`)) {
				rest := body[12:]
				if j := bytes.IndexByte(rest, '"'); j > 0 {
					verdict = string(rest[:j])
				}
			}
		}
		if !due.Before(measureFrom) {
			mine = append(mine, sample{time.Since(due).Seconds(), time.Since(measureFrom).Seconds(), status, verdict})
		}
		due = due.Add(interval)
	}
	out <- mine
}

func main() {
	var s spec
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil || s.Clients < 1 || s.Rate <= 0 || len(s.Paths) == 0 {
		fmt.Fprintln(os.Stderr, "loadgen: bad spec on stdin:", err)
		os.Exit(2)
	}
	start := time.Now().Add(time.Second)
	measureFrom := start.Add(time.Duration(s.Warmup * float64(time.Second)))
	end := measureFrom.Add(time.Duration(s.Seconds * float64(time.Second)))
	out := make(chan []sample, s.Clients)
	var wg sync.WaitGroup
	for n := 0; n < s.Clients; n++ {
		var paths []string
		for i := n; i < len(s.Paths); i += s.Clients {
			paths = append(paths, s.Paths[i])
		}
		if len(paths) == 0 {
			paths = s.Paths[:1]
		}
		wg.Add(1)
		go consumer(n, s, paths, start, measureFrom, end, out, &wg)
	}
	wg.Wait()
	close(out)
	samples := [][4]any{}
	for batch := range out {
		for _, x := range batch {
			samples = append(samples, [4]any{x.latency, x.status, x.verdict, x.done})
		}
	}
	var usage syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	cpu := float64(usage.Utime.Sec+usage.Stime.Sec) + float64(usage.Utime.Usec+usage.Stime.Usec)/1e6
	json.NewEncoder(os.Stdout).Encode(map[string]any{"samples": samples, "measured_s": s.Seconds, "cpu_s": cpu})
}
